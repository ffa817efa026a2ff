"""Activation ranges per tensor from the calibration statistics.

    minmax      the observed extremes (what TFLite's calibrator and NNCF's MINMAX give)
    percentile  the given percentile of the values at each end
    mse         the clip of the observed range that minimises the int8 quantization MSE of the observed values:
                a common scale factor first, then each end alone (coordinate search on a grid). The unclipped range
                is one of the candidates, so the error on the data it chose from is never above min/max's.

Ranges always contain 0 (int8 represents 0 exactly) and are quantized as TFLite and OpenVINO do: 256 levels,
asymmetric, the zero point nudged to an integer (``fake_quant_with_min_max_vars``).
"""

from __future__ import annotations

import numpy as np

from edgeprep.ptq.stats import TensorStats

METHODS = ("minmax", "percentile", "mse")
GRID = np.linspace(0.05, 1.0, 96)


def fake_quant(x: np.ndarray, lo: float, hi: float, levels: int = 256) -> np.ndarray:
    """``tf.quantization.fake_quant_with_min_max_vars`` in numpy (8 bits, not narrow)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 0:
        return np.zeros_like(x)
    scale = (hi - lo) / (levels - 1)
    zp = float(np.clip(np.round(-lo / scale), 0, levels - 1))
    nlo, nhi = -zp * scale, (levels - 1 - zp) * scale
    return np.round((np.clip(x, nlo, nhi) - nlo) / scale) * scale + nlo


def quant_mse(x: np.ndarray, lo: float, hi: float) -> float:
    return float(np.mean((fake_quant(x, lo, hi) - x) ** 2))


def choose(st: TensorStats, method: str, percentile: float = 99.99) -> tuple[float, float]:
    lo, hi = min(0.0, st.lo), max(0.0, st.hi)
    if method == "minmax" or st.sample.size == 0 or hi <= lo:
        pass
    elif method == "percentile":
        lo = min(0.0, float(np.percentile(st.sample, 100 - percentile)))
        hi = max(0.0, float(np.percentile(st.sample, percentile)))
    elif method == "mse":
        lo, hi = _mse_search(st.sample, lo, hi)
    else:
        raise ValueError(f"unknown range method {method!r}; choose from {', '.join(METHODS)}")
    return lo, (hi if hi > lo else lo + 1e-3)


def _mse_search(x: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    best = (quant_mse(x, lo, hi), lo, hi)
    for a in GRID:                                   # one factor for both ends
        err = quant_mse(x, lo * a, hi * a)
        if err < best[0]:
            best = (err, lo * a, hi * a)
    _, blo, bhi = best
    for a in GRID:                                   # then each end alone, from the best common clip
        for cand in ((blo, hi * a), (lo * a, bhi)):
            err = quant_mse(x, *cand)
            if err < best[0]:
                best = (err, *cand)
    return best[1], best[2]


def search(stats: dict[str, TensorStats], method: str, percentile: float = 99.99,
           exact: frozenset = frozenset()) -> dict[str, tuple[float, float]]:
    """A range for every tensor in ``stats``; the tensors named in ``exact`` keep min/max (the model input, the
    logits a softmax reads: clipping them changes which class wins)."""
    return {name: choose(st, "minmax" if name in exact else method, percentile) for name, st in stats.items()}
