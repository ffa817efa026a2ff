"""What a fine-tuned QAT model leaves besides its artifacts: the fine-tuned float model and its ranges.

The artifacts themselves are each backend's: TFLite and OpenVINO convert the fake-quant inference graph (BN folded
with moving statistics, ``QATModel.serving_function``) with ``Backend.export_qat``, so the converters take the
trained ranges and the quantized weights as they are: TFLite emits an all-int8 model, OpenVINO an IR with
FakeQuantize nodes. Core ML (``Backend.qat_reconverts``) converts the fine-tuned float model again and quantizes its
weights 8-bit per channel — the same grid the fake-quant kernels trained on — with fp16 activations (8-bit
activations need Core ML prediction, macOS only).
"""

from __future__ import annotations

import numpy as np

from edgeprep.qat.model import QATModel


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
