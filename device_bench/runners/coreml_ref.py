"""Core ML reference runner: ``.mlpackage`` ML Programs executed by ``device_bench.mil`` (numpy), on any OS.

This is not Core ML: it is edgeprep's reference executor, which computes what the ML Program specifies (with
fp16 rounding between ops for fp16 programs) so Core ML artifacts can be verified where Core ML cannot run.
``describe()`` says so in every report. No options.
"""

from __future__ import annotations

import numpy as np

from device_bench import __version__
from device_bench.runners import register
from device_bench.runners.base import ArtifactError, Runner, Session, TensorSpec, UnsupportedArtifact, pad_to_batch

NOT_MODELLED = ("accumulation order/precision inside conv and matmul (float32 BLAS here), device kernel "
                "approximations, Core ML compiler fusions, compute-unit placement (CPU/GPU/Neural Engine)")


class ReferenceSession(Session):
    def __init__(self, path: str, threads: int | None):
        from device_bench.mil import MILError, Program, UnsupportedOp

        try:
            self.program = Program(path)
        except UnsupportedOp as exc:
            raise UnsupportedArtifact(f"{exc}") from None
        except (MILError, OSError) as exc:
            raise ArtifactError(f"cannot read {path}: {exc}") from None
        ins, outs = self.program.inputs, self.program.outputs
        if len(ins) != 1 or len(outs) != 1:
            raise ArtifactError(f"{path}: {len(ins)} inputs and {len(outs)} outputs; one of each is supported")
        name, t = ins[0]
        if t is None or t.shape is None or None in t.shape:
            raise ArtifactError(f"{path}: input '{name}' has no static shape; flexible shapes are not supported")
        declared = {f.name: f for f in self.program.spec.outputs}
        out = declared.get(outs[0])
        self.input = TensorSpec(name, tuple(t.shape), "float16" if t.dtype == "float16" else "float32")
        self.output = TensorSpec(outs[0], tuple(out.shape) if out else (), out.dtype if out else "float32")
        if t.shape[0] > 1 and (not self.output.shape or self.output.shape[0] != t.shape[0]):
            raise ArtifactError(f"{path}: the input batch is {t.shape[0]} but the output's first axis is not the "
                                "batch; only batch-1 models or models with a leading batch axis are supported")
        self.threads, self.path = threads, path
        self._run_errors = (MILError,)

    @property
    def batch_size(self) -> int:
        return self.input.shape[0]

    def _infer(self, x: np.ndarray) -> np.ndarray:
        """One static batch; a short last chunk is padded with copies of its last sample and cut back."""
        from device_bench.mil import UnsupportedOp

        x, n = pad_to_batch(x, self.input.shape[0])
        try:
            return self.program.run({self.input.name: x})[self.output.name][:n]
        except UnsupportedOp as exc:
            raise UnsupportedArtifact(f"{exc}") from None
        except self._run_errors as exc:
            raise ArtifactError(f"{self.path}: {exc}") from None

    def describe(self) -> dict:
        d = self.program.describe()
        return {"runtime": "coreml-ref", "version": __version__, "threads": self.threads,
                "reference_executor": True,
                "executor": "edgeprep reference executor for ML Programs (numpy), not Core ML",
                "precision": d["precision"], "blas_threads": self.program.blas_threads,
                "models": ("each op computed in float32 (float64 for transcendental functions and statistics), "
                           "its result rounded to the declared type: fp16 programs keep fp16 values between ops"),
                "not_modelled": NOT_MODELLED, "spec_version": d["spec_version"], "opset": d["opset"],
                "input": self.input.to_dict(), "output": self.output.to_dict()}


@register("coreml-ref")
class ReferenceRunner(Runner):
    formats = (".mlpackage",)
    timing_meaningless = ("it runs on edgeprep's numpy reference executor, which verifies Core ML numerics but "
                          "says nothing about Core ML speed or memory on a device; benchmark on a Mac")

    def load_runtime(self) -> None:
        import device_bench.mil  # noqa: F401  (numpy only)

    def open(self, path: str, threads: int | None = None, options: dict | None = None) -> Session:
        if options:
            raise ValueError(f"unknown Core ML reference runner option(s): {', '.join(options)} (it has none)")
        return ReferenceSession(path, threads)
