"""Normalizations: batch_norm, instance_norm, layer_norm, l2_norm, local_response_norm.

Statistics are computed in float64 and the result rounded once to the output type.
"""

from __future__ import annotations

import numpy as np

from device_bench.mil.ops import ints, op, scalar


def _d(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _affine(y: np.ndarray, gamma, beta, shape) -> np.ndarray:
    if gamma is not None:
        y = y * _d(gamma).reshape(shape)
    if beta is not None:
        y = y + _d(beta).reshape(shape)
    return y


def _standardize(x: np.ndarray, axes: tuple[int, ...], epsilon) -> np.ndarray:
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    return (x - mu) / np.sqrt(var + scalar(epsilon))


@op("batch_norm")
def batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    x = _d(x)
    channel = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - _d(mean).reshape(channel)) / np.sqrt(_d(variance).reshape(channel) + scalar(epsilon))
    return _affine(y, gamma, beta, channel)


@op("instance_norm")
def instance_norm(x, gamma=None, beta=None, epsilon=1e-5):
    x = _d(x)
    return _affine(_standardize(x, tuple(range(2, x.ndim)), epsilon), gamma, beta, (1, -1) + (1,) * (x.ndim - 2))


@op("layer_norm")
def layer_norm(x, axes=None, gamma=None, beta=None, epsilon=1e-5):
    x = _d(x)
    axes = tuple(sorted(a % x.ndim for a in ints(axes))) if axes is not None else tuple(range(x.ndim))
    return _affine(_standardize(x, axes, epsilon), gamma, beta,
                   [x.shape[d] if d in axes else 1 for d in range(x.ndim)])


@op("l2_norm")
def l2_norm(x, epsilon=1e-6):
    """x / sqrt(sum(x^2) + epsilon) over the last three axes."""
    x = _d(x)
    axes = tuple(range(max(x.ndim - 3, 0), x.ndim))
    return x / np.sqrt(np.sum(x * x, axis=axes, keepdims=True) + scalar(epsilon))


@op("local_response_norm")
def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """x / (k + alpha/size * sum of x^2 over ``size`` neighbouring channels)^beta."""
    x = _d(x)
    n = int(scalar(size, int))
    sq = np.pad(x * x, [(0, 0), ((n - 1) // 2, n // 2)] + [(0, 0)] * (x.ndim - 2))
    acc = sum(sq[:, i:i + x.shape[1]] for i in range(n))
    return x / (scalar(k) + scalar(alpha) / n * acc) ** scalar(beta)
