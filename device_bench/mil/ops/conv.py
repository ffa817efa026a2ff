"""Convolutions: conv and conv_transpose over any number of spatial axes, with groups, dilation, padding modes.

Layouts are MIL's: x is [N, C_in, *D]; conv weights are [C_out, C_in/groups, *K]; conv_transpose weights are
[C_in, C_out/groups, *K]. Products accumulate in float32 (BLAS); the result is rounded once to the output type.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from device_bench.mil.ops import Unsupported, f32, ints, op


def spatial_pads(pad_type: str, in_dims, kernel, strides, dilations, pad=None) -> list[tuple[int, int]]:
    """(before, after) padding per spatial axis for MIL's pad types (``same`` puts the odd pixel after)."""
    pad_type = str(pad_type)
    n = len(in_dims)
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        p = ints(pad) if pad is not None else [0] * 2 * n
        return [(p[2 * i], p[2 * i + 1]) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        out = []
        for i, k, s, d in zip(in_dims, kernel, strides, dilations):
            eff = (k - 1) * d + 1
            total = max(0, s * math.ceil(i / s) - i + eff - s)
            lo = total // 2 if pad_type == "same" else (total + 1) // 2
            out.append((lo, total - lo))
        return out
    raise Unsupported(f"pad_type '{pad_type}' is not supported (valid, same, same_lower, custom)")


def windows(x: np.ndarray, kernel, strides, dilations) -> np.ndarray:
    """[N, C, *D] -> [N, C, *O, *K] view of every (strided, dilated) window position."""
    n = len(kernel)
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    axes = tuple(range(2, 2 + n))
    v = sliding_window_view(x, eff, axis=axes)
    index = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides) \
        + tuple(slice(None, None, d) for d in dilations)
    return v[index]


def _depthwise(xp: np.ndarray, w: np.ndarray, out_dims, strides, dilations) -> np.ndarray:
    """Per-channel filters w [C, M, *K]: a multiply-add per kernel position (faster than im2col here)."""
    n, (c, m) = len(out_dims), w.shape[:2]
    y = np.zeros((xp.shape[0], c, m, *out_dims), np.float32)
    for kpos in np.ndindex(*w.shape[2:]):
        index = (slice(None), slice(None)) + tuple(
            slice(k * d, k * d + (o - 1) * s + 1, s) for k, d, o, s in zip(kpos, dilations, out_dims, strides))
        y += xp[index][:, :, None] * w[(slice(None), slice(None)) + kpos].reshape((1, c, m) + (1,) * n)
    return y.reshape(xp.shape[0], c * m, *out_dims)


def _params(x, kernel, strides, dilations):
    n = x.ndim - 2
    strides = ints(strides) if strides is not None else [1] * n
    dilations = ints(dilations) if dilations is not None else [1] * n
    return n, strides, dilations


@op("conv")
def conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    x, w = f32(x), f32(weight)
    kernel = w.shape[2:]
    n, strides, dilations = _params(x, kernel, strides, dilations)
    pads = spatial_pads(pad_type, x.shape[2:], kernel, strides, dilations, pad)
    xp = np.pad(x, [(0, 0), (0, 0)] + pads)
    g = int(np.asarray(groups).reshape(-1)[0])
    c_in, c_out = x.shape[1], w.shape[0]
    if c_in % g or c_out % g or w.shape[1] * g != c_in:
        raise ValueError(f"conv: {c_in} input channels, weight {w.shape} and groups={g} do not match")
    win = windows(xp, kernel, strides, dilations)               # [N, C, *O, *K]
    out_dims = win.shape[2:2 + n]
    if g == c_in and w.shape[1] == 1:                            # depthwise (channel multiplier c_out/c_in)
        y = _depthwise(xp, w.reshape(c_in, c_out // c_in, *kernel), out_dims, strides, dilations)
    else:
        cg, og = c_in // g, c_out // g
        parts = []
        for gi in range(g):
            wg = w[gi * og:(gi + 1) * og].reshape(og, -1)                      # [og, cg*prod(K)]
            wv = win[:, gi * cg:(gi + 1) * cg]                                  # [N, cg, *O, *K]
            cols = np.moveaxis(wv, 1, 1 + n).reshape(x.shape[0], *out_dims, -1)  # [N, *O, cg*prod(K)]
            parts.append(np.moveaxis(cols @ wg.T, -1, 1))                      # [N, og, *O]
        y = parts[0] if g == 1 else np.concatenate(parts, axis=1)
    if bias is not None:
        y = y + f32(bias).reshape((1, -1) + (1,) * n)
    return y


@op("conv_transpose")
def conv_transpose(x, weight, bias=None, pad=None, output_shape=None, pad_type="valid", strides=None,
                   dilations=None, groups=1, _out=None):
    """Scatter-add of every input pixel times the kernel, then the padding cropped (TensorFlow's shape logic)."""
    x, w = f32(x), f32(weight)
    kernel = w.shape[2:]
    n, strides, dilations = _params(x, kernel, strides, dilations)
    g = int(np.asarray(groups).reshape(-1)[0])
    c_in, og = x.shape[1], w.shape[1]
    if w.shape[0] != c_in or c_in % g:
        raise ValueError(f"conv_transpose: {c_in} input channels, weight {w.shape} and groups={g} do not match")
    in_dims = x.shape[2:]
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    full = [(i - 1) * s + e for i, s, e in zip(in_dims, strides, eff)]
    if output_shape is not None:
        out_dims = ints(output_shape)[2:]
    elif _out and _out[0] is not None and _out[0].shape and None not in _out[0].shape:
        out_dims = list(_out[0].shape[2:])
    else:
        out_dims = None
    pad_type = str(pad_type)
    if pad_type == "same":
        want = out_dims or [i * s for i, s in zip(in_dims, strides)]
        before = [max(f - o, 0) // 2 for f, o in zip(full, want)]
    elif pad_type == "valid":
        before = [0] * n
        want = out_dims or full
    elif pad_type == "custom":
        p = ints(pad) if pad is not None else [0] * 2 * n
        before = [p[2 * i] for i in range(n)]
        want = out_dims or [f - p[2 * i] - p[2 * i + 1] for i, f in enumerate(full)]
    else:
        raise Unsupported(f"conv_transpose pad_type '{pad_type}' is not supported (valid, same, custom)")
    cg = c_in // g
    y = np.zeros((x.shape[0], og * g, *[max(f, b + o) for f, b, o in zip(full, before, want)]), np.float32)
    for gi in range(g):
        xg = np.moveaxis(x[:, gi * cg:(gi + 1) * cg], 1, -1)                   # [N, *D, cg]
        wg = w[gi * cg:(gi + 1) * cg]                                          # [cg, og, *K]
        for kpos in np.ndindex(*kernel):
            contrib = np.moveaxis(xg @ wg[(slice(None), slice(None)) + kpos], -1, 1)   # [N, og, *D]
            index = (slice(None), slice(gi * og, (gi + 1) * og)) + tuple(
                slice(k * d, k * d + (i - 1) * s + 1, s) for k, d, i, s in zip(kpos, dilations, in_dims, strides))
            y[index] += contrib
    y = y[(slice(None), slice(None)) + tuple(slice(b, b + o) for b, o in zip(before, want))]
    if bias is not None:
        y = y + f32(bias).reshape((1, -1) + (1,) * n)
    return y
