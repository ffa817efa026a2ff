"""Core ML runner (macOS only): ``.mlpackage``/``.mlmodel`` executed by Core ML through coremltools' ``predict``.

This is the real thing — Core ML's own kernels on the Mac's CPU, GPU or Neural Engine — so its latency, memory and
numerics are a device measurement (compare ``coreml-ref``, which verifies numerics anywhere but times nothing).
Reach a Mac from Linux CI with the ssh transport: ``[bench] transport = "ssh"``, ``runner = "coreml"``, and a
``[bench.ssh]`` naming the Mac and a Python with numpy and coremltools (profile ``mac-coreml-ssh``).

Options: ``compute_units``: ``ALL`` (default), ``CPU_ONLY``, ``CPU_AND_GPU``, ``CPU_AND_NE``. Core ML picks its
own threads; ``threads`` is recorded, not applied. Off macOS it refuses with what to do instead.
"""

from __future__ import annotations

import sys

import numpy as np

from device_bench.runners import register
from device_bench.runners.base import ArtifactError, Runner, RunnerUnavailable, Session, TensorSpec, pad_to_batch

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
# FeatureTypes.ArrayFeatureType.ArrayDataType in Core ML's model specification
ARRAY_DTYPES = {65568: "float32", 65552: "float16", 65600: "float64", 131104: "int32", 131080: "int8"}
NOT_ON_THIS_OS = ("Core ML runs only on macOS (coremltools converts on Linux but cannot predict): benchmark on a "
                  "Mac over ssh ([bench] transport = \"ssh\", runner = \"coreml\"; "
                  "see: edgeprep targets show mac-coreml-ssh), "
                  "or check numerics here with the coreml-ref runner")


def _coremltools():
    if sys.platform != "darwin":
        raise RunnerUnavailable(NOT_ON_THIS_OS)
    try:
        import coremltools
    except ImportError:
        raise RunnerUnavailable("coremltools is not installed on this Mac (pip install coremltools numpy)") from None
    return coremltools


def _tensor(feature, where: str) -> TensorSpec:
    kind = feature.type.WhichOneof("Type")
    if kind != "multiArrayType":
        raise ArtifactError(f"{where}: feature '{feature.name}' is a {kind}; only multi-array inputs and outputs "
                            "are supported")
    arr = feature.type.multiArrayType
    dtype = ARRAY_DTYPES.get(arr.dataType)
    if dtype is None:
        raise ArtifactError(f"{where}: feature '{feature.name}' has array data type {arr.dataType}, not supported")
    return TensorSpec(feature.name, tuple(int(d) for d in arr.shape), dtype)


def io_specs(spec, where: str = "model") -> tuple[TensorSpec, TensorSpec]:
    """The single input and output of a Core ML model specification (``MLModel.get_spec()``)."""
    ins, outs = list(spec.description.input), list(spec.description.output)
    if len(ins) != 1 or len(outs) != 1:
        raise ArtifactError(f"{where}: {len(ins)} inputs and {len(outs)} outputs; one of each is supported")
    inp = _tensor(ins[0], where)
    if not inp.shape:
        raise ArtifactError(f"{where}: input '{inp.name}' has no static shape; flexible shapes are not supported")
    out = _tensor(outs[0], where)
    return inp, out


class CoreMLSession(Session):
    def __init__(self, path: str, threads: int | None, compute_units: str):
        ct = _coremltools()
        try:
            self.model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit[compute_units])
        except Exception as exc:  # coremltools raises plain Exceptions for unreadable packages
            raise ArtifactError(f"Core ML cannot load {path}: {str(exc).strip().splitlines()[0]}") from None
        self.input, self.output = io_specs(self.model.get_spec(), str(path))
        self.threads, self.compute_units, self.path, self._ct = threads, compute_units, path, ct

    @property
    def batch_size(self) -> int:
        return self.input.shape[0]

    def _infer(self, x: np.ndarray) -> np.ndarray:
        """One static batch; a short last chunk is padded with copies of its last sample and cut back."""
        x, n = pad_to_batch(x, self.input.shape[0])
        try:
            out = self.model.predict({self.input.name: x})
        except Exception as exc:
            raise ArtifactError(f"Core ML prediction failed on {self.path}: "
                                f"{str(exc).strip().splitlines()[0]}") from None
        return np.asarray(out[self.output.name])[:n]

    def describe(self) -> dict:
        import platform

        return {"runtime": "coreml", "version": self._ct.__version__, "threads": self.threads,
                "compute_units": self.compute_units, "macos": platform.mac_ver()[0],
                "threads_note": "Core ML chooses its own threads", "input": self.input.to_dict(),
                "output": self.output.to_dict()}


@register("coreml")
class CoreMLRunner(Runner):
    formats = (".mlpackage", ".mlmodel")

    def load_runtime(self) -> None:
        _coremltools()

    def open(self, path: str, threads: int | None = None, options: dict | None = None) -> Session:
        opts = dict(options or {})
        units = str(opts.pop("compute_units", "ALL")).upper()
        if opts:
            raise ValueError(f"unknown Core ML option(s): {', '.join(opts)} (known: compute_units)")
        if units not in COMPUTE_UNITS:
            raise ValueError(f"compute_units must be one of {', '.join(COMPUTE_UNITS)}, got {units!r}")
        return CoreMLSession(path, threads, units)
