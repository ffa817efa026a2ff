"""ONNX Runtime runner (CPU execution provider) for ``.onnx`` files."""

from __future__ import annotations

import numpy as np

from device_bench.runners import register
from device_bench.runners.base import ArtifactError, Runner, RunnerUnavailable, Session, TensorSpec

_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8",
           "tensor(uint8)": "uint8", "tensor(int64)": "int64", "tensor(int32)": "int32"}


class ORTSession(Session):
    def __init__(self, path: str, threads: int | None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise RunnerUnavailable("onnxruntime is not installed (pip install onnxruntime)") from None
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        try:
            self._sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ArtifactError(f"ONNX Runtime cannot load {path}: {str(exc).strip().splitlines()[0]}") from None
        ins, outs = self._sess.get_inputs(), self._sess.get_outputs()
        if len(ins) != 1 or len(outs) != 1:
            raise ArtifactError(f"{path}: {len(ins)} inputs and {len(outs)} outputs; one of each is supported")

        def shape(s):
            return tuple(d if isinstance(d, int) else -1 for d in s)

        self.input = TensorSpec(ins[0].name, shape(ins[0].shape), _DTYPES.get(ins[0].type, ins[0].type))
        self.output = TensorSpec(outs[0].name, shape(outs[0].shape), _DTYPES.get(outs[0].type, outs[0].type))
        self.threads, self.version = threads, ort.__version__

    def _infer(self, x: np.ndarray) -> np.ndarray:
        return self._sess.run(None, {self.input.name: x})[0]

    def describe(self) -> dict:
        return {"runtime": "onnxruntime", "version": self.version, "threads": self.threads,
                "provider": "CPUExecutionProvider", "input": self.input.to_dict(), "output": self.output.to_dict()}


@register("onnxruntime")
class ORTRunner(Runner):
    formats = (".onnx",)

    def load_runtime(self) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise RunnerUnavailable("onnxruntime is not installed (pip install onnxruntime)") from None

    def open(self, path: str, threads: int | None = None, options: dict | None = None) -> Session:
        if options:
            raise ValueError(f"unknown ONNX Runtime option(s): {', '.join(options)}")
        return ORTSession(path, threads)
