"""LiteRT (the successor of TensorFlow Lite) runner: ``.tflite`` files via ``ai_edge_litert``.

Options: ``xnnpack`` (default true; false uses the builtin kernels only); ``api``: ``"interpreter"`` (default, the
``Interpreter`` API most apps use) or ``"compiled"`` (LiteRT's ``CompiledModel`` API with its CPU accelerator, what
``litert-benchmark`` runs). ``threads`` is the runtime's (and XNNPACK's) thread count. The two APIs run the same
XNNPACK kernels but not the same thread pool: timed alone at 2 threads on a 2-vCPU machine, a 0.03 ms model took
0.046 ms under the Interpreter and 0.026 ms under CompiledModel (equal at 1 thread).
"""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

from device_bench.runners import register
from device_bench.runners.base import ArtifactError, Runner, RunnerUnavailable, Session, TensorSpec, pad_to_batch


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


def _compiled_modules():
    try:
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.environment import Environment, EnvironmentOptions
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator
        from ai_edge_litert.options import CpuOptions, Options
    except ImportError:
        raise RunnerUnavailable("this ai-edge-litert has no CompiledModel API (api = \"compiled\"): upgrade it, "
                                "or use api = \"interpreter\"") from None
    return CompiledModel, Environment, EnvironmentOptions, HardwareAccelerator, CpuOptions, Options


@contextlib.contextmanager
def _native_stderr_silenced():
    """File descriptor 2 to /dev/null while LiteRT's environment and CompiledModel load: its C++ logger prints a
    dozen INFO/WARNING lines (accelerator registry, vendor plugins it cannot load) that no option turns off from
    Python. Errors still raise, with their message."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class LiteRTCompiledSession(Session):
    """LiteRT's ``CompiledModel`` API on its CPU accelerator (XNNPACK). The tensor specs (quantization) and the
    delegation report come from an ``Interpreter`` opened once at load; the model then runs through CompiledModel
    only. The batch is the model's static one (a short chunk is padded)."""

    def __init__(self, path: str, threads: int | None):
        probe = LiteRTSession(path, threads, True)         # validates the file, one input and one output
        self.input, self.output = probe.input, probe.output
        self._delegation = delegation(probe._it._get_ops_details(), probe._out["index"])
        del probe
        compiled, environment, env_options, accelerator, cpu_options, options = _compiled_modules()
        cpu = cpu_options(num_threads=threads) if threads else cpu_options()
        try:
            with _native_stderr_silenced():
                self._env = environment.create(options=env_options())     # kept alive as long as the model
                self._m = compiled.from_file(str(path), environment=self._env, options=options(
                    hardware_accelerators=accelerator(accelerator.CPU), cpu_options=cpu))
        except Exception as exc:    # the wrapper raises RuntimeError or its own status errors
            raise ArtifactError(f"LiteRT CompiledModel cannot load {path}: {str(exc).strip().splitlines()[0]}") \
                from None
        self._sig = next(iter(self._m.get_signature_list()), "serving_default")
        (self._in_name, d_in), = self._m.get_input_tensor_details(self._sig).items()
        (self._out_name, d_out), = self._m.get_output_tensor_details(self._sig).items()
        with _native_stderr_silenced():       # each buffer logs the environment it is created in
            self._inputs = {self._in_name: self._m.create_input_buffer_by_name(self._sig, self._in_name)}
            self._outputs = {self._out_name: self._m.create_output_buffer_by_name(self._sig, self._out_name)}
        self._out_shape = tuple(int(v) for v in d_out["shape"])
        self._out_dtype = np.dtype(d_out["dtype"])
        self._batch = int(d_in["shape"][0])
        self._fed: np.ndarray | None = None
        self._first = True
        self.threads, self.path = threads, path

    def __del__(self):
        try:      # its accelerators log their destruction too
            with _native_stderr_silenced():
                self._m.close()
                del self._inputs, self._outputs, self._m, self._env
        except Exception:      # noqa: BLE001 - interpreter shutdown: nothing left to tidy
            pass

    @property
    def batch_size(self) -> int:
        return self._batch

    def _infer(self, x: np.ndarray) -> np.ndarray:
        if self._first:     # the first call creates another environment, which logs as the first did
            self._first = False
            with _native_stderr_silenced():
                return self._infer(x)
        n = x.shape[0]
        if n != self._batch:
            x, n = pad_to_batch(x, self._batch)
        if x is not self._fed:      # as the Interpreter session: a timing loop feeds the same array each call
            self._inputs[self._in_name].write(np.ascontiguousarray(x))
            self._fed = x
        self._m.run_by_name(self._sig, self._inputs, self._outputs)
        out = np.asarray(self._outputs[self._out_name].read(int(np.prod(self._out_shape)), self._out_dtype))
        return out.reshape(self._out_shape)[:n]

    def describe(self) -> dict:
        from importlib import metadata

        try:
            version = metadata.version("ai-edge-litert")
        except metadata.PackageNotFoundError:
            version = "unknown"
        return {"runtime": "litert", "api": "compiled", "version": version, "threads": self.threads,
                "delegate": "xnnpack (CompiledModel CPU accelerator)",
                "fully_accelerated": bool(self._m.is_fully_accelerated()),
                "input": self.input.to_dict(), "output": self.output.to_dict(),
                # XNNPACK's partitioning of the same graph, read through the Interpreter at load
                "delegation": self._delegation}

    def profile(self, fed: np.ndarray, runs: int) -> dict:
        return {"available": False, "reason": "LiteRT's Python CompiledModel exposes no per-op timing; "
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
        api = opts.pop("api", "interpreter")
        if opts:
            raise ValueError(f"unknown LiteRT option(s): {', '.join(opts)} (known: xnnpack, api)")
        if api not in ("interpreter", "compiled"):
            raise ValueError(f"LiteRT api must be \"interpreter\" or \"compiled\", got {api!r}")
        if api == "compiled":
            if not xnnpack:
                raise ValueError("LiteRT api = \"compiled\" runs on its CPU accelerator (XNNPACK): the builtin "
                                 "kernels alone (xnnpack = false) need api = \"interpreter\"")
            return LiteRTCompiledSession(path, threads)
        return LiteRTSession(path, threads, xnnpack)
