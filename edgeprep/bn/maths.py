"""BatchNorm arithmetic in plain numpy: folding into linear layers, and streamed per-channel statistics.

No TensorFlow here, so quantization-aware training (fold-aware fake-quant) and tests can import it cheaply.
All arithmetic is float64; results are float32, the dtype the weights are stored and exported in.

Inference-mode BatchNorm on channel ``c`` is an affine map::

    y = gamma * (x - mean) / sqrt(var + eps) + beta  =  s * x + t,
    s = gamma / sqrt(var + eps),  t = beta - mean * s

so a BN after a linear layer ``z = W x + b`` folds into it (``W' = s W`` per output channel, ``b' = s b + t``),
and a BN before one folds into its input side (``W' = W s`` per input channel, ``b' = b + W t``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def bn_affine(gamma, beta, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(s, t)`` with ``BN(x) = s * x + t``; ``gamma``/``beta`` may be None (scale/center off)."""
    mean = np.asarray(mean, np.float64)
    var = np.asarray(var, np.float64)
    gamma = np.ones_like(mean) if gamma is None else np.asarray(gamma, np.float64)
    beta = np.zeros_like(mean) if beta is None else np.asarray(beta, np.float64)
    s = gamma / np.sqrt(var + float(eps))
    return s, beta - mean * s


def _channel_view(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    """Broadcast shape that puts a flat per-channel vector onto ``axes`` (row-major over them) of ``shape``."""
    view = [1] * len(shape)
    for a in axes:
        view[a] = shape[a]
    return tuple(view)


def _axes(channel_axis: int | tuple[int, ...], ndim: int) -> tuple[int, ...]:
    axes = (channel_axis,) if isinstance(channel_axis, int) else tuple(channel_axis)
    return tuple(sorted(a % ndim for a in axes))


def fold_bn_params(kernel, bias, gamma, beta, mean, var, eps: float,
                   channel_axis: int | tuple[int, ...] = -1) -> tuple[np.ndarray, np.ndarray]:
    """Fold a BN that follows a linear layer into the layer's kernel and bias.

    ``channel_axis`` is the kernel axis (or axes, flattened row-major) that indexes the layer's output channels:
    ``-1`` for Conv1D/2D/3D (``..., in, out``) and Dense (``in, out``); ``(2, 3)`` for DepthwiseConv2D
    (``kh, kw, in, multiplier``: output channel ``i * multiplier + m``); the pointwise kernel of a SeparableConv2D
    is a Conv2D kernel. ``bias`` may be None (a layer without bias). Returns float32 ``(kernel, bias)``.
    """
    kernel = np.asarray(kernel, np.float64)
    s, t = bn_affine(gamma, beta, mean, var, eps)
    axes = _axes(channel_axis, kernel.ndim)
    if int(np.prod([kernel.shape[a] for a in axes])) != s.size:
        raise ValueError(f"kernel {kernel.shape} has {np.prod([kernel.shape[a] for a in axes])} output channels on "
                         f"axes {axes}, the BN has {s.size}")
    b = np.zeros(s.size) if bias is None else np.asarray(bias, np.float64).reshape(-1)
    folded = kernel * s.reshape(_channel_view(kernel.shape, axes))
    return folded.astype(np.float32), (b * s + t).astype(np.float32)


def fold_bn_into_next(kernel, bias, gamma, beta, mean, var, eps: float, in_axis: int,
                      out_axis: int | tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Fold a BN that precedes a linear layer into that layer (valid only where the layer sees no padding).

    ``in_axis`` indexes the kernel's input channels; ``out_axis`` its output channels (as in ``fold_bn_params``).
    Conv2D/Dense: ``in_axis=-2, out_axis=-1``; DepthwiseConv2D: ``in_axis=2, out_axis=(2, 3)``.
    """
    kernel = np.asarray(kernel, np.float64)
    s, t = bn_affine(gamma, beta, mean, var, eps)
    in_axis = in_axis % kernel.ndim
    outs = _axes(out_axis, kernel.ndim)
    folded = kernel * s.reshape(_channel_view(kernel.shape, (in_axis,)))
    shifted = kernel * t.reshape(_channel_view(kernel.shape, (in_axis,)))
    keep = tuple(a for a in range(kernel.ndim) if a not in outs)
    extra = shifted.sum(axis=keep).reshape(-1)   # sum over spatial and input axes -> one value per output channel
    b = np.zeros(extra.size) if bias is None else np.asarray(bias, np.float64).reshape(-1)
    return folded.astype(np.float32), (b + extra).astype(np.float32)


def reduce_axes(ndim: int, axis: int) -> tuple[int, ...]:
    """The axes a BN on ``axis`` averages over (all but the channel axis)."""
    return tuple(a for a in range(ndim) if a != axis % ndim)


@dataclass
class Moments:
    """Exact streamed per-channel count, mean and sum of squared deviations (Chan et al.'s parallel merge).

    Memory is one vector per statistic whatever the number of samples; merging batches is exact up to float64
    rounding, so the result equals the statistics of all samples at once.
    """

    count: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None

    def update(self, batch_count: int, batch_mean: np.ndarray, batch_m2: np.ndarray) -> None:
        if self.mean is None:
            self.count, self.mean, self.m2 = batch_count, batch_mean.copy(), batch_m2.copy()
            return
        total = self.count + batch_count
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (batch_count / total)
        self.m2 = self.m2 + batch_m2 + delta ** 2 * (self.count * batch_count / total)
        self.count = total

    @property
    def variance(self) -> np.ndarray:
        """Population (biased) variance, as Keras' BatchNormalization computes batch variance."""
        return self.m2 / max(self.count, 1)


def batch_moments(x: np.ndarray, axis: int) -> tuple[int, np.ndarray, np.ndarray]:
    """``(count, mean, m2)`` per channel of one batch: float64 accumulation, compensated two-pass."""
    x = np.asarray(x)
    if x.dtype != np.float64:
        x = x.astype(np.float32, copy=False)
    axes = reduce_axes(x.ndim, axis)
    count = int(np.prod([x.shape[a] for a in axes]))
    mean = x.mean(axis=axes, dtype=np.float64)
    centred = x - np.expand_dims(mean, axes).astype(x.dtype)
    s1 = centred.sum(axis=axes, dtype=np.float64)       # rounding left in the mean, corrected below
    m2 = (centred * centred).sum(axis=axes, dtype=np.float64) - s1 * s1 / count
    return count, mean + s1 / count, np.maximum(m2, 0.0)


class Welford:
    """Running mean and variance of a stream of vectors (here: the per-batch channel means)."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def add(self, v: np.ndarray) -> None:
        v = np.asarray(v, np.float64)
        self.n += 1
        if self.mean is None:
            self.mean, self.m2 = v.copy(), np.zeros_like(v)
            return
        delta = v - self.mean
        self.mean = self.mean + delta / self.n
        self.m2 = self.m2 + delta * (v - self.mean)

    @property
    def variance(self) -> np.ndarray | None:
        """Sample variance across the stream (None with fewer than two entries)."""
        return None if self.n < 2 else self.m2 / (self.n - 1)
