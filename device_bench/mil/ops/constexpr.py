"""Weight decompression ops that coremltools.optimize emits, evaluated once when the program is loaded.

iOS16: ``constexpr_affine_dequantize`` (8-bit linear), ``constexpr_lut_to_dense`` (palettization, indices packed
in bytes), ``constexpr_sparse_to_dense`` (bit mask packed in bytes), ``constexpr_cast``. iOS18:
``constexpr_blockwise_shift_scale`` (block-wise 4/8-bit linear), ``constexpr_lut_to_dense`` with per-block tables
and vector palettes, ``constexpr_sparse_to_dense`` with a uint1 mask, and the sparse variants
``constexpr_lut_to_sparse`` / ``constexpr_sparse_blockwise_shift_scale`` (two outputs: mask, values).
"""

from __future__ import annotations

import numpy as np

from device_bench.mil.blob import unpack_bits
from device_bench.mil.ops import Unsupported, axis_of, f32, ints, op
from device_bench.mil.ops.elementwise import cast


@op("constexpr_affine_dequantize")
def affine_dequantize(quantized_data, zero_point, scale, axis):
    q = np.asarray(quantized_data)
    a = axis_of(axis, q.ndim)

    def along(v):
        v = f32(v)
        return v.reshape([-1 if d == a else 1 for d in range(q.ndim)]) if v.ndim == 1 and v.size > 1 else v
    return (f32(q) - along(zero_point)) * along(scale)


def _blockwise(param, shape) -> np.ndarray:
    """A per-block parameter repeated to ``shape`` (each axis of ``shape`` a multiple of the parameter's)."""
    p = f32(param)
    if p.ndim != len(shape):
        raise Unsupported(f"block-wise parameter of rank {p.ndim} for data of rank {len(shape)}")
    for axis, (n, m) in enumerate(zip(shape, p.shape)):
        if n % m:
            raise ValueError(f"axis {axis}: {n} is not a multiple of the {m} blocks")
        if n != m:
            p = np.repeat(p, n // m, axis=axis)
    return p


@op("constexpr_blockwise_shift_scale")
def blockwise_shift_scale(data, scale, offset=None):
    d = f32(data)
    if offset is not None:
        d = d - _blockwise(offset, d.shape)
    return d * _blockwise(scale, d.shape)


def _lut_dense(indices: np.ndarray, lut: np.ndarray, vector_axis) -> np.ndarray:
    """iOS18 look-up: lut [*G, P, V], each axis of G dividing the matching axis of ``indices``."""
    k = indices.ndim
    if lut.ndim != k + 2:
        raise ValueError(f"lut of rank {lut.ndim} for indices of rank {k} (expected {k + 2})")
    groups, v = lut.shape[:k], lut.shape[-1]
    group = np.zeros(indices.shape, np.int64)
    for axis, (n, g) in enumerate(zip(indices.shape, groups)):
        if n % g:
            raise ValueError(f"axis {axis}: {n} indices are not a multiple of {g} look-up tables")
        coord = (np.arange(n) // (n // g)).reshape([-1 if d == axis else 1 for d in range(k)])
        group = group * g + coord
    flat = lut.reshape(-1, lut.shape[-2], v)
    out = flat[group, indices.astype(np.int64)]                       # [*indices.shape, V]
    if v == 1:
        return out[..., 0]
    if vector_axis is None:
        raise ValueError("vector palettization (VECTOR_SIZE > 1) needs vector_axis")
    va = axis_of(vector_axis, k)
    out = np.moveaxis(out, -1, va + 1)                                 # the vector right after its axis
    shape = list(indices.shape)
    shape[va] *= v
    return out.reshape(shape)


@op("constexpr_lut_to_dense")
def lut_to_dense(indices, lut, shape=None, vector_axis=None):
    lut = f32(lut) if np.asarray(lut).dtype.kind == "f" else np.asarray(lut)
    if shape is not None:                                              # iOS16: indices packed in uint8 bytes
        dims = ints(shape)
        nbits = int(np.log2(lut.size))
        if 1 << nbits != lut.size:
            raise ValueError(f"a look-up table of {lut.size} entries is not a power of two")
        idx = unpack_bits(np.asarray(indices, np.uint8), nbits, int(np.prod(dims)))
        return lut.reshape(-1)[idx.astype(np.int64)].reshape(dims)
    return _lut_dense(np.asarray(indices), lut, vector_axis)


def _sparse(nonzero_data, mask: np.ndarray) -> np.ndarray:
    values = np.asarray(nonzero_data)
    if int(np.count_nonzero(mask)) != values.size:
        raise ValueError(f"the mask has {int(np.count_nonzero(mask))} set bits for {values.size} values")
    out = np.zeros(mask.shape, dtype=values.dtype)
    out[mask != 0] = values.reshape(-1)
    return out


@op("constexpr_sparse_to_dense")
def sparse_to_dense(nonzero_data, mask, shape=None):
    m = np.asarray(mask)
    if shape is not None:                                              # iOS16: bit mask packed in uint8 bytes
        dims = ints(shape)
        m = unpack_bits(m.astype(np.uint8), 1, int(np.prod(dims))).reshape(dims)
    return _sparse(nonzero_data, m)


@op("constexpr_lut_to_sparse")
def lut_to_sparse(indices_mask, indices_nonzero_data, lut, vector_axis=None):
    mask = np.asarray(indices_mask)
    dense = _lut_dense(_sparse(indices_nonzero_data, mask), f32(lut), vector_axis)
    if vector_axis is not None and f32(lut).shape[-1] > 1:
        mask = np.repeat(mask, f32(lut).shape[-1], axis=axis_of(vector_axis, mask.ndim))
    return mask, dense[mask != 0]


@op("constexpr_sparse_blockwise_shift_scale")
def sparse_blockwise_shift_scale(data_mask, nonzero_data, scale, offset=None):
    mask = np.asarray(data_mask)
    dense = blockwise_shift_scale(_sparse(nonzero_data, mask), scale, offset)
    return mask, dense[mask != 0]


@op("constexpr_cast")
def constexpr_cast(source_val, output_dtype):
    return cast(source_val, output_dtype)
