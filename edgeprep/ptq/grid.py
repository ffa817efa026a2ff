"""The int8 weight grid every backend uses, in numpy: symmetric, narrow range [-127, 127], zero point 0.

Per output channel for convolutions (a depthwise kernel ``(kh, kw, in, mult)`` has ``in * mult`` channels), per
tensor for Dense (TFLite's FULLY_CONNECTED cannot carry a per-channel axis through its transposed kernel). The
scale is ``max|w| / 127`` over the channel, exactly as ``QATModel._weights`` and the converters compute it, so a
kernel whose values lie on this grid is reproduced integer for integer by TFLite, OpenVINO and Core ML.
"""

from __future__ import annotations

import numpy as np

QMAX = 127


def scales(w: np.ndarray, kind: str) -> np.ndarray:
    """The per-channel (Dense: per-tensor) scale, broadcastable against ``w``."""
    w = np.asarray(w, np.float32)
    if kind == "dense":
        return np.full((1,) * w.ndim, max(float(np.abs(w).max()), 1e-8) / QMAX, np.float32)
    axes = tuple(range(w.ndim - 2)) if kind == "depthwise" else tuple(range(w.ndim - 1))
    m = np.maximum(np.abs(w).max(axis=axes, keepdims=True), 1e-8)
    return (m / QMAX).astype(np.float32)


def integers(w: np.ndarray, kind: str) -> np.ndarray:
    """Nearest rounding onto the grid: the int8 values a converter stores for ``w``."""
    return np.clip(np.round(np.asarray(w, np.float32) / scales(w, kind)), -QMAX, QMAX).astype(np.int8)


def nearest(w: np.ndarray, kind: str) -> np.ndarray:
    """``w`` rounded to the nearest grid point (what the converters do without AdaRound), as float."""
    return (integers(w, kind).astype(np.float32) * scales(w, kind)).astype(np.float32)


def nearest_kernels(w, kind: str):
    """A linear layer's kernel (a SeparableConv2D's pair) rounded to the nearest grid points, as float."""
    if kind == "separable":
        return tuple(nearest(k, kd) for k, kd in zip(w, kinds_of(kind)))
    return nearest(w, kind)


def kinds_of(kind: str) -> tuple[str, ...]:
    """The grid kind of each kernel of a linear layer (a SeparableConv2D has a depthwise and a 1x1 kernel)."""
    return ("depthwise", "conv") if kind == "separable" else (kind,)
