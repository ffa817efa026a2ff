"""TFLite from a QAT model's fake-quant inference graph: the converter takes the trained ranges and the quantized
weights as they are and emits an all-int8 model (or, ``quantize=False``, the float twin of the same graph).

The QAT model (``edgeprep.qat.model.QATModel``) supplies its batch-1 serving function and a module holding its
variables; nothing here imports ``edgeprep.qat``, which sits above the backends.
"""

from __future__ import annotations

from edgeprep._util import first_line
from edgeprep.errors import ConversionError


def to_tflite(qat, input_shape: tuple, io: str = "int8", quantize: bool = True,
              keep: frozenset = frozenset(), float_fallback: bool = True, float_hard_swish: bool = False) -> bytes:
    """``float_hard_swish``: int8 HARD_SWISH ops run in float between their int8 tensors (``hard_swish.py``)."""
    import tensorflow as tf

    fn = qat.serving_function(input_shape, quantize, keep)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], qat.variables_module())
    if quantize and getattr(qat, "activation_bits", 8) == 16:
        # 16-bit activations: the converter's 16x8 mode calibrates them on ``qat.representative``; the kernels are
        # already on the int8 grid, which its per-channel weight quantization reproduces. I/O stays float.
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = qat.representative
        conv.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        # ops with no 16x8 kernel (HARD_SWISH: every MobileNetV3) stay float, as [tflite] float_fallback lets int8
        # ops do; without it the converter refuses the whole model
        if keep or float_fallback:
            conv.target_spec.supported_ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
    elif quantize:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        dtype = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[io]
        conv.inference_input_type = dtype
        conv.inference_output_type = dtype
    try:
        flat = bytes(conv.convert())
    except Exception as exc:
        raise ConversionError(f"TFLite conversion of the QAT graph failed: {first_line(exc)}") from None
    from edgeprep.backends.tflite.static_shape import fold_static_reshape

    flat, _ = fold_static_reshape(flat)      # exact, any precision: the float twin's graph stays the int8 one's
    if quantize and float_hard_swish:
        from edgeprep.backends.tflite.hard_swish import float_hard_swish as floated

        flat, _ = floated(flat)
    return flat


__all__ = ["to_tflite"]
