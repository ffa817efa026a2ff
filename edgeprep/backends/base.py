"""The backend protocol and the artifact value every stage passes along."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprep.config.quantize import QuantizeConfig
from edgeprep.data import Dataset
from edgeprep.models import ModelHandle

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


class Backend:
    """Converts a ``ModelHandle`` into one deployment format. Subclasses set the class attributes."""

    name = ""
    suffix = ""                                  # ".tflite", ".xml", ".mlpackage"
    precisions: tuple[str, ...] = PRECISIONS
    model_kinds: tuple[str, ...] = ("keras", "savedmodel")
    options_type: type = object
    needs_calibration = True                     # int8 needs calibration data (Core ML's int8 is weights only)

    def artifact_name(self, stem: str, precision: str) -> str:
        return f"{stem}.{precision}{self.suffix}"

    def check(self, model: ModelHandle, precision: str) -> None:
        """Refuse, with one clear line, a model kind or precision this backend cannot convert."""
        from edgeprep.errors import ConversionError, InputError

        if precision not in self.precisions:
            raise InputError(f"{self.name} does not support precision '{precision}'",
                             f"choose one of {', '.join(self.precisions)}")
        if model.kind not in self.model_kinds:
            raise ConversionError(f"{self.name} conversion does not accept {model.kind} models ({model.path})",
                                  f"it accepts {', '.join(self.model_kinds)}; "
                                  + ("for .onnx models use --to openvino" if model.kind == "onnx" else ""))

    def convert(self, model: ModelHandle, request: ConvertRequest, out: Path) -> ConvertResult:
        """Write the artifact at ``out`` (a temporary path; the caller renames it when complete)."""
        raise NotImplementedError

    def companion_files(self, path: Path) -> list[Path]:
        """Files that belong to the artifact besides ``path`` itself (OpenVINO's .bin)."""
        return []

    def recognizes(self, path: Path) -> bool:
        """Whether ``path`` holds an artifact of this format, judged by its content (not its name)."""
        raise NotImplementedError

    def inspect(self, path: Path) -> dict:
        """Inputs, outputs and op counts read back from the written artifact."""
        raise NotImplementedError

    def runtime(self, options: Any) -> tuple[str | None, dict, str | None]:
        """(runner name, runner options, reason it cannot run here) for executing artifacts on this host."""
        raise NotImplementedError
