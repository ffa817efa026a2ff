"""Reductions over axes (``reduce_*``), argmax/argmin; sums accumulate in float64."""

from __future__ import annotations

import numpy as np

from device_bench.mil.ops import axis_of, ints, op


def _axes(x: np.ndarray, axes):
    return None if axes is None else tuple(sorted({a % max(x.ndim, 1) for a in ints(axes)}))


def _reduction(fn):
    def impl(x, axes=None, keep_dims=False):
        x = np.asarray(x)
        d = x.astype(np.float64) if x.dtype.kind == "f" else x
        return fn(d, _axes(x, axes), bool(keep_dims))
    return impl


_REDUCTIONS = {
    "reduce_sum": lambda x, a, k: np.sum(x, axis=a, keepdims=k),
    "reduce_mean": lambda x, a, k: np.mean(x, axis=a, keepdims=k),
    "reduce_max": lambda x, a, k: np.max(x, axis=a, keepdims=k),
    "reduce_min": lambda x, a, k: np.min(x, axis=a, keepdims=k),
    "reduce_prod": lambda x, a, k: np.prod(x, axis=a, keepdims=k),
    "reduce_l1_norm": lambda x, a, k: np.sum(np.abs(x), axis=a, keepdims=k),
    "reduce_l2_norm": lambda x, a, k: np.sqrt(np.sum(np.square(x), axis=a, keepdims=k)),
    "reduce_sum_square": lambda x, a, k: np.sum(np.square(x), axis=a, keepdims=k),
    "reduce_log_sum": lambda x, a, k: np.log(np.sum(x, axis=a, keepdims=k)),
    "reduce_log_sum_exp": lambda x, a, k: _log_sum_exp(x, a, k),
}


def _log_sum_exp(x, axes, keep):
    m = np.max(x, axis=axes, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return out if keep else np.squeeze(out, axis=axes)


for _name, _fn in _REDUCTIONS.items():
    op(_name)(_reduction(_fn))


def _arg(fn):
    def impl(x, axis=-1, keep_dims=False, output_dtype="int32"):
        x = np.asarray(x)
        a = axis_of(axis, x.ndim)
        out = fn(x, axis=a)
        return np.expand_dims(out, a) if bool(keep_dims) else out
    return impl


op("reduce_argmax")(_arg(np.argmax))
op("reduce_argmin")(_arg(np.argmin))
