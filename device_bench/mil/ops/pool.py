"""Pooling: max_pool, avg_pool (with or without padding in the average), l2_pool; any number of spatial axes."""

from __future__ import annotations

import math

import numpy as np

from device_bench.mil.ops import f32, ints, op
from device_bench.mil.ops.conv import spatial_pads, windows


def _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, fill: float):
    """Windows of x padded with ``fill``, and windows of a mask: 1 = input, 2 = explicit padding, 0 = beyond."""
    x = f32(x)
    n = x.ndim - 2
    kernel = ints(kernel_sizes)
    strides = ints(strides) if strides is not None else [1] * n
    pads = spatial_pads(pad_type, x.shape[2:], kernel, strides, [1] * n, pad)
    if bool(ceil_mode):
        extended = []
        for i, k, s, (lo, hi) in zip(x.shape[2:], kernel, strides, pads):
            out = math.floor((i + lo + hi - k + s - 1) / s + 1)
            if (out - 1) * s >= i + lo and lo + hi > 0:
                out -= 1
            extended.append((lo, hi, max(0, (out - 1) * s + k - (i + lo + hi))))
    else:
        extended = [(lo, hi, 0) for lo, hi in pads]
    widths = [(0, 0), (0, 0)] + [(lo, hi + extra) for lo, hi, extra in extended]
    xp = np.pad(x, widths, constant_values=fill)
    mask = np.zeros((1, 1) + xp.shape[2:], np.int8)
    mask[(0, 0) + tuple(slice(0, lo + i + hi) for (lo, hi, _), i in zip(extended, x.shape[2:]))] = 2
    mask[(0, 0) + tuple(slice(lo, lo + i) for (lo, _, _), i in zip(extended, x.shape[2:]))] = 1
    ones = [1] * n
    k_axes = tuple(range(2 + n, 2 + 2 * n))
    return windows(xp, kernel, strides, ones), windows(mask, kernel, strides, ones), k_axes


@op("max_pool")
def max_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    win, _, axes = _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, -np.inf)
    return np.max(win, axis=axes)


@op("avg_pool")
def avg_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False,
             exclude_padding_from_average=False):
    win, mask, axes = _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, 0.0)
    counted = (mask == 1) if bool(exclude_padding_from_average) else (mask > 0)
    return np.sum(win, axis=axes, dtype=np.float64) / np.maximum(np.sum(counted, axis=axes), 1)


@op("l2_pool")
def l2_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    win, _, axes = _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, 0.0)
    w = win.astype(np.float64)
    return np.sqrt(np.sum(w * w, axis=axes))
