"""Spatial resizing of the last two axes: nearest-neighbour and bilinear upsample/resize (and iOS17 ``resize``).

Bilinear sampling grids follow the MIL definitions of ``resize_bilinear``'s sampling modes. Nearest-neighbour is
implemented for integer upsampling only, where every rounding convention picks the same pixel (``floor(i / scale)``);
other ratios are reported as unsupported rather than guessed.
"""

from __future__ import annotations

import numpy as np

from device_bench.mil.ops import Unsupported, f32, ints, op, scalar


def grid(mode: str, n_in: int, n_out: int) -> np.ndarray:
    """Source coordinates (float) of each output position along one axis."""
    i = np.arange(n_out, dtype=np.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if n_out == 1:
            g = np.full(1, (n_in - 1) / 2.0 if mode == "ALIGN_CORNERS" else 0.0)
        else:
            g = i * (n_in - 1) / (n_out - 1)
    elif mode == "DEFAULT":
        g = i * n_in / n_out
    elif mode == "OFFSET_CORNERS":
        delta = max(1, n_in - 1) / n_out
        g = 0.5 * delta + i * delta
    elif mode == "UNALIGN_CORNERS":
        spacing = n_in / n_out
        g = i * spacing + 0.5 * spacing - 0.5
    else:
        raise Unsupported(f"sampling_mode '{mode}'")
    return np.clip(g, 0, n_in - 1)


def _linear_axis(x: np.ndarray, axis: int, coords: np.ndarray) -> np.ndarray:
    lo = np.floor(coords).astype(np.int64)
    hi = np.minimum(lo + 1, x.shape[axis] - 1)
    frac = (coords - lo).reshape([-1 if d == axis % x.ndim else 1 for d in range(x.ndim)])
    return np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac


def bilinear(x, out_h: int, out_w: int, mode: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    y = _linear_axis(x, -2, grid(mode, x.shape[-2], out_h))
    return _linear_axis(y, -1, grid(mode, x.shape[-1], out_w))


def nearest(x, out_h: int, out_w: int) -> np.ndarray:
    x = f32(x)
    for axis, n_out in ((-2, out_h), (-1, out_w)):
        n_in = x.shape[axis]
        if n_out % n_in:
            raise Unsupported(f"nearest-neighbour resize other than integer upsampling ({n_in} -> {n_out})")
        src = np.arange(n_out) // (n_out // n_in)
        x = np.take(x, src, axis=axis)
    return x


@op("upsample_nearest_neighbor")
def upsample_nearest_neighbor(x, scale_factor_height=1, scale_factor_width=1):
    x = np.asarray(x)
    sh, sw = scalar(scale_factor_height), scalar(scale_factor_width)
    return nearest(x, int(np.floor(x.shape[-2] * sh)), int(np.floor(x.shape[-1] * sw)))


@op("resize_nearest_neighbor")
def resize_nearest_neighbor(x, target_size_height, target_size_width):
    return nearest(x, int(scalar(target_size_height, int)), int(scalar(target_size_width, int)))


@op("upsample_bilinear")
def upsample_bilinear(x, scale_factor_height=1, scale_factor_width=1, align_corners=True, half_pixel_centers=None):
    x = np.asarray(x)
    align = bool(align_corners)
    half = (not align) if half_pixel_centers is None else bool(half_pixel_centers)
    if align and half:
        raise Unsupported("upsample_bilinear with both align_corners and half_pixel_centers")
    mode = "STRICT_ALIGN_CORNERS" if align else ("UNALIGN_CORNERS" if half else "DEFAULT")
    h = int(np.floor(x.shape[-2] * scalar(scale_factor_height)))
    w = int(np.floor(x.shape[-1] * scalar(scale_factor_width)))
    return bilinear(x, h, w, mode)


@op("resize_bilinear")
def resize_bilinear(x, target_size_height=1, target_size_width=1, sampling_mode="DEFAULT"):
    return bilinear(x, int(scalar(target_size_height, int)), int(scalar(target_size_width, int)), str(sampling_mode))


@op("resize")
def resize(x, shape, resized_dims, interpolation_mode="LINEAR", sampling_mode="DEFAULT"):
    x = np.asarray(x)
    k = int(scalar(resized_dims, int))
    if k != 2:
        raise Unsupported(f"resize of {k} trailing axes (2 are supported)")
    target = ints(shape)[-2:]
    h, w = [t if t else x.shape[-2 + i] for i, t in enumerate(target)]
    mode = str(interpolation_mode)
    if mode == "LINEAR":
        return bilinear(x, h, w, str(sampling_mode))
    if mode == "NEAREST_NEIGHBOR" and str(sampling_mode) == "DEFAULT":
        return nearest(x, h, w)
    raise Unsupported(f"resize with interpolation_mode '{mode}' and sampling_mode '{sampling_mode}'")
