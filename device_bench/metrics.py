"""Agreement metrics between an artifact's outputs and the float reference (pure numpy).

All functions take 2-D arrays (samples x outputs) of float32. SQNR treats the reference as the signal and the
difference as quantization noise: ``10 log10(sum(ref^2) / sum((ref - out)^2))`` over the whole set, in dB.
"""

from __future__ import annotations

import math

import numpy as np

SQNR_EXACT_DB = 200.0  # reported when outputs are bit-identical (infinite SQNR is not valid JSON)


def _flat(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(len(a), -1)


def top1(outputs: np.ndarray) -> np.ndarray:
    return np.argmax(_flat(outputs), axis=1)


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy against integer labels."""
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs but {len(labels)} labels")
    return float(np.mean(top1(outputs) == labels))


def agreement(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of samples whose top-1 class equals the reference model's top-1 class."""
    return float(np.mean(top1(outputs) == top1(reference)))


def sqnr_db(reference: np.ndarray, outputs: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``outputs`` against ``reference`` in dB (higher is closer)."""
    ref, out = _flat(reference), _flat(outputs)
    noise = float(np.sum((ref - out) ** 2))
    signal = float(np.sum(ref ** 2))
    if not (math.isfinite(noise) and math.isfinite(signal)):
        return float("nan")      # NaN/inf outputs are no signal and no noise: never "bit-exact"
    if noise == 0.0:
        return SQNR_EXACT_DB
    if signal == 0.0:
        return -SQNR_EXACT_DB
    return min(SQNR_EXACT_DB, 10.0 * math.log10(signal / noise))


def max_abs_error(reference: np.ndarray, outputs: np.ndarray) -> float:
    return float(np.max(np.abs(_flat(reference) - _flat(outputs)))) if np.size(reference) else 0.0


def compare(outputs: np.ndarray, reference: np.ndarray | None = None, labels: np.ndarray | None = None) -> dict:
    """Every metric that the available inputs allow, as a JSON-ready dict (None where not measurable)."""
    out = {"samples": int(len(outputs)), "accuracy": None, "agreement": None, "sqnr_db": None,
           "max_abs_error": None}
    if labels is not None:
        out["accuracy"] = accuracy(outputs, labels)
    if reference is not None:
        out["agreement"] = agreement(outputs, reference)
        out["sqnr_db"] = round(sqnr_db(reference, outputs), 3)
        out["max_abs_error"] = max_abs_error(reference, outputs)
    return out
