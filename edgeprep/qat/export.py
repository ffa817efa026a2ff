"""Artifacts from a fine-tuned QAT model: TFLite, OpenVINO IR and Core ML, plus the fine-tuned float model.

TFLite and OpenVINO are converted from the fake-quant inference graph (BN folded with moving statistics), so
the converters take the trained ranges and the quantized weights as they are: TFLite emits an all-int8 model,
OpenVINO an IR with FakeQuantize nodes. Core ML converts the fine-tuned float model and quantizes its weights
8-bit per channel — the same grid the fake-quant kernels trained on — with fp16 activations (8-bit activations
need Core ML prediction, macOS only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeprep._util import first_line
from edgeprep.errors import ConversionError
from edgeprep.qat.model import Mode, QATModel


def serving_function(qat: QATModel, input_shape: tuple, quantize: bool = True, keep: frozenset = frozenset()):
    """A batch-1 concrete function of the inference graph (fake quant on unless ``quantize`` is False)."""
    import tensorflow as tf

    spec = tf.TensorSpec((1, *input_shape), tf.float32, name="input")
    qat.prepare_export()

    @tf.function(input_signature=[spec], autograph=False)
    def serve(x):
        out, _, _ = qat(x, Mode(quantize=quantize, keep=keep, export=True))
        return out

    return serve.get_concrete_function()


def _module(qat: QATModel):
    import tensorflow as tf

    mod = tf.Module()
    mod.model_vars = list(qat.model.variables)
    mod.qat_vars = list(qat.vars.values())
    return mod


def to_tflite(qat: QATModel, input_shape: tuple, io: str = "int8", quantize: bool = True,
              keep: frozenset = frozenset()) -> bytes:
    import tensorflow as tf

    fn = serving_function(qat, input_shape, quantize, keep)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], _module(qat))
    if quantize:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        dtype = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[io]
        conv.inference_input_type = dtype
        conv.inference_output_type = dtype
    try:
        return bytes(conv.convert())
    except Exception as exc:
        raise ConversionError(f"TFLite conversion of the QAT graph failed: {first_line(exc)}") from None


def to_openvino(qat: QATModel, input_shape: tuple, out: Path, workdir: Path, quantize: bool = True,
                keep: frozenset = frozenset()) -> None:
    import openvino as ov
    import tensorflow as tf

    mod = _module(qat)
    fn = serving_function(qat, input_shape, quantize, keep)
    saved = Path(workdir) / f"qat-{'q' if quantize else 'f'}{len(keep)}.savedmodel"
    tf.saved_model.save(mod, str(saved), signatures={"serving_default": fn})
    try:
        model = ov.convert_model(str(saved))
    except Exception as exc:
        raise ConversionError(f"OpenVINO conversion of the QAT graph failed: {first_line(exc)}") from None
    ov.save_model(model, str(out), compress_to_fp16=False)


def finetuned_float_model(qat: QATModel):
    """The original architecture with the fine-tuned weights and the QAT-updated BN moving statistics."""
    state = qat.state_numpy()
    for s in qat.steps:
        if s.fold is not None:
            s.fold.moving_mean.assign(state[f"{s.fold.name}:mean"])
            s.fold.moving_variance.assign(state[f"{s.fold.name}:var"])
    return qat.model


def ranges_json(qat: QATModel) -> dict:
    """Activation ranges and folded BN statistics as plain data (saved beside the fine-tuned model)."""
    state = qat.state_numpy()
    return {k: (float(v) if np.ndim(v) == 0 else [float(a) for a in np.ravel(v)]) for k, v in state.items()}
