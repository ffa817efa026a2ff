"""Converter backends: one module per deployment format behind the ``Backend`` protocol.

Registration is explicit (``@REGISTRY.register("tflite")`` in each module, each name listed below) and lazy: the
module, and its toolchain, is imported only when that format is asked for.
"""

from __future__ import annotations

from device_bench.registry import LazyRegistry
from edgeprep.backends.base import Backend
from edgeprep.errors import RuntimeUnavailable

REGISTRY: LazyRegistry[type[Backend]] = LazyRegistry("format", {
    "tflite": "edgeprep.backends.tflite.backend",
    "openvino": "edgeprep.backends.openvino.backend",
    "coreml": "edgeprep.backends.coreml.backend",
}, RuntimeUnavailable)
register = REGISTRY.register
FORMATS = tuple(REGISTRY.names())


def get_backend(name: str) -> Backend:
    return REGISTRY.get(name)()


__all__ = ["Backend", "FORMATS", "REGISTRY", "get_backend", "register"]
