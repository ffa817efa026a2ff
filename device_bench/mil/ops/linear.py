"""Dense algebra: linear, matmul, einsum. float32 operands, float32 BLAS accumulation."""

from __future__ import annotations

import numpy as np

from device_bench.mil.ops import f32, op


@op("linear")
def linear(x, weight, bias=None):
    """``x @ weight.T + bias``; weight is [D_out, D_in]."""
    y = np.matmul(f32(x), f32(weight).T)
    return y if bias is None else y + f32(bias)


@op("matmul")
def matmul(x, y, transpose_x=False, transpose_y=False):
    """numpy matmul semantics (rank-1 operands promoted and the added axis removed); optional transposes."""
    a, b = f32(x), f32(y)
    if bool(transpose_x) and a.ndim >= 2:
        a = np.swapaxes(a, -1, -2)
    if bool(transpose_y) and b.ndim >= 2:
        b = np.swapaxes(b, -1, -2)
    return np.matmul(a, b)


@op("einsum", tuples=("values",))
def einsum(values, equation):
    return np.einsum(str(equation), *[f32(v) for v in values])
