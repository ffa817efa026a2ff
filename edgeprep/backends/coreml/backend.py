"""Core ML conversion to an ML Program (``.mlpackage``) with coremltools; int8 = 8-bit weights (W8A16).

coremltools converts Keras 3 Functional models and single-signature concrete functions, not Sequential objects or
``.keras`` paths: Functional models go in directly, anything else through a concrete function of the model.
On Linux coremltools converts and compresses but cannot execute a model (prediction is macOS-only); the
artifacts are executed by edgeprep's reference executor for ML Programs (``device_bench.mil``) instead.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

from edgeprep._util import first_line
from edgeprep.artifact import ConvertRequest, ConvertResult
from edgeprep.backends import register
from edgeprep.backends.base import Backend
from edgeprep.backends.coreml.graph import OP_KINDS
from edgeprep.backends.graph import OpGraph
from edgeprep.config.formats import CoreMLOptions
from edgeprep.errors import ConversionError
from edgeprep.models import ModelHandle


def _source(model: ModelHandle, input_name: str):
    """What to hand ``ct.convert``: the Functional model, a concrete function, or the SavedModel path."""
    if model.kind == "savedmodel":
        return str(model.path)
    import keras
    import tensorflow as tf
    from keras.src.models.functional import Functional

    if isinstance(model.obj, Functional) and not isinstance(model.obj, keras.Sequential):
        return model.obj
    spec = tf.TensorSpec((1, *model.input_shape), tf.float32, name=input_name)
    return [tf.function(lambda x: model.obj(x, training=False)).get_concrete_function(spec)]


def is_mlpackage(path: Path) -> bool:
    import json

    manifest = Path(path) / "Manifest.json"
    if Path(path).is_symlink() or not manifest.is_file():
        return False
    try:
        return "itemInfoEntries" in json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False


@register("coreml")
class CoreMLBackend(Backend):
    suffix = ".mlpackage"
    content = "a Core ML package"
    options_type = CoreMLOptions
    runtimes = ("coreml",)
    packages = ("coremltools",)
    op_kinds = OP_KINDS
    qat_reconverts = True     # QAT: the fine-tuned float model with linear 8-bit weights (the grid QAT trained on)

    def needs_calibration(self, precision: str) -> bool:
        """Never: Core ML's int8 is weights only (8-bit activations, where they can be applied, are optional)."""
        return False

    def recognizes(self, path: Path) -> bool:
        """A Core ML package: a directory whose Manifest.json lists its items (``itemInfoEntries``)."""
        return is_mlpackage(path)

    def convert(self, model: ModelHandle, request: ConvertRequest, out: Path) -> ConvertResult:
        import coremltools as ct

        opts: CoreMLOptions = request.options
        name = "".join(c if c.isalnum() or c == "_" else "_" for c in model.input_name) or "input"
        fp16 = request.precision in ("fp16", "int8")
        try:
            mlmodel = ct.convert(
                _source(model, name), source="tensorflow", convert_to="mlprogram",
                inputs=[ct.TensorType(name=name, shape=(1, *model.input_shape))],
                compute_precision=ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32,
                minimum_deployment_target=getattr(ct.target, opts.minimum_deployment_target),
                compute_units=getattr(ct.ComputeUnit, opts.compute_units),
            )
        except Exception as exc:
            raise ConversionError(f"Core ML conversion failed: {first_line(exc)}",
                                  "coremltools is tested with TensorFlow 2.12; ops it cannot map need a model "
                                  "change") from None
        quant = {"weights": "fp16" if fp16 else "fp32", "activations": "fp16" if fp16 else "fp32",
                 "io": "float32"}
        notes: list[str] = []
        if request.precision == "int8":
            from edgeprep.backends.coreml import ptq as coreml_ptq

            mlmodel, quant, notes = coreml_ptq.compress(mlmodel, request, opts)
        mlmodel.save(str(out))
        return ConvertResult(quant, tuple(notes))

    def inspect(self, path: Path) -> dict:
        self.require("coremltools")
        import coremltools as ct

        spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()

        def feature(f):
            arr = f.type.multiArrayType
            dtype = {65568: "float32", 65552: "float16", 131104: "int32"}.get(arr.dataType, str(arr.dataType))
            return {"name": f.name, "shape": list(arr.shape), "dtype": dtype}
        ops: Counter = Counter()
        for fn in spec.mlProgram.functions.values():
            for block in fn.block_specializations.values():
                ops.update(op.type for op in block.operations)
        return {"inputs": [feature(f) for f in spec.description.input],
                "outputs": [feature(f) for f in spec.description.output],
                "op_counts": dict(sorted(ops.items())), "spec_version": spec.specificationVersion}

    def runtime(self, options: CoreMLOptions) -> tuple[str | None, dict, str | None]:
        """Core ML itself runs only on macOS (coremltools' prediction); device_bench has no native Core ML runner,
        so on every host the ML Program runs in edgeprep's reference executor (``device_bench.mil``, numpy).
        Reports say so in ``executed_by``; an op it does not implement leaves the artifact unmeasured."""
        return "coreml-ref", {}, None

    def read_graph(self, path: Path) -> OpGraph:
        self.require("coremltools")
        from edgeprep.backends.coreml.graph import read_graph

        return read_graph(path)

    def unmeasured_layer_errors(self, artifact) -> dict:
        return {"reason": "Core ML layers are compared with the float Keras model under verification.layers (by "
                          "edgeprep's reference executor, where it can run the artifact); here: the SQNR of every "
                          "compressed weight tensor", "weights": artifact.quantization.get("weight_sqnr", [])}

    def qat_options(self, options: CoreMLOptions) -> CoreMLOptions:
        """8-bit linear symmetric per-channel weights: the grid the fake-quant kernels were trained on."""
        return dataclasses.replace(options, weight_compression="linear8")
