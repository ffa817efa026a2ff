"""One float pass over the calibration data: what every algorithm needs about each activation tensor.

Per range point of the fake-quant plan (the int8 tensors of the converted graph) the pass keeps the exact extremes
and a fixed-size uniform sample of the values (reservoir sampling over batches), from which range search chooses a
clip without a second pass. The float graph is the plan's own (``QATModel`` with quantization off), so the
tensors are the ones the converted model quantizes, named as its range points.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TensorStats:
    """Extremes and a uniform sample of one activation tensor over the calibration samples."""

    lo: float = float("inf")
    hi: float = float("-inf")
    seen: int = 0
    sample: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    def add(self, values: np.ndarray, keep: int, rng: np.random.Generator) -> None:
        v = np.asarray(values, np.float32).reshape(-1)
        if v.size == 0:
            return
        self.lo, self.hi = min(self.lo, float(v.min())), max(self.hi, float(v.max()))
        total = self.seen + v.size
        # keep each value with probability keep/total overall: merge the old sample and a share of the new values
        take_new = int(round(keep * v.size / total)) if total > keep else v.size
        take_old = min(self.sample.size, keep - take_new) if total > keep else self.sample.size
        new = v if take_new >= v.size else v[rng.choice(v.size, take_new, replace=False)]
        old = self.sample if take_old >= self.sample.size else \
            self.sample[rng.choice(self.sample.size, take_old, replace=False)]
        self.sample = np.concatenate([old, new])
        self.seen = total


def collect(probe, batches, keep: int = 32768, seed: int = 0) -> dict[str, TensorStats]:
    """Statistics of every range point of ``probe`` (a calibrating ``QATModel``) over ``batches`` of inputs."""
    from edgeprep.qat.model import Mode

    rng = np.random.default_rng(seed)
    stats: dict[str, TensorStats] = {}
    for x in batches:
        probe(x, Mode(quantize=False, record=True))
        for name, v in probe.recorded.items():
            stats.setdefault(name, TensorStats()).add(np.asarray(v), keep, rng)
    return stats
