"""The ``[quantize]`` table: how post-training quantization is calibrated."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QuantizeConfig:
    calibration_samples: int = 500   # samples drawn from the calibration data for int8 range estimation

    def __post_init__(self) -> None:
        if self.calibration_samples < 1:
            raise ValueError("calibration_samples must be >= 1")
