"""Converter backends: one module per deployment format behind the ``Backend`` protocol.

Registration is explicit (``@REGISTRY.register("tflite")`` in each module, each name listed below) and lazy: the
module, and its toolchain, is imported only when that format is asked for.
"""

from __future__ import annotations

from device_bench.registry import LazyRegistry
from edgeprep.backends.base import Artifact, Backend, ConvertRequest, ConvertResult
from edgeprep.errors import RuntimeUnavailable

REGISTRY: LazyRegistry[type[Backend]] = LazyRegistry("format", {
    "tflite": "edgeprep.backends.tflite",
    "openvino": "edgeprep.backends.openvino",
    "coreml": "edgeprep.backends.coreml",
}, RuntimeUnavailable)
register = REGISTRY.register
FORMATS = tuple(REGISTRY.names())


def get_backend(name: str) -> Backend:
    return REGISTRY.get(name)()


__all__ = ["Artifact", "Backend", "ConvertRequest", "ConvertResult", "FORMATS", "REGISTRY", "get_backend",
           "register"]
