"""OpenVINO IR from a QAT model's fake-quant inference graph (an IR with FakeQuantize nodes carrying the trained
ranges), or with ``quantize=False`` the float twin of the same graph. The graph goes through a SavedModel export
(``ov.convert_model`` reads no concrete functions).

The QAT model (``edgeprep.qat.model.QATModel``) supplies its batch-1 serving function and a module holding its
variables; nothing here imports ``edgeprep.qat``, which sits above the backends.
"""

from __future__ import annotations

from pathlib import Path

from edgeprep._util import first_line
from edgeprep.errors import ConversionError


def to_openvino(qat, input_shape: tuple, out: Path, workdir: Path, quantize: bool = True,
                keep: frozenset = frozenset()) -> None:
    import openvino as ov
    import tensorflow as tf

    mod = qat.variables_module()
    fn = qat.serving_function(input_shape, quantize, keep, snap=False)   # weights as FakeQuantize: stored int8
    saved = Path(workdir) / f"qat-{'q' if quantize else 'f'}{len(keep)}.savedmodel"
    tf.saved_model.save(mod, str(saved), signatures={"serving_default": fn})
    try:
        model = ov.convert_model(str(saved))
    except Exception as exc:
        raise ConversionError(f"OpenVINO conversion of the QAT graph failed: {first_line(exc)}") from None
    ov.save_model(model, str(out), compress_to_fp16=False)


__all__ = ["to_openvino"]
