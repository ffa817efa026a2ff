"""Thresholds as data: the ``[gates]`` table of a target profile, with optional per-precision overrides.

    [gates]
    max_accuracy_drop = 0.2        # points of top-1 below the float model
    min_agreement = 0.99           # fraction of samples whose top-1 matches the float model
    [gates.int8]
    max_accuracy_drop = 1.0        # int8 artifacts may lose more

Checks are pure functions of measured values (``edgeprep.stages.verify.check``); a threshold left out is not
checked.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class Thresholds:
    max_accuracy_drop: float | None = None   # percentage points of top-1 accuracy below the float model
    min_agreement: float | None = None       # fraction in [0, 1]
    min_sqnr_db: float | None = None
    max_size_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 1:
            raise ValueError(f"min_agreement is a fraction in [0, 1], got {self.min_agreement}")
        if self.max_accuracy_drop is not None and self.max_accuracy_drop < 0:
            raise ValueError("max_accuracy_drop must be >= 0 (points of accuracy)")
        if self.max_size_bytes is not None and self.max_size_bytes <= 0:
            raise ValueError("max_size_bytes must be > 0")


@dataclass(frozen=True)
class Gates(Thresholds):
    fp32: Thresholds | None = None
    fp16: Thresholds | None = None
    int8: Thresholds | None = None

    def for_precision(self, precision: str) -> Thresholds:
        """The thresholds for one precision: its own table's values over the global ones."""
        base = Thresholds(**{f.name: getattr(self, f.name) for f in fields(Thresholds)})
        override = getattr(self, precision, None)
        if override is None:
            return base
        return replace(base, **{f.name: getattr(override, f.name) for f in fields(Thresholds)
                                if getattr(override, f.name) is not None})
