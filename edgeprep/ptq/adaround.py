"""AdaRound (Nagel et al., 2020): learn, per weight, whether to round up or down on the int8 grid.

Layer by layer in execution order, the layer's input is taken from the quantized graph (the layers before it
already rounded, activations fake-quantized with their final ranges) and its target from the float graph. Each
weight is ``s * clip(floor(w / s) + h(V), -127, 127)`` with ``h`` a rectified sigmoid; the loss is the output's
reconstruction error (summed over channels, averaged over positions; after the fused ReLU when there is one) plus
``λ Σ 1 - |2h - 1|^β``, β annealed from 20 to 2 after a warm-up, which drives every ``h`` to 0 or 1. The result is
a kernel on the grid of ``edgeprep.ptq.grid``: the scales are unchanged (a channel's largest weight keeps its
value), only the rounding direction moves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeprep.ptq import grid

ZETA, GAMMA = 1.1, -0.1
# XLA compiles the element-wise maths of a step in 0.1-0.5 s and runs it 2-4x faster than TensorFlow's separate
# kernels: measured, it pays back above about this many elements x steps (a 100k-weight kernel at 300 iterations)
XLA_MIN_WORK = 3e7
# convolutions over at most this many input channels train as a matrix product over their input patches, when
# those take at most this much memory
IM2COL_MAX_CHANNELS, IM2COL_MAX_BYTES = 4, 2 ** 28


@dataclass(frozen=True)
class AdaRoundConfig:
    iterations: int = 1000
    batch_size: int = 32
    reg_weight: float = 0.01
    beta: tuple[float, float] = (20.0, 2.0)
    warm_up: float = 0.2
    learning_rate: float = 1e-2
    seed: int = 0


@dataclass
class Rounded:
    kernels: tuple            # the rounded kernels (float, on the grid), one per kernel of the layer
    mse_nearest: float        # the layer's output MSE with nearest rounding, on its calibration inputs
    mse: float                # ... and with the learned rounding
    flipped: float            # fraction of weights rounded away from nearest


def _rect_sigmoid(v):
    import tensorflow as tf

    return tf.clip_by_value(tf.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


@dataclass
class _Kernel:
    """One kernel's rounding problem, in numpy: ``w = scale * (base + free * h(v))``; ``base`` is the floor of
    ``w / scale`` (its nearest integer where the weight is fixed: a channel's largest sets the scale), ``free`` 1
    where the rounding is learned, else 0. ``floor + h`` stays within [-127, 127], so the grid's clip is a no-op."""

    scale: np.ndarray
    base: np.ndarray
    free: np.ndarray
    near: np.ndarray
    init: np.ndarray          # v with h(v) = the float weight's fractional part: training starts at the float kernel

    @classmethod
    def of(cls, w: np.ndarray, kind: str) -> _Kernel:
        scale = grid.scales(w, kind)
        ratio = w / scale
        floor, near = np.floor(ratio), np.round(ratio)
        fixed = np.abs(ratio) >= grid.QMAX - 0.5
        p = np.clip((ratio - floor - GAMMA) / (ZETA - GAMMA), 1e-4, 1 - 1e-4)
        return cls(scale, np.where(fixed, near, floor).astype(np.float32), (~fixed).astype(np.float32),
                   near.astype(np.float32), (np.log(p) - np.log1p(-p)).astype(np.float32))


def round_layer(layer, kind: str, kernels: tuple, bias: np.ndarray, x: np.ndarray, target: np.ndarray,
                activation, cfg: AdaRoundConfig, mid=None) -> Rounded:
    """Learn the rounding of ``kernels`` (numpy, float) so that ``activation(layer_op(x) + bias)`` matches
    ``activation(target)``; ``mid`` is the fake quantizer between a SeparableConv2D's two ops."""
    import tensorflow as tf

    from edgeprep.qat.model import apply_linear

    ks = [_Kernel.of(k, kd) for k, kd in zip(kernels, grid.kinds_of(kind))]
    b = tf.constant(np.asarray(bias, np.float32))
    act = activation or (lambda t: t)

    def pack(ws):      # what apply_linear takes: one kernel, or a SeparableConv2D's pair
        return tuple(ws) if kind == "separable" else ws[0]

    def output(xb, w):
        return act(apply_linear(layer, xb, w, mid) + b)

    vs = _train(*_training_op(layer, kind, mid, x), lambda y: act(y + b), ks, act(tf.constant(target)), cfg)
    hard = pack([k.scale * (k.base + k.free * (v.numpy() >= 0)) for k, v in zip(ks, vs)])
    nearest = pack([k.scale * k.near for k in ks])
    mse_n, mse_a = _mse(output, x, target, act, nearest), _mse(output, x, target, act, hard)
    rounded = hard if mse_a <= mse_n else nearest     # never worse than nearest on the data it learned from
    rounded = rounded if kind == "separable" else (rounded,)
    flipped = float(np.mean(np.concatenate([(np.round(r / k.scale) != k.near).reshape(-1)
                                            for r, k in zip(rounded, ks)])))
    return Rounded(rounded, mse_n, min(mse_a, mse_n), flipped)


def _training_op(layer, kind: str, mid, x: np.ndarray):
    """``(inputs, op)``: the layer's linear op as the training loop runs it, ``op(batch of inputs, kernel)``.

    ``apply_linear`` on ``x``, but as a matrix product where TensorFlow's convolution kernels are slow: a 1x1
    convolution (also a SeparableConv2D's pointwise one; its weight gradient runs twice as fast), and a
    convolution over few input channels (an image stem: three times as fast) over its input patches, extracted
    once."""
    import tensorflow as tf

    from edgeprep.qat.model import apply_linear

    generic = (tf.constant(x), lambda xb, w: apply_linear(layer, xb, w, mid))
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return generic
    if kind == "separable":
        return tf.constant(x), lambda xb, w: _matmul_last(_depthwise(layer, xb, w[0], mid), w[1])
    if kind != "conv" or getattr(layer, "groups", 1) != 1:
        return generic
    if all(d == 1 for d in layer.kernel_size):
        strided = x[(slice(None), *(slice(None, None, s) for s in layer.strides))]     # the pixels it reads
        return tf.constant(strided), _matmul_last
    if _patches_fit(layer, x):
        patches = tf.image.extract_patches(x, (1, *layer.kernel_size, 1), (1, *layer.strides, 1),
                                           (1, *layer.dilation_rate, 1), layer.padding.upper())
        return patches, lambda pb, w: _matmul_last(pb, tf.reshape(w, (1, 1, -1, w.shape[-1])))
    return generic


def _depthwise(layer, x, kernel, mid):
    """A SeparableConv2D's depthwise op and the quantizer after it (``apply_linear``'s first half)."""
    from keras import ops

    y = ops.depthwise_conv(x, kernel, strides=layer.strides, padding=layer.padding, data_format=layer.data_format,
                           dilation_rate=layer.dilation_rate)
    return mid(y) if mid else y


def _patches_fit(layer, x: np.ndarray) -> bool:
    """Does a convolution train over its input patches: 2-D, few input channels, the patches (counted as with
    "same" padding) within ``IM2COL_MAX_BYTES``?"""
    if len(layer.kernel_size) != 2 or x.shape[-1] > IM2COL_MAX_CHANNELS:
        return False
    rows, cols = (-(-n // s) for n, s in zip(x.shape[1:3], layer.strides))
    return len(x) * rows * cols * int(np.prod(layer.kernel_size)) * x.shape[-1] * 4 <= IM2COL_MAX_BYTES


def _matmul_last(x, w):
    """``x`` (..., c) times a 1x1 kernel ``w`` (1, 1, c, out): a 1x1 convolution as one matrix product."""
    import tensorflow as tf

    y = tf.matmul(tf.reshape(x, (-1, w.shape[-2])), tf.reshape(w, w.shape[-2:]))
    return tf.reshape(y, tf.concat([tf.shape(x)[:-1], w.shape[-1:]], 0))


def _train(xs, op, post, ks: list[_Kernel], ts, cfg: AdaRoundConfig) -> list:
    """The rounding variables after ``cfg.iterations`` Adam steps, the whole loop one graph.

    ``op(xs[batch], w)`` is the layer's linear op, ``post(y)`` the bias and activation after it, ``ts`` the target
    after the activation. The loss's gradient reaches the kernels through TensorFlow's kernels for the op; from
    there to ``v`` (soft rounding, regulariser) and Adam (Keras's update) it is written out per weight: the same
    maths as differentiating the whole loss, in a third of the operations and traced in a fraction of the time (a
    Keras optimizer and AutoGraph cost a second a layer). Large tensors' element-wise maths run XLA-compiled
    (``XLA_MIN_WORK``); XLA's own CPU convolutions are slower than TensorFlow's, so the op stays outside."""
    import tensorflow as tf

    n, batch = len(ts), min(cfg.batch_size, len(ts))
    update = _updater(ks, cfg)
    out_elems = batch * ts.shape[1:].num_elements()
    loss_grad = tf.function(lambda y, idx: _loss_grad(post, y, tf.gather(ts, idx)), autograph=False,
                            jit_compile=True) if out_elems * cfg.iterations >= XLA_MIN_WORK else \
        (lambda y, idx: _loss_grad(post, y, tf.gather(ts, idx)))

    def step(it, vs, ms, ss, ws):
        idx = tf.random.stateless_uniform((batch,), (cfg.seed, it), 0, n, dtype=tf.int32)
        with tf.GradientTape() as tape:
            tape.watch(ws)
            y = op(tf.gather(xs, idx), ws[0] if len(ws) == 1 else tuple(ws))
        gws = tape.gradient(y, ws, output_gradients=loss_grad(y, idx))
        return (it + 1, *update(it, vs, ms, ss, gws))

    @tf.function(autograph=False)
    def loop(vs):
        zeros = [tf.zeros_like(v) for v in vs]
        ws = [tf.constant(k.scale) * (k.base + k.free * _rect_sigmoid(v)) for k, v in zip(ks, vs)]
        return tf.while_loop(lambda it, *_: it < cfg.iterations, step, (tf.constant(0), vs, zeros, zeros, ws))[1]

    return loop([tf.constant(k.init) for k in ks])


def _loss_grad(post, y, tb):
    """The gradient, wrt the op's output ``y``, of the reconstruction loss (summed over channels, averaged over
    positions)."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(y)
        loss = tf.reduce_mean(tf.reduce_sum(tf.square(post(y) - tb), axis=-1))
    return tape.gradient(loss, y)


def _updater(ks: list[_Kernel], cfg: AdaRoundConfig):
    """``update(it, vs, ms, ss, gws) -> (vs, ms, ss, ws)``: one Adam step of the rounding variables ``vs`` from the
    loss's gradient ``gws`` wrt the soft kernels, and the soft kernels of the new ``vs``.

    With ``h = clip(sigmoid(v) (ζ - γ) + γ, 0, 1)`` and ``a = |2h - 1|``: d loss / d h = scale · free · gw, the
    regulariser's d(1 - a^β) / dh = -2β sign(2h - 1) a^(β-1) (``exp``/``log``: ``tf.pow`` and its gradient were most
    of a large kernel's step), and dh / dv = (ζ - γ) σ (1 - σ) inside the clip, 0 outside."""
    import tensorflow as tf

    consts = [(tf.constant(k.scale), tf.constant(k.base), tf.constant(k.free)) for k in ks]
    warm = float(int(cfg.iterations * cfg.warm_up))
    b_hi, b_lo = cfg.beta
    b1, b2, eps = 0.9, 0.999, 1e-7

    def update(it, vs, ms, ss, gws):
        itf = tf.cast(it, tf.float32)
        beta = b_hi + (b_lo - b_hi) * tf.maximum(itf - warm, 0.0) / max(1.0, cfg.iterations - warm)
        lam = tf.where(itf < warm, 0.0, cfg.reg_weight)
        alpha = cfg.learning_rate * tf.sqrt(1.0 - tf.pow(b2, itf + 1.0)) / (1.0 - tf.pow(b1, itf + 1.0))
        out = ([], [], [], [])
        for (scale, base, free), v, m, s, gw in zip(consts, vs, ms, ss, gws):
            sig = tf.sigmoid(v)
            raw = sig * (ZETA - GAMMA) + GAMMA
            u = 2.0 * tf.clip_by_value(raw, 0.0, 1.0) - 1.0
            d_reg = -2.0 * beta * tf.sign(u) * tf.exp((beta - 1.0) * tf.math.log(tf.abs(u)))
            d_h = gw * scale * free + lam * d_reg
            g = tf.where((raw >= 0.0) & (raw <= 1.0), d_h * ((ZETA - GAMMA) * sig * (1.0 - sig)), 0.0)
            m = m + (g - m) * (1.0 - b1)
            s = s + (tf.square(g) - s) * (1.0 - b2)
            v = v - m * alpha / (tf.sqrt(s) + eps)
            for acc, value in zip(out, (v, m, s, scale * (base + free * _rect_sigmoid(v)))):
                acc.append(value)
        return out

    n = sum(k.base.size for k in ks)
    return tf.function(update, autograph=False, jit_compile=True) if n * cfg.iterations >= XLA_MIN_WORK else update


def _mse(output, x, target, act, w, batch: int = 64) -> float:
    import tensorflow as tf

    total, count = 0.0, 0
    for i in range(0, len(x), batch):
        d = output(tf.constant(x[i:i + batch]), w) - act(tf.constant(target[i:i + batch]))
        total += float(tf.reduce_sum(tf.square(d)))
        count += int(np.prod(d.shape))
    return total / max(count, 1)
