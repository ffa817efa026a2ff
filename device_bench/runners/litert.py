"""LiteRT (the successor of TensorFlow Lite) runner: ``.tflite`` files via ``ai_edge_litert``.

Options: ``xnnpack`` (default true; false uses the builtin kernels only). ``threads`` is the interpreter's (and
XNNPACK's) thread count.
"""

from __future__ import annotations

import numpy as np

from device_bench.runners import register
from device_bench.runners.base import ArtifactError, Runner, RunnerUnavailable, Session, TensorSpec


def _interpreter_module():
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        raise RunnerUnavailable("ai-edge-litert is not installed (pip install ai-edge-litert)") from None
    return interpreter


def _spec(d: dict) -> TensorSpec:
    scale, zp = d.get("quantization", (0.0, 0))
    quantized = np.issubdtype(d["dtype"], np.integer) and scale not in (0, 0.0)
    sig = d.get("shape_signature", d["shape"])
    return TensorSpec(d["name"], tuple(int(s) for s in sig), np.dtype(d["dtype"]).name,
                      float(scale) if quantized else None, int(zp) if quantized else None)


class LiteRTSession(Session):
    def __init__(self, path: str, threads: int | None, xnnpack: bool):
        mod = _interpreter_module()
        resolver = (mod.OpResolverType.AUTO if xnnpack else mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        try:
            self._it = mod.Interpreter(model_path=str(path), num_threads=threads,
                                       experimental_op_resolver_type=resolver)
            self._it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ArtifactError(f"LiteRT cannot load {path}: {str(exc).strip().splitlines()[0]}") from None
        ins, outs = self._it.get_input_details(), self._it.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise ArtifactError(f"{path}: {len(ins)} inputs and {len(outs)} outputs; one of each is supported")
        self._in, self._out = ins[0], outs[0]
        self.input, self.output = _spec(self._in), _spec(self._out)
        self._batch = int(self._in["shape"][0])
        self.threads, self.xnnpack, self.path = threads, xnnpack, path

    @property
    def batch_size(self) -> int:
        return 64 if self.input.shape[0] == -1 else int(self._in["shape"][0])

    def _infer(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] != self._batch:
            self._it.resize_tensor_input(self._in["index"], list(x.shape))
            self._it.allocate_tensors()
            self._batch = x.shape[0]
        self._it.set_tensor(self._in["index"], x)
        self._it.invoke()
        return self._it.get_tensor(self._out["index"])

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self._it._get_ops_details():
            counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
        return counts

    def describe(self) -> dict:
        from importlib import metadata

        try:
            version = metadata.version("ai-edge-litert")
        except metadata.PackageNotFoundError:
            version = "unknown"
        return {"runtime": "litert", "version": version, "threads": self.threads,
                "delegate": "xnnpack" if self.xnnpack else "none (builtin kernels)",
                "input": self.input.to_dict(), "output": self.output.to_dict()}


@register("litert")
class LiteRTRunner(Runner):
    formats = (".tflite",)

    def load_runtime(self) -> None:
        _interpreter_module()

    def open(self, path: str, threads: int | None = None, options: dict | None = None) -> Session:
        opts = dict(options or {})
        xnnpack = bool(opts.pop("xnnpack", True))
        if opts:
            raise ValueError(f"unknown LiteRT option(s): {', '.join(opts)} (known: xnnpack)")
        return LiteRTSession(path, threads, xnnpack)
