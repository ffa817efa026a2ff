"""Initial activation ranges for QAT: one float pass over the calibration data (PTQ calibration).

``minmax`` takes the extremes over all samples; ``percentile`` the mean over batches of the per-batch
percentiles (as the TFLite and NNCF paths do), so a QAT run starts from the ranges PTQ would use.
"""

from __future__ import annotations

import numpy as np

from edgeprep.data import Dataset


def activation_ranges(model, data: Dataset, samples: int, method: str = "minmax", percentile: float = 99.99,
                      batch_size: int = 64) -> dict[str, tuple[float, float]]:
    from edgeprep.qat.model import Mode, QATModel

    probe = QATModel(model, ranges={}, state=None, _calibrating=True)
    lows: dict[str, list[float]] = {}
    highs: dict[str, list[float]] = {}
    for x, _ in data.batches(batch_size, samples):
        probe(x, Mode(quantize=False, record=True))
        for name, v in probe.recorded.items():
            v = np.asarray(v).reshape(-1)
            if method == "minmax":
                lo, hi = float(v.min()), float(v.max())
            else:
                lo, hi = float(np.percentile(v, 100 - percentile)), float(np.percentile(v, percentile))
            lows.setdefault(name, []).append(lo)
            highs.setdefault(name, []).append(hi)
    agg_lo, agg_hi = (np.min, np.max) if method == "minmax" else (np.mean, np.mean)
    out = {}
    for name in lows:
        lo, hi = min(0.0, float(agg_lo(lows[name]))), max(0.0, float(agg_hi(highs[name])))
        out[name] = (lo, hi if hi > lo else lo + 1e-3)
    return out
