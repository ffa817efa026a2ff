"""The backend protocol: what every format's converter, reader and runtime provide.

Everything edgeprep knows about one format lives behind this class, so stages, pipelines and commands never name a
format: conversion (``convert``, ``check``, ``needs_calibration``), reading artifacts back (``recognizes``,
``inspect``, ``read_graph``, ``float_compute_ops``), execution (``runtime``, ``runtimes``), per-layer error
(``layer_errors``) and the export of QAT models (``export_qat``, or ``qat_reconverts`` and ``qat_options``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeprep.artifact import PRECISIONS, ConvertRequest, ConvertResult
from edgeprep.backends.graph import FloatOp, OpGraph, OpKinds
from edgeprep.models import ModelHandle


class Backend:
    """Converts a ``ModelHandle`` into one deployment format. Subclasses set the class attributes."""

    name = ""
    suffix = ""                                  # ".tflite", ".xml", ".mlpackage"
    content = ""                                 # what its file is, in messages: "a TFLite flatbuffer"
    precisions: tuple[str, ...] = PRECISIONS
    model_kinds: tuple[str, ...] = ("keras", "savedmodel")
    options_type: type = object
    runtimes: tuple[str, ...] = ()               # the target ``runtime`` values that can execute this format
    packages: tuple[str, ...] = ()               # its toolchain, as ``edgeprep.toolchain.toolchain()`` names it
    op_kinds = OpKinds()                         # its op types by role, for the graphs ``read_graph`` returns
    measures_layer_error = False                 # per-layer error against its own fp32 artifact (layer_errors)
    all_int8_qat = False                         # QAT artifacts compute every op in int8 (float_compute_ops)
    qat_reconverts = False                       # QAT: convert the fine-tuned float model again (qat_options)
    int16_activations = False                    # edgeprep PTQ: 16-bit activations (else they stay float)
                                                 # instead of exporting the fake-quant graph (export_qat)

    def artifact_name(self, stem: str, precision: str) -> str:
        return f"{stem}.{precision}{self.suffix}"

    def needs_calibration(self, precision: str) -> bool:
        """Whether converting at ``precision`` needs calibration data (int8 does, unless a backend says not)."""
        return precision == "int8"

    def require(self, *fields: str) -> None:
        """Refuse, with one line naming the extra to install (``pip install 'edgeprep[openvino]'``), this format
        when its toolchain (``fields``, default all of ``packages``) is not installed here. Cheap: nothing is
        imported."""
        from edgeprep.toolchain import require

        require(f"the {self.name} format", *(fields or self.packages))

    def check(self, model: ModelHandle, precision: str) -> None:
        """Refuse, with one clear line, a model kind or precision this backend cannot convert, or a toolchain
        that is not installed."""
        from edgeprep.errors import ConversionError, InputError

        self.require()
        if precision not in self.precisions:
            raise InputError(f"{self.name} does not support precision '{precision}'",
                             f"choose one of {', '.join(self.precisions)}")
        if model.kind not in self.model_kinds:
            raise ConversionError(f"{self.name} conversion does not accept {model.kind} models ({model.path})",
                                  f"it accepts {', '.join(self.model_kinds)}; "
                                  + ("convert an .onnx model's graph first with edgeprep.onnx.to_keras (the CLI "
                                     "does), or use openvino, which reads .onnx files" if model.kind == "onnx" else ""))

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

    def read_graph(self, path: Path) -> OpGraph:
        """The artifact's ops in execution order, with its ``op_kinds`` (for the export-integrity scan)."""
        raise NotImplementedError

    def float_compute_ops(self, path: Path) -> list[FloatOp]:
        """The compute ops that run in float, in execution order (formats with ``all_int8_qat``)."""
        raise NotImplementedError

    def runtime(self, options: Any) -> tuple[str | None, dict, str | None]:
        """(runner name, runner options, reason it cannot run here) for executing artifacts on this host."""
        raise NotImplementedError

    def int8_io(self, options: Any) -> str:
        """The input/output type of this format's int8 artifacts."""
        return "float32"

    def layer_errors(self, quantized: Path, reference: Path | bytes, x) -> list:
        """Per-layer error (``edgeprep.backends.layer_error.LayerError``) of a quantized artifact against the fp32
        artifact of the same model (``measures_layer_error``), on the samples ``x``."""
        raise NotImplementedError

    def unmeasured_layer_errors(self, artifact) -> dict:
        """Why per-layer error is not measured here, as fields of the report's ``layer_errors`` object."""
        return {"reason": f"per-layer error is not measured for {self.name} artifacts"}

    def export_qat(self, qat, input_shape: tuple, out: Path, workdir: Path, options: Any,
                   keep: frozenset = frozenset(), quantize: bool = True) -> Path:
        """Convert the fake-quant inference graph of a QAT model (``edgeprep.qat.model.QATModel``) with batch-1
        ``input_shape`` and write the artifact at ``out`` (plus companion files); ``keep``: layers left float,
        ``quantize=False``: the float twin of the same graph. Returns ``out``."""
        from edgeprep.errors import ConversionError

        raise ConversionError(f"{self.name} artifacts are not exported from the QAT fake-quant graph",
                              "QAT converts the fine-tuned float model for this format (qat_reconverts)")

    def qat_options(self, options: Any) -> Any:
        """The options a ``qat_reconverts`` backend converts the fine-tuned float model with."""
        return options
