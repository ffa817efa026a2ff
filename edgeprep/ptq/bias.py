"""Empirical bias correction (Nagel et al., 2019; as AIMET's empirical mode): the mean error a layer's quantized
output carries, per output channel, measured on the calibration data and subtracted from its bias.

The error is measured at each linear layer's pre-activation output, between the float graph and the quantized
graph (everything before the layer quantized with the final parameters), so it also absorbs what the layers before
it shifted. Layers are corrected one at a time in execution order, each measured after the ones before it were
corrected (correcting all at once from one pass overshoots: measured, the error grew up to 30x).
"""

from __future__ import annotations

import numpy as np


def channel_means(qat, batches, quantize: bool, names: frozenset, activations: bool = True) -> dict[str, np.ndarray]:
    """The mean over samples and positions of each named linear layer's pre-activation output, per channel.
    ``qat.prepare_export()`` has run."""
    from edgeprep.qat.model import Mode

    sums: dict[str, np.ndarray] = {}
    count: dict[str, int] = {}
    for x in batches:
        qat(x, Mode(quantize=quantize, export=True, taps=names, activations=activations))
        for name in names:
            y = np.asarray(qat.recorded[f"{name}/@out"], np.float64)
            y = y.reshape(-1, y.shape[-1])
            sums[name] = sums.get(name, 0.0) + y.sum(axis=0)
            count[name] = count.get(name, 0) + len(y)
    return {n: (sums[n] / count[n]).astype(np.float32) for n in sums}


def correct(qat, batches, names: list[str], progress=None, activations: bool = True) -> dict[str, dict]:
    """Correct the biases of the ``names`` linear steps of ``qat`` (in execution order; their kernels already in
    ``qat.overrides``), each measured with every layer before it corrected. Returns, per layer, the mean absolute
    per-channel error before and after (measured with every layer up to it corrected, as the final graph has it).
    ``batches`` is a list."""
    from edgeprep.ptq.walk import Walk
    from edgeprep.qat.model import Mode

    ref = channel_means(qat, batches, False, frozenset(names))
    before = channel_means(qat, batches, True, frozenset(names), activations=activations)
    walk = Walk(qat, batches, Mode(quantize=True, export=True, activations=activations))
    after = {}
    for i, name in enumerate(names):
        if progress:
            progress(i)
        got = _mean(walk.tap(name, "out"))
        w, b = qat.overrides[name]
        qat.overrides[name] = (w, (np.asarray(b, np.float32) + (ref[name] - got)).astype(np.float32))
        after[name] = _mean(walk.tap(name, "out", again=False))
    return {n: {"mean_error_before": round(float(np.mean(np.abs(ref[n] - before[n]))), 6),
                "mean_error_after": round(float(np.mean(np.abs(ref[n] - after[n]))), 6)} for n in names}


def _mean(y: np.ndarray) -> np.ndarray:
    """The mean of a layer's output per channel (over samples and positions), accumulated in float64."""
    return y.reshape(-1, y.shape[-1]).mean(axis=0, dtype=np.float64).astype(np.float32)
