"""The runner protocol: open an artifact, then run float32 batches through it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np


class RunnerUnavailable(RuntimeError):
    """The runtime is not installed, or cannot run here (wrong OS, missing device)."""


class ArtifactError(RuntimeError):
    """The runtime could not load or run the artifact (corrupt file, wrong input shape or dtype)."""


class UnsupportedArtifact(ArtifactError):
    """The runtime does not implement something the artifact uses (an op): its numerics stay unmeasured."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]          # as loaded; -1 marks a dynamic axis
    dtype: str                      # numpy dtype name of the tensor itself
    scale: float | None = None      # set for quantized tensors: real = scale * (q - zero_point)
    zero_point: int | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                **({"scale": self.scale, "zero_point": self.zero_point} if self.scale is not None else {})}


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Float input -> the tensor's integer dtype with its scale and zero point.

    Rounds half away from zero, as TFLite's quantize kernels do (numpy's round is half-to-even), then clamps.
    """
    info = np.iinfo(spec.dtype)
    v = x.astype(np.float32) / np.float32(spec.scale)
    q = np.sign(v) * np.floor(np.abs(v) + 0.5) + spec.zero_point
    return np.clip(q, info.min, info.max).astype(spec.dtype)


def pad_to_batch(x: np.ndarray, batch: int) -> tuple[np.ndarray, int]:
    """A short last chunk padded to a static ``batch`` with copies of its last sample, and how many were real."""
    n = len(x)
    return (np.concatenate([x, np.repeat(x[-1:], batch - n, axis=0)]) if n < batch else x), n


def dequantize(q: np.ndarray, spec: TensorSpec) -> np.ndarray:
    return ((q.astype(np.float32) - np.float32(spec.zero_point)) * np.float32(spec.scale)).astype(np.float32)


class Session:
    """A loaded artifact. Subclasses implement ``_infer`` for one batch of the session's batch size."""

    input: TensorSpec
    output: TensorSpec

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run any number of float32 samples; returns float32 outputs (dequantized if the output is integer)."""
        x = np.asarray(x, dtype=np.float32)
        want = tuple(self.input.shape[1:])
        if len(want) != x.ndim - 1 or any(w not in (-1, g) for w, g in zip(want, x.shape[1:])):
            raise ArtifactError(f"input samples have shape {x.shape[1:]} but the artifact expects "
                                f"{tuple('?' if w == -1 else w for w in want)}")
        outs = [self._run_batch(chunk) for chunk in self._chunks(x)]
        return np.concatenate(outs) if outs else np.zeros((0,), np.float32)

    def _chunks(self, x: np.ndarray) -> Iterator[np.ndarray]:
        step = self.batch_size
        for i in range(0, len(x), step):
            yield x[i:i + step]

    @property
    def batch_size(self) -> int:
        """Largest batch one call takes: 1 for static batch-1 artifacts."""
        return 1 if self.input.shape[0] != -1 else 64

    def _run_batch(self, x: np.ndarray) -> np.ndarray:
        y = np.asarray(self.invoke(self.feed(x)))
        return dequantize(y, self.output) if self.output.scale is not None else y.astype(np.float32)

    def feed(self, x: np.ndarray) -> np.ndarray:
        """One float32 batch as the artifact's input tensor (quantized or cast), ready for ``invoke``."""
        return quantize(x, self.input) if self.input.scale is not None else x.astype(self.input.dtype)

    def invoke(self, fed: np.ndarray) -> np.ndarray:
        """One inference on an already-fed batch; the raw output tensor. This is what latency measures."""
        return self._infer(fed)

    def _infer(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def last_latency_ms(self) -> float | None:
        """The runtime's own timing of the last ``invoke`` (ms), where it keeps one; None times it from outside."""
        return None

    def describe(self) -> dict:
        """What actually executed: runtime, version, threads, precision, delegate."""
        raise NotImplementedError

    def profile(self, fed: np.ndarray, runs: int) -> dict:
        """Where the time of one inference goes, per op type, from the runtime's own per-node counters (after the
        timed loop, so counting never slows the measured iterations); a runtime that keeps none says so."""
        return {"available": False, "reason": f"{type(self).__name__} keeps no per-op timing"}


class Runner:
    """Opens artifacts for one runtime. ``formats`` lists file suffixes it executes."""

    name = ""
    formats: tuple[str, ...] = ()
    # Set by runners that check numerics with an implementation of our own instead of the device's runtime (the
    # Core ML reference executor): their outputs are evidence, their speed and memory are not.
    timing_meaningless: str | None = None

    def load_runtime(self) -> None:
        """Import the runtime without loading any model (the memory baseline a benchmark subtracts)."""

    def files(self, path: str) -> list[str]:
        """The files that make up an artifact on disk: the file itself, or every file of a directory artifact (a
        Core ML package). OpenVINO overrides it: the .xml and its .bin."""
        root = Path(path)
        return sorted(str(p) for p in root.rglob("*") if p.is_file()) if root.is_dir() else [path]

    def open(self, path: str, threads: int | None = None, options: dict | None = None) -> Session:
        raise NotImplementedError


def summarize_profile(nodes: list[dict], source: str, runs: int, top: int = 15) -> dict:
    """A profile from per-node times (``node``, ``type``, ``ms`` per inference): the share of each op type and the
    ``top`` slowest nodes, in milliseconds per inference."""
    total = sum(n["ms"] for n in nodes)
    by_type: dict[str, dict] = {}
    for n in nodes:
        t = by_type.setdefault(n["type"], {"type": n["type"], "count": 0, "ms": 0.0})
        t["count"] += 1
        t["ms"] += n["ms"]
    types = sorted(by_type.values(), key=lambda t: -t["ms"])
    for t in types:
        t["ms"] = round(t["ms"], 5)
        t["share"] = round(t["ms"] / total, 4) if total else 0.0
    slowest = sorted(nodes, key=lambda n: -n["ms"])[:top]
    return {"available": True, "source": source, "runs": runs, "total_ms": round(total, 5), "by_type": types,
            "slowest": [{**n, "ms": round(n["ms"], 5)} for n in slowest]}

