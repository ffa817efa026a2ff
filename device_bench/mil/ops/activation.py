"""Activations (MIL ``activation.py`` ops) and softmax. Formulas follow the MIL op definitions."""

from __future__ import annotations

import numpy as np

from device_bench.mil.ops import Unsupported, axis_of, f32, op, scalar
from device_bench.mil.ops.elementwise import erf


def _d(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))      # = 1 / (1 + e^-x), without overflow for large |x|


def _channel(alpha, x: np.ndarray) -> np.ndarray:
    """A per-channel parameter (shape [C]) broadcast along axis 1 of x ([N, C, ...]); scalars pass through."""
    a = f32(alpha)
    if a.ndim == 1 and a.size > 1:
        return a.reshape((1, -1) + (1,) * (x.ndim - 2)) if x.ndim >= 2 else a
    return a


@op("relu")
def relu(x):
    return np.maximum(f32(x), np.float32(0))


@op("relu6")
def relu6(x):
    return np.minimum(np.maximum(f32(x), np.float32(0)), np.float32(6))


@op("leaky_relu")
def leaky_relu(x, alpha=0.01):
    x = f32(x)
    return np.where(x >= 0, x, f32(alpha) * x)


@op("prelu")
def prelu(x, alpha):
    x = f32(x)
    return np.where(x > 0, x, _channel(alpha, x) * x)


@op("elu")
def elu(x, alpha=1.0):
    x = _d(x)
    return np.where(x > 0, x, scalar(alpha) * np.expm1(np.minimum(x, 0)))


@op("sigmoid")
def sigmoid(x):
    return _sigmoid(_d(x))


@op("sigmoid_hard")
def sigmoid_hard(x, alpha=0.2, beta=0.5):
    return np.minimum(np.maximum(f32(alpha) * f32(x) + f32(beta), np.float32(0)), np.float32(1))


@op("silu")
def silu(x):
    x = _d(x)
    return x * _sigmoid(x)


@op("gelu")
def gelu(x, mode="EXACT"):
    x = _d(x)
    mode = str(mode)
    if mode == "EXACT":
        return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(1.702 * x)
    raise Unsupported(f"gelu mode '{mode}' is not supported (EXACT, TANH_APPROXIMATION, SIGMOID_APPROXIMATION)")


@op("softplus")
def softplus(x):
    return np.logaddexp(0.0, _d(x))


@op("softplus_parametric")
def softplus_parametric(x, alpha, beta):
    x = _d(x)
    return _channel(alpha, x) * np.logaddexp(0.0, _channel(beta, x) * x)


@op("softsign")
def softsign(x):
    x = _d(x)
    return x / (1.0 + np.abs(x))


@op("scaled_tanh")
def scaled_tanh(x, alpha=1.0, beta=1.0):
    return scalar(alpha) * np.tanh(scalar(beta) * _d(x))


@op("linear_activation")
def linear_activation(x, alpha=1.0, beta=0.0):
    return f32(alpha) * f32(x) + f32(beta)


@op("clamped_relu")
def clamped_relu(x, alpha=0.0, beta=6.0):
    x = f32(x)
    return np.minimum(np.where(x >= 0, x, f32(alpha) * x), f32(beta))


@op("thresholded_relu")
def thresholded_relu(x, alpha=1.0):
    x = f32(x)
    return np.where(x >= f32(alpha), x, np.float32(0))


@op("softmax")
def softmax(x, axis=-1):
    x = _d(x)
    a = axis_of(axis, x.ndim)
    e = np.exp(x - np.max(x, axis=a, keepdims=True))
    return e / np.sum(e, axis=a, keepdims=True)
