"""The backend protocol: what every format's converter, reader and runtime provide."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeprep.artifact import PRECISIONS, ConvertRequest, ConvertResult
from edgeprep.models import ModelHandle


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
