"""TFLite (LiteRT) conversion with ``tf.lite.TFLiteConverter``: fp32, fp16 weights, and full-integer int8."""

from __future__ import annotations

from pathlib import Path

from edgeprep.artifact import ConvertRequest, ConvertResult
from edgeprep.backends import register
from edgeprep.backends.base import Backend
from edgeprep.backends.graph import FloatOp, OpGraph
from edgeprep.backends.tflite.graph import OP_KINDS
from edgeprep.backends.tflite.ptq import float_ops
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


def _fold_shapes(flat: bytes) -> tuple[bytes, tuple[str, ...]]:
    """Every precision: RESHAPEs whose target the graph computes from a static shape get it as a constant (exact;
    XNNPACK then takes them, ``static_shape.py``), and the note saying so."""
    from edgeprep.backends.tflite.static_shape import fold_static_reshape, note

    flat, folded = fold_static_reshape(flat)
    return flat, ((note(folded),) if folded else ())


def is_tflite(path: Path) -> bool:
    path = Path(path)
    if not path.is_file() or path.is_symlink():
        return False
    with open(path, "rb") as f:
        return f.read(8)[4:8] == b"TFL3"


@register("tflite")
class TFLiteBackend(Backend):
    suffix = ".tflite"
    content = "a TFLite flatbuffer"
    options_type = TFLiteOptions
    runtimes = ("litert", "openvino")            # OpenVINO's CPU plugin reads .tflite files too
    packages = ("tensorflow", "litert")
    op_kinds = OP_KINDS
    measures_layer_error = True
    all_int8_qat = True
    int16_activations = True     # the converter's 16x8 mode

    def recognizes(self, path: Path) -> bool:
        """A TFLite flatbuffer: the file identifier ``TFL3`` at bytes 4-8."""
        return is_tflite(path)

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
            return self._int8(model, conv, request, opts, out)
        try:
            flat = conv.convert()
        except Exception as exc:
            from edgeprep._util import first_line

            raise ConversionError(f"TFLite conversion ({request.precision}) failed: {first_line(exc)}",
                                  "ops outside TFLite's builtin set need a different precision or model change"
                                  ) from None
        flat, notes = _fold_shapes(flat)
        out.write_bytes(flat)
        return ConvertResult(quant, notes)

    def _int8(self, model: ModelHandle, conv, request: ConvertRequest, opts: TFLiteOptions,
              out: Path) -> ConvertResult:
        """Calibrate (cached in the workdir, so keep-float re-quantizes without recalibrating), then quantize."""
        from edgeprep.backends.tflite import ptq as tflite_ptq

        q = request.quantize
        cal = tflite_ptq.calibrate(conv, request.calibration, request.calibration_samples, q.range_method,
                                   q.percentile, cache_dir=request.workdir, cache_key=f"{model.sha256}{model.path}")
        flat = tflite_ptq.quantize(cal, opts.int8_io, request.keep_float)
        flat, notes = _fold_shapes(flat)
        floated = 0
        if opts.hard_swish_in_float:
            from edgeprep.backends.tflite.hard_swish import float_hard_swish

            flat, floated = float_hard_swish(flat)
        out.write_bytes(flat)
        floats = self.inspect(out)["float_ops"]
        if floated and floats.get("HARD_SWISH") == floated:     # on purpose, not for want of an int8 kernel
            del floats["HARD_SWISH"]
        if floats and not opts.float_fallback:
            raise ConversionError(f"TFLite int8: op(s) with no int8 kernel stay float: "
                                  f"{', '.join(f'{k} x{v}' for k, v in floats.items())}",
                                  "set [tflite] float_fallback = true to accept them, or replace those layers")
        quant = {"weights": "int8 per-channel", "activations": "int8", "io": opts.int8_io,
                 "calibration_samples": cal.samples, "range_method": q.range_method}
        notes = list(notes)
        if request.keep_float:
            quant["kept_float"] = list(request.keep_float)
        if floats:
            notes.append(f"ops without an int8 kernel kept float: {', '.join(sorted(floats))}")
        if floated:
            from edgeprep.backends.tflite.hard_swish import note

            quant["float_hard_swish"] = floated
            notes.append(note(floated))
        return ConvertResult(quant, tuple(notes))

    def inspect(self, path: Path) -> dict:
        self.require("litert")
        from device_bench.runners.litert import LiteRTSession

        sess = LiteRTSession(str(path), threads=1, xnnpack=False)
        ops = sess.op_counts()
        floats = float_ops(sess._it)
        return {"inputs": [sess.input.to_dict()], "outputs": [sess.output.to_dict()], "op_counts": ops,
                "float_ops": floats, "all_int8": not floats}

    def read_graph(self, path: Path) -> OpGraph:
        self.require("litert")
        from edgeprep.backends.tflite.graph import read_graph

        return read_graph(path)

    def float_compute_ops(self, path: Path) -> list[FloatOp]:
        self.require("litert")
        from edgeprep.backends.tflite.graph import float_ops as float_op_list

        return float_op_list(path)

    def runtime(self, options: TFLiteOptions) -> tuple[str | None, dict, str | None]:
        extra = {"api": "compiled"} if options.litert_api == "compiled" else {}
        return "litert", {"xnnpack": options.xnnpack, **extra}, None

    def int8_io(self, options: TFLiteOptions) -> str:
        return options.int8_io

    def layer_errors(self, quantized: Path, reference: Path | bytes, x) -> list:
        self.require("litert")
        from edgeprep.backends.tflite.layer_error import tflite_errors

        return tflite_errors(quantized, reference, x)

    def export_qat(self, qat, input_shape: tuple, out: Path, workdir: Path, options: TFLiteOptions,
                   keep: frozenset = frozenset(), quantize: bool = True) -> Path:
        """The fake-quant graph converted by TFLite: all int8 with ``[tflite] int8_io`` I/O (float without
        ``quantize``), HARD_SWISH in float with ``[tflite] float_hard_swish``."""
        from edgeprep.backends.tflite.qat import to_tflite

        Path(out).write_bytes(to_tflite(qat, input_shape, options.int8_io, quantize=quantize, keep=keep,
                                        float_fallback=options.float_fallback,
                                        float_hard_swish=options.hard_swish_in_float))
        return Path(out)


__all__ = ["TFLiteBackend", "representative"]
