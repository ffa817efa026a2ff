"""TFLite (LiteRT) conversion with ``tf.lite.TFLiteConverter``: fp32, fp16 weights, and full-integer int8."""

from __future__ import annotations

from pathlib import Path

from edgeprep.backends import register
from edgeprep.backends.base import Backend, ConvertRequest, ConvertResult
from edgeprep.config.formats import TFLiteOptions
from edgeprep.errors import ConversionError, DataError
from edgeprep.models import ModelHandle


def representative(request: ConvertRequest):
    """A generator of single-sample float32 batches from the calibration data, for TFLite's int8 calibration."""
    if request.calibration is None:
        raise DataError("int8 conversion needs calibration data", "pass --data with representative samples")

    def gen():
        for x, _ in request.calibration.batches(64, request.calibration_samples):
            for i in range(len(x)):
                yield [x[i:i + 1]]
    return gen


@register("tflite")
class TFLiteBackend(Backend):
    suffix = ".tflite"
    options_type = TFLiteOptions

    def convert(self, model: ModelHandle, request: ConvertRequest, out: Path) -> ConvertResult:
        import tensorflow as tf

        opts: TFLiteOptions = request.options
        if model.kind == "keras":
            conv = tf.lite.TFLiteConverter.from_keras_model(model.obj)
        else:
            conv = tf.lite.TFLiteConverter.from_saved_model(str(model.path))
        quant = {"weights": "fp32", "activations": "fp32", "io": "float32"}
        if request.precision == "fp16":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.target_spec.supported_types = [tf.float16]
            quant = {"weights": "fp16", "activations": "fp32", "io": "float32"}
        elif request.precision == "int8":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = representative(request)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            io = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[opts.int8_io]
            conv.inference_input_type = io
            conv.inference_output_type = io
            n = min(request.calibration_samples, request.calibration.count)
            quant = {"weights": "int8 per-channel", "activations": "int8", "io": opts.int8_io,
                     "calibration_samples": n}
        try:
            flat = conv.convert()
        except DataError:
            raise
        except Exception as exc:
            from edgeprep._util import first_line

            raise ConversionError(f"TFLite conversion ({request.precision}) failed: {first_line(exc)}",
                                  "ops outside TFLite's builtin set need a different precision or model change"
                                  ) from None
        out.write_bytes(flat)
        return ConvertResult(quant)

    def inspect(self, path: Path) -> dict:
        from device_bench.runners.litert import LiteRTSession

        sess = LiteRTSession(str(path), threads=1, xnnpack=False)
        ops = sess.op_counts()
        return {"inputs": [sess.input.to_dict()], "outputs": [sess.output.to_dict()], "op_counts": ops}

    def runtime(self, options: TFLiteOptions) -> tuple[str | None, dict, str | None]:
        return "litert", {"xnnpack": options.xnnpack}, None

__all__ = ["TFLiteBackend", "representative"]
