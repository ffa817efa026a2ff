"""Runtimes that execute an artifact: one module per runtime, one explicit registry, lazy imports.

A runner module defines a class decorated with ``@REGISTRY.register("<name>")``; ``open_model`` imports the
module only when that runtime is asked for, so a device needs only the runtime it uses.
"""

from __future__ import annotations

from device_bench.registry import LazyRegistry
from device_bench.runners.base import ArtifactError, Runner, RunnerUnavailable, Session, TensorSpec

# name -> module that registers it. Adding a runtime is one file plus one line here.
REGISTRY: LazyRegistry[type[Runner]] = LazyRegistry("runtime", {
    "litert": "device_bench.runners.litert",
    "openvino": "device_bench.runners.openvino",
    "onnxruntime": "device_bench.runners.onnxruntime",
    "coreml-ref": "device_bench.runners.coreml_ref",
    "coreml": "device_bench.runners.coreml",
}, RunnerUnavailable)
register = REGISTRY.register


def names() -> list[str]:
    return REGISTRY.names()


def get_runner(name: str) -> type[Runner]:
    return REGISTRY.get(name)


def open_model(runtime: str, path: str, threads: int | None = None, options: dict | None = None) -> Session:
    """Load ``path`` with ``runtime`` and return a session ready to run float32 batches."""
    return get_runner(runtime)().open(path, threads=threads, options=dict(options or {}))


__all__ = ["Runner", "Session", "TensorSpec", "RunnerUnavailable", "ArtifactError", "register", "get_runner",
           "open_model", "names", "REGISTRY"]
