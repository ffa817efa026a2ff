"""OpenVINO IR conversion with ``ov.convert_model``; int8 by NNCF post-training quantization of the IR.

Keras models go through a SavedModel export (``ov.convert_model`` does not read ``.keras`` files); SavedModel
directories and ``.onnx`` files are read directly. The input is fixed to batch 1, the deployment shape.
fp32 IR keeps fp32 weights (``compress_to_fp16=False``: ``ov.save_model`` would otherwise halve them silently);
fp16 IR stores fp16 weights, which the CPU plugin decompresses and executes in its inference precision.
"""

from __future__ import annotations

from pathlib import Path

from edgeprep._util import first_line
from edgeprep.artifact import ConvertRequest, ConvertResult
from edgeprep.backends import register
from edgeprep.backends.base import Backend
from edgeprep.backends.graph import OpGraph
from edgeprep.backends.openvino.graph import OP_KINDS
from edgeprep.config.formats import OpenVINOOptions
from edgeprep.errors import ConversionError
from edgeprep.models import ModelHandle


def to_ov_model(model: ModelHandle, workdir: Path):
    """The model as an in-memory ``ov.Model`` with a static batch-1 input where the other axes are known."""
    import openvino as ov

    source = model.path if model.kind == "onnx" else model.saved_model_dir(workdir)
    shape = (1, *model.input_shape)
    kwargs = {"input": [list(shape)]} if all(d is not None for d in shape) else {}
    try:
        return ov.convert_model(str(source), **kwargs)
    except Exception as exc:
        raise ConversionError(f"OpenVINO cannot convert {model.path}: {first_line(exc)}",
                              "check the model uses ops OpenVINO supports") from None


def is_openvino_ir(path: Path) -> bool:
    import re

    path = Path(path)
    if not path.is_file() or path.is_symlink():
        return False
    with open(path, "rb") as f:
        head = f.read(1024)
    return re.match(rb"\s*(<\?xml[^>]*\?>\s*)?(<!--.*?-->\s*)*<net[\s>]", head, re.S) is not None


@register("openvino")
class OpenVINOBackend(Backend):
    suffix = ".xml"
    content = "OpenVINO IR XML"
    model_kinds = ("keras", "savedmodel", "onnx")
    options_type = OpenVINOOptions
    runtimes = ("openvino",)
    packages = ("openvino", "nncf")
    op_kinds = OP_KINDS
    measures_layer_error = True

    def convert(self, model: ModelHandle, request: ConvertRequest, out: Path) -> ConvertResult:
        import openvino as ov

        opts: OpenVINOOptions = request.options
        ov_model = to_ov_model(model, request.workdir)
        quant = {"weights": request.precision, "activations": "fp32", "io": "float32"}
        if request.precision == "int8":
            from edgeprep.backends.openvino import ptq as nncf_ptq

            ov_model, quant = nncf_ptq.quantize(ov_model, request, opts)
        ov.save_model(ov_model, str(out), compress_to_fp16=(request.precision == "fp16"))
        return ConvertResult(quant)

    def companion_files(self, path: Path) -> list[Path]:
        return [path.with_suffix(".bin")]

    def recognizes(self, path: Path) -> bool:
        """OpenVINO IR: an XML file whose root element is ``<net ...>``."""
        return is_openvino_ir(path)

    def inspect(self, path: Path) -> dict:
        self.require("openvino")
        import openvino as ov

        m = ov.Core().read_model(str(path))
        ops: dict[str, int] = {}
        for op in m.get_ops():
            ops[op.get_type_name()] = ops.get(op.get_type_name(), 0) + 1

        def port(p):
            return {"name": p.get_any_name(), "shape": [d.get_length() if d.is_static else -1
                                                        for d in p.get_partial_shape()],
                    "dtype": p.get_element_type().to_dtype().name}
        return {"inputs": [port(p) for p in m.inputs], "outputs": [port(p) for p in m.outputs], "op_counts": ops}

    def runtime(self, options: OpenVINOOptions) -> tuple[str | None, dict, str | None]:
        return "openvino", {"device": options.device, "inference_precision": options.inference_precision,
                            "performance_hint": options.performance_hint}, None

    def read_graph(self, path: Path) -> OpGraph:
        self.require("openvino")
        from edgeprep.backends.openvino.graph import read_graph

        return read_graph(path)

    def layer_errors(self, quantized: Path, reference: Path | bytes, x) -> list:
        self.require("openvino")
        from edgeprep.backends.openvino.layer_error import openvino_errors

        return openvino_errors(quantized, Path(reference), x)

    def export_qat(self, qat, input_shape: tuple, out: Path, workdir: Path, options: OpenVINOOptions,
                   keep: frozenset = frozenset(), quantize: bool = True) -> Path:
        """The fake-quant graph converted by OpenVINO: an fp32 IR with FakeQuantize nodes (and its .bin)."""
        from edgeprep.backends.openvino.qat import to_openvino

        to_openvino(qat, input_shape, Path(out), workdir, quantize=quantize, keep=keep)
        return Path(out)
