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
        self._fed: np.ndarray | None = None     # the array last copied into the input tensor
        self.threads, self.xnnpack, self.path = threads, xnnpack, path

    @property
    def batch_size(self) -> int:
        return 64 if self.input.shape[0] == -1 else int(self._in["shape"][0])

    def _infer(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] != self._batch:
            self._it.resize_tensor_input(self._in["index"], list(x.shape))
            self._it.allocate_tensors()
            self._batch, self._fed = x.shape[0], None
        # copy the input in only when it is a new array, as litert-benchmark writes its input once: copying it on
        # every timed call added 2-5 % to a 0.2 ms model's median (a timing loop feeds the same array each call)
        if x is not self._fed:
            self._it.set_tensor(self._in["index"], x)
            self._fed = x
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
        out = {"runtime": "litert", "version": version, "threads": self.threads,
               "delegate": "xnnpack" if self.xnnpack else "none (builtin kernels)",
               "input": self.input.to_dict(), "output": self.output.to_dict()}
        if self.xnnpack:
            out["delegation"] = delegation(self._it._get_ops_details(), self._out["index"])
        return out

    def profile(self, fed: np.ndarray, runs: int) -> dict:
        return {"available": False, "reason": "LiteRT's Python interpreter exposes no per-op timing; "
                                              "runtime.delegation lists the ops XNNPACK did not take"}


def delegation(ops: list[dict], output: int) -> dict:
    """Which ops the delegate took, from the interpreter's node list: the model's ops followed by one ``DELEGATE``
    node per partition it replaced (whose inputs and outputs are the partition's boundary tensors). An op runs
    outside the delegate when the delegate or the model's output needs a tensor no partition produces: walking
    back from those tensors through the producing ops finds every op the builtin kernels execute."""
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    model = [o for o in ops if o["op_name"] != "DELEGATE"]
    made_by_delegate = {t for d in delegates for t in d["outputs"]}
    producer = {t: o["index"] for o in model for t in o["outputs"]}
    by_index = {o["index"]: o for o in model}
    wanted = [t for d in delegates for t in d["inputs"]] + [output]
    outside: set[int] = set()
    while wanted:
        t = wanted.pop()
        if t in made_by_delegate or t not in producer or producer[t] in outside:
            continue
        outside.add(producer[t])
        wanted.extend(by_index[producer[t]]["inputs"])
    counts: dict[str, int] = {}
    for i in sorted(outside):
        counts[by_index[i]["op_name"]] = counts.get(by_index[i]["op_name"], 0) + 1
    return {"partitions": len(delegates), "ops": len(model), "not_delegated": counts,
            "fully_delegated": not outside}


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
