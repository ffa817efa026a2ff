"""Run the ``main`` function of an ML Program with numpy, op by op, in program order.

``Program(path)`` reads the package, checks every op has an implementation (else ``UnsupportedOp`` naming it),
evaluates constants and weight decompression once, and keeps the remaining ops as steps. ``run(feeds)`` executes
them; every result is rounded to the type the program declares for it, so an fp16 program carries fp16 values
from op to op exactly as a device's fp16 path stores them, and an fp32 program carries fp32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from device_bench.mil.dtypes import FLOATS, STORAGE, held, round_to
from device_bench.mil.errors import ExecutionError, SpecError, UnsupportedOp
from device_bench.mil.ops import OpImpl, Unsupported, registry
from device_bench.mil.spec import ModelSpec, OpSpec, Ref, TensorType, read_spec


@dataclass(frozen=True)
class Step:
    op: OpSpec
    impl: OpImpl
    args: tuple[tuple[str, bool, tuple], ...]      # (parameter, is_tuple, bindings: Ref(var) or values)


def _check_shape(op: OpSpec, name: str, value: np.ndarray, t: TensorType | None) -> None:
    if t is None or t.shape is None:
        return
    if len(t.shape) != value.ndim or any(d is not None and d != g for d, g in zip(t.shape, value.shape)):
        raise UnsupportedOp(op.type, f"'{name}': the executor computed shape {list(value.shape)} where the program "
                                     f"declares {t.describe()}")


_BLAS = None


def _blas_limit(threads: int | None):
    """A context limiting BLAS threads (via threadpoolctl, when installed), else a no-op context."""
    global _BLAS
    if threads is None:
        return contextlib.nullcontext()
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS = ThreadpoolController()
        except ImportError:
            _BLAS = False
    return _BLAS.limit(limits=threads, user_api="blas") if _BLAS else contextlib.nullcontext()


class Program:
    """A loaded ML Program: ``run({input_name: array})`` -> ``{output_name: array}``.

    ``blas_threads`` (default 1) caps the BLAS threads of conv and matmul during ``run`` when threadpoolctl is
    installed: a fixed summation order makes results reproducible, and batch-1 edge models are too small to gain
    from threads (measured on the 2-core machine under load: the classifier's matrix-vector product took 5 ms
    with OpenBLAS's two threads and 0.1-0.2 ms with one). ``None`` leaves BLAS as it is.
    """

    def __init__(self, path: str | Path, function: str | None = None, blas_threads: int | None = 1):
        self.path = Path(path)
        self.blas_threads = blas_threads
        self.spec: ModelSpec = read_spec(self.path, function)
        impls = registry()
        self._check_ops(impls)
        self.consts: dict[str, Any] = {}
        self.steps: list[Step] = []
        self.op_counts: dict[str, int] = {}
        for op in self.spec.ops:
            self.op_counts[op.type] = self.op_counts.get(op.type, 0) + 1
            if op.type == "const":
                if "val" not in op.attributes:
                    raise SpecError(f"const '{op.name}' has no value")
                val = op.attributes["val"]
                self.consts[op.outputs[0][0]] = held(val) if isinstance(val, np.ndarray) else val
                continue
            step = self._step(op, impls[op.type])
            if op.type.startswith("constexpr_") or all(
                    not isinstance(b, Ref) or b in self.consts
                    for _, _, binds in step.args for b in binds):
                self._execute(step, self.consts)          # constants and decompression: evaluated once
            else:
                self.steps.append(step)
        self.inputs = [(n, t) for n, t in self.spec.function_inputs]
        self.outputs = list(self.spec.block_outputs)
        self.precision = self._precision()
        self._last_use = self._liveness()

    # -- loading --------------------------------------------------------------------------------------------
    def _check_ops(self, impls: dict[str, OpImpl]) -> None:
        missing = sorted({op.type for op in self.spec.ops if op.type != "const" and op.type not in impls})
        if missing:
            raise UnsupportedOp(missing[0], "not implemented by the reference executor"
                                + (f"; also {', '.join(missing[1:])}" if len(missing) > 1 else ""))
        for op in self.spec.ops:
            if op.has_blocks:
                raise UnsupportedOp(op.type, "ops with nested blocks (control flow) are not supported")
            if op.type == "const":
                continue
            extra = sorted((set(op.inputs) | set(op.attributes)) - impls[op.type].params)
            if extra:
                raise UnsupportedOp(op.type, f"parameter(s) {', '.join(extra)} not implemented")

    def _step(self, op: OpSpec, impl: OpImpl) -> Step:
        params = {**{k: [v] for k, v in op.attributes.items()}, **op.inputs}
        args = tuple((p, p in impl.tuples, tuple(b)) for p, b in params.items())
        return Step(op, impl, args)

    def _precision(self) -> str:
        """The float type the ops compute in: 'fp16', 'fp32' or 'mixed' (declared output types; the casts at the
        program's edges that fp16 programs with fp32 inputs and outputs have are not computation)."""
        kinds = {t.dtype for s in self.steps if s.op.type not in ("cast", "identity")
                 for _, t in s.op.outputs if t is not None and t.dtype in FLOATS}
        kinds.discard("float64")
        return {frozenset({"float16"}): "fp16", frozenset({"float32"}): "fp32"}.get(frozenset(kinds), "mixed")

    def _liveness(self) -> dict[str, int]:
        last: dict[str, int] = {}
        for i, step in enumerate(self.steps):
            for _, _, binds in step.args:
                for b in binds:
                    if isinstance(b, Ref) and b not in self.consts:
                        last[b] = i
        for name in self.outputs:
            last[name] = len(self.steps)
        return last

    # -- execution ------------------------------------------------------------------------------------------
    def _execute(self, step: Step, env: dict) -> None:
        op = step.op
        kwargs = {}
        for param, is_tuple, binds in step.args:
            try:
                vals = [env[b] if isinstance(b, Ref) else (held(b) if isinstance(b, np.ndarray) else b)
                        for b in binds]
            except KeyError as exc:
                raise SpecError(f"op {op.type} '{op.name}' reads {exc.args[0]}, which is not defined before "
                                "it") from None
            kwargs[param] = vals if is_tuple or len(vals) != 1 else vals[0]
        if step.impl.wants_out:
            kwargs["_out"] = [t for _, t in op.outputs]
        try:
            result = step.impl.fn(**kwargs)
        except Unsupported as exc:
            raise UnsupportedOp(op.type, str(exc)) from None
        except UnsupportedOp:
            raise
        except Exception as exc:
            raise ExecutionError(f"op {op.type} '{op.name}' failed: {exc}") from None
        results = result if isinstance(result, tuple) else (result,)
        if len(results) != len(op.outputs):
            raise UnsupportedOp(op.type, f"{len(results)} results for {len(op.outputs)} declared outputs")
        for (name, t), value in zip(op.outputs, results):
            value = np.asarray(value)
            if t is not None and t.dtype in STORAGE:
                value = round_to(value, t.dtype)
            _check_shape(op, name, value, t)
            env[name] = value

    def run(self, feeds: dict[str, np.ndarray], keep: bool | Iterable[str] = False) -> dict[str, np.ndarray]:
        """Outputs for one set of inputs. ``keep=True`` also returns every intermediate value by MIL variable
        name (``keep=[names]``: those only); float values come back as float32 holding the declared precision."""
        with _blas_limit(self.blas_threads):
            return self._run(feeds, keep)

    def _run(self, feeds: dict[str, np.ndarray], keep: bool | Iterable[str]) -> dict[str, np.ndarray]:
        env = dict(self.consts)
        for name, t in self.inputs:
            if name not in feeds:
                raise ExecutionError(f"missing input '{name}'")
            x = np.asarray(feeds[name])
            if t is not None and t.shape is not None and (
                    x.ndim != len(t.shape) or any(d is not None and d != g for d, g in zip(t.shape, x.shape))):
                raise ExecutionError(f"input '{name}' has shape {list(x.shape)}; the program expects "
                                     f"{t.describe()}")
            env[name] = round_to(x, t.dtype) if t is not None else x
        wanted = None if keep is True else set(keep or ())
        kept: dict[str, np.ndarray] = {}
        for i, step in enumerate(self.steps):
            self._execute(step, env)
            if keep is True or wanted:
                kept.update({n: env[n] for n, _ in step.op.outputs if keep is True or n in wanted})
            if keep is not True:
                for _, _, binds in step.args:
                    for b in binds:
                        if isinstance(b, Ref) and self._last_use.get(b) == i:
                            env.pop(b, None)
        out = {}
        for name in self.outputs:
            if name not in env:
                raise SpecError(f"the program output '{name}' is never computed")
            out[name] = env[name]
        if keep is True:
            kept.update({k: v for k, v in self.consts.items() if isinstance(v, np.ndarray)})
        elif wanted:
            kept.update({k: self.consts[k] for k in wanted & set(self.consts)})
        return {**kept, **out}

    def variables(self) -> list[tuple[str, str, TensorType | None]]:
        """(MIL variable name, op type, declared type) of every op output executed per inference, in order."""
        return [(n, s.op.type, t) for s in self.steps for n, t in s.op.outputs]

    def describe(self) -> dict:
        return {"spec_version": self.spec.spec_version, "opset": self.spec.opset, "precision": self.precision,
                "ops": len(self.spec.ops), "executed_ops": len(self.steps), "op_counts": dict(sorted(
                    self.op_counts.items()))}
