"""Tensor layout ops: reshape, transpose, squeeze, expand_dims, concat, split, stack, slices, pad, tile, gather,
depth/space rearrangements, and the small shape computations converters emit (shape, fill, range_1d)."""

from __future__ import annotations

import numpy as np

from device_bench.mil.ops import Unsupported, axis_of, f32, ints, op, scalar


@op("reshape")
def reshape(x, shape):
    x = np.asarray(x)
    dims = ints(shape)
    if len(dims) == x.ndim:
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


@op("transpose")
def transpose(x, perm):
    return np.transpose(np.asarray(x), ints(perm))


@op("squeeze")
def squeeze(x, axes=None):
    x = np.asarray(x)
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(a % x.ndim for a in ints(axes)))


@op("expand_dims")
def expand_dims(x, axes):
    x = np.asarray(x)
    rank = x.ndim + len(ints(axes))
    for a in sorted(a % rank for a in ints(axes)):
        x = np.expand_dims(x, a)
    return x


@op("flatten2d")
def flatten2d(x, axis=1):
    x = np.asarray(x)
    a = axis_of(axis, x.ndim)
    return x.reshape(int(np.prod(x.shape[:a])), -1)


@op("concat", tuples=("values",))
def concat(values, axis, interleave=False):
    arrays = [np.asarray(v) for v in values]
    a = axis_of(axis, arrays[0].ndim)
    if bool(interleave):
        stacked = np.stack(arrays, axis=a + 1)
        shape = list(arrays[0].shape)
        shape[a] *= len(arrays)
        return stacked.reshape(shape)
    return np.concatenate(arrays, axis=a)


@op("stack", tuples=("values",))
def stack(values, axis):
    arrays = [np.asarray(v) for v in values]
    return np.stack(arrays, axis=axis_of(axis, arrays[0].ndim + 1))


@op("split")
def split(x, axis, num_splits=None, split_sizes=None):
    x = np.asarray(x)
    a = axis_of(axis, x.ndim)
    if split_sizes is not None:
        cuts = np.cumsum(ints(split_sizes))[:-1]
        return tuple(np.split(x, cuts, axis=a))
    return tuple(np.split(x, int(scalar(num_splits, int)), axis=a))


@op("slice_by_index")
def slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    x = np.asarray(x)
    n = x.ndim
    b, e = ints(begin), ints(end)
    s = ints(stride) if stride is not None else [1] * n
    bm = [bool(v) for v in np.asarray(begin_mask).reshape(-1)] if begin_mask is not None else [False] * n
    em = [bool(v) for v in np.asarray(end_mask).reshape(-1)] if end_mask is not None else [False] * n
    sm = [bool(v) for v in np.asarray(squeeze_mask).reshape(-1)] if squeeze_mask is not None else [False] * n
    index = []
    for i in range(n):
        if sm[i]:
            index.append(b[i])
        else:
            index.append(slice(None if bm[i] else b[i], None if em[i] else e[i], s[i]))
    return x[tuple(index)]


@op("slice_by_size")
def slice_by_size(x, begin, size):
    x = np.asarray(x)
    index = []
    for i, (b, n) in enumerate(zip(ints(begin), ints(size))):
        b = b % x.shape[i] if x.shape[i] else 0
        index.append(slice(b, None if n == -1 else b + n))
    return x[tuple(index)]


@op("pad")
def pad(x, pad, mode="constant", constant_val=0.0):
    x = np.asarray(x)
    p = ints(pad)
    k = len(p) // 2
    widths = [(0, 0)] * (x.ndim - k) + [(p[2 * i], p[2 * i + 1]) for i in range(k)]
    mode = str(mode)
    if mode == "constant":
        return np.pad(x, widths, constant_values=scalar(constant_val))
    if mode in ("reflect", "replicate"):
        return np.pad(x, widths, mode="reflect" if mode == "reflect" else "edge")
    raise Unsupported(f"pad mode '{mode}' (constant, reflect, replicate)")


@op("tile")
def tile(x, reps):
    return np.tile(np.asarray(x), ints(reps))


@op("reverse")
def reverse(x, axes=None):
    x = np.asarray(x)
    return np.flip(x, axis=None if axes is None else tuple(ints(axes)))


@op("gather")
def gather(x, indices, axis=0, batch_dims=0, validate_indices=False):
    if int(scalar(batch_dims, int)) != 0:
        raise Unsupported("gather with batch_dims != 0")
    x = np.asarray(x)
    return np.take(x, np.asarray(indices).astype(np.int64), axis=axis_of(axis, x.ndim))


@op("gather_along_axis")
def gather_along_axis(x, indices, axis=0, validate_indices=False):
    x = np.asarray(x)
    idx = np.asarray(indices).astype(np.int64)
    a = axis_of(axis, x.ndim)
    return np.take_along_axis(x, np.where(idx < 0, idx + x.shape[a], idx), axis=a)


@op("shape")
def shape(x):
    return np.array(np.asarray(x).shape, dtype=np.int32)


@op("fill")
def fill(shape, value=0.0):
    return np.full(ints(shape), scalar(value), dtype=np.float32)


@op("range_1d")
def range_1d(end, start, step):
    return np.arange(scalar(start), scalar(end), scalar(step))


@op("depth_to_space")
def depth_to_space(x, block_size):
    """[N, C*b*b, H, W] -> [N, C, H*b, W*b], depth-column-row order (TensorFlow's DepthToSpace)."""
    x = np.asarray(x)
    b = int(scalar(block_size, int))
    n, c, h, w = x.shape
    y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    return y.reshape(n, c // (b * b), h * b, w * b)


@op("space_to_depth")
def space_to_depth(x, block_size):
    """Inverse of depth_to_space: [N, C, H*b, W*b] -> [N, C*b*b, H, W]."""
    x = np.asarray(x)
    b = int(scalar(block_size, int))
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4)
    return y.reshape(n, c * b * b, h // b, w // b)


@op("pixel_shuffle")
def pixel_shuffle(x, upscale_factor):
    """[N, C*r*r, H, W] -> [N, C, H*r, W*r], channel-row-column order (PyTorch's PixelShuffle)."""
    x = np.asarray(x)
    r = int(scalar(upscale_factor, int))
    n, c, h, w = x.shape
    y = x.reshape(n, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (r * r), h * r, w * r)


@op("band_part")
def band_part(x, lower=-1, upper=-1):
    x = f32(x)
    rows, cols = x.shape[-2:]
    i, j = np.ogrid[:rows, :cols]
    lo, up = int(scalar(lower, int)), int(scalar(upper, int))
    keep = ((lo < 0) | (i - j <= lo)) & ((up < 0) | (j - i <= up))
    return np.where(keep, x, np.float32(0))
