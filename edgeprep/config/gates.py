"""Thresholds as data: the ``[gates]`` table of a target profile, with optional per-precision overrides.

    [gates]
    max_accuracy_drop = 0.2        # points of top-1 below the float model
    min_agreement = 0.99           # fraction of samples whose top-1 matches the float model
    [gates.int8]
    max_accuracy_drop = 1.0        # int8 artifacts may lose more

Each threshold is a goal, ``<max|min>_<metric>``, judged by one pure function of the measured value
(``edgeprep.gate.Goal``, used by verify and by the gate alike); a threshold left out is not checked. The thresholds
that compare with a stored baseline (``max_size_growth_pct``, ``max_accuracy_drop_vs_baseline``,
``max_latency_regression_pct``, ``max_instructions_regression_pct``) are applied by ``edgeprep gate``
(``edgeprep.gate``); a latency regression fails only when it is above the threshold with
``latency_confidence`` (bootstrap confidence interval of the ratio of medians).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class Thresholds:
    max_accuracy_drop: float | None = None   # percentage points of top-1 accuracy below the float model
    min_agreement: float | None = None       # fraction in [0, 1]
    min_sqnr_db: float | None = None
    max_size_bytes: int | None = None
    # against the baseline (edgeprep gate)
    max_size_growth_pct: float | None = None             # size above the baseline's, in percent
    max_accuracy_drop_vs_baseline: float | None = None   # points of top-1 below the baseline artifact
    max_latency_regression_pct: float | None = None      # median latency above the baseline's, in percent
    max_instructions_regression_pct: float | None = None  # callgrind instructions per inference, in percent

    def __post_init__(self) -> None:
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 1:
            raise ValueError(f"min_agreement is a fraction in [0, 1], got {self.min_agreement}")
        if self.max_accuracy_drop is not None and self.max_accuracy_drop < 0:
            raise ValueError("max_accuracy_drop must be >= 0 (points of accuracy)")
        if self.max_size_bytes is not None and self.max_size_bytes <= 0:
            raise ValueError("max_size_bytes must be > 0")
        for name in ("max_size_growth_pct", "max_accuracy_drop_vs_baseline", "max_latency_regression_pct",
                     "max_instructions_regression_pct"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


@dataclass(frozen=True)
class Gates(Thresholds):
    fp32: Thresholds | None = None
    fp16: Thresholds | None = None
    int8: Thresholds | None = None
    latency_confidence: float = 0.95     # confidence that a latency regression exceeds its threshold
    bootstrap_resamples: int = 2000

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.5 <= self.latency_confidence < 1:
            raise ValueError("latency_confidence must be in [0.5, 1)")
        if self.bootstrap_resamples < 100:
            raise ValueError("bootstrap_resamples must be >= 100")

    def for_precision(self, precision: str) -> Thresholds:
        """The thresholds for one precision: its own table's values over the global ones."""
        base = Thresholds(**{f.name: getattr(self, f.name) for f in fields(Thresholds)})
        override = getattr(self, precision, None)
        if override is None:
            return base
        return replace(base, **{f.name: getattr(override, f.name) for f in fields(Thresholds)
                                if getattr(override, f.name) is not None})
