"""The ``[calibrate]`` table: whether and how BatchNorm running statistics are re-estimated before conversion.

    [calibrate]
    enabled = true          # re-estimate every BN's moving mean/variance from the calibration data
    method = "exact"        # population statistics over all samples; "ema" = Keras-style momentum updates
    batch_size = 32
    samples = 1000          # default: every calibration sample

The thresholds decide the per-layer verdicts of the BN telemetry (see ``edgeprep.bn.telemetry``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class CalibrateConfig:
    enabled: bool = False
    method: Literal["exact", "ema"] = "exact"
    momentum: float = 0.9              # ema only: moving = momentum * moving + (1 - momentum) * batch
    batch_size: int = 32
    samples: int | None = None         # calibration samples to use (default: all)
    # Verdict thresholds. Stored statistics are "stale" when the means moved by more than stale_mean_shift channel
    # standard deviations (RMS over channels) or the scales by more than stale_scale_change (relative, RMS) ...
    stale_mean_shift: float = 0.1
    stale_scale_change: float = 0.1
    # ... and "noisy" when one batch's channel means scatter by more than noise_tolerance standard deviations.
    noise_tolerance: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.samples is not None and self.samples < 1:
            raise ValueError("samples must be >= 1")
        for name in ("stale_mean_shift", "stale_scale_change", "noise_tolerance"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
