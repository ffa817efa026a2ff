"""The values every stage passes along: an artifact on disk, a conversion request and its result.

Low in the house: backends, stages, reports and the gate all use these; they import nothing of edgeprep's above
the data and configuration types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprep.config.quantize import QuantizeConfig
from edgeprep.data import Dataset

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ConvertRequest:
    """Everything a backend needs besides the model. ``options`` is the backend's own options dataclass."""

    precision: str
    options: Any
    calibration: Dataset | None = None
    calibration_samples: int = 500
    workdir: Path = Path(".")
    quantize: QuantizeConfig = QuantizeConfig()   # range method etc. (calibration_samples above wins)
    keep_float: tuple[str, ...] = ()              # layers (backend node names) left in float at int8
    max_accuracy_drop: float | None = None        # the target's int8 limit, for accuracy-controlled modes


@dataclass(frozen=True)
class ConvertResult:
    """What a backend reports about a conversion: the precision of weights/activations/IO, and notes."""

    quantization: dict
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Artifact:
    """A deployable file (or directory) and what is known about it. Paths are absolute."""

    format: str
    precision: str
    path: Path
    files: tuple[Path, ...]
    size_bytes: int
    sha256: str
    quantization: dict
    inspection: dict                       # inputs, outputs, op_counts
    runtime: str | None                    # device_bench runner that executes it on this host, or None
    runtime_options: dict = field(default_factory=dict)
    unavailable_reason: str | None = None  # why it cannot be executed here, when runtime is None
    notes: tuple[str, ...] = ()
    convert_seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.format}-{self.precision}"
