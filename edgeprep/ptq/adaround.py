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


def round_layer(layer, kind: str, kernels: tuple, bias: np.ndarray, x: np.ndarray, target: np.ndarray,
                activation, cfg: AdaRoundConfig, mid=None) -> Rounded:
    """Learn the rounding of ``kernels`` (numpy, float) so that ``activation(layer_op(x) + bias)`` matches
    ``activation(target)``; ``mid`` is the fake quantizer between a SeparableConv2D's two ops."""
    import tensorflow as tf

    from edgeprep.qat.model import apply_linear

    kinds = grid.kinds_of(kind)
    scales = [grid.scales(k, kd) for k, kd in zip(kernels, kinds)]
    floors = [np.floor(k / s) for k, s in zip(kernels, scales)]
    rest = [k / s - f for k, s, f in zip(kernels, scales, floors)]
    # a channel's largest weight must stay where it is (it sets the scale): no choice for it
    fixed = [np.abs(k / s) >= grid.QMAX - 0.5 for k, s in zip(kernels, scales)]
    near = [np.round(k / s) for k, s in zip(kernels, scales)]
    p = [np.clip((r - GAMMA) / (ZETA - GAMMA), 1e-4, 1 - 1e-4) for r in rest]
    init = [np.log(q) - np.log1p(-q) for q in p]       # h(V) = rest: the training starts at the float weights
    vs = [tf.Variable(v.astype(np.float32)) for v in init]
    cs = dict(s=[tf.constant(s) for s in scales], f=[tf.constant(f.astype(np.float32)) for f in floors],
              fixed=[tf.constant(m) for m in fixed], near=[tf.constant(n.astype(np.float32)) for n in near])
    b = tf.constant(np.asarray(bias, np.float32))
    act = activation or (lambda t: t)

    def pack(ks):      # what apply_linear takes: one kernel, or a SeparableConv2D's pair
        return tuple(ks) if kind == "separable" else ks[0]

    def weights(hard: bool):
        out = []
        for i, v in enumerate(vs):
            h = tf.cast(v >= 0, tf.float32) if hard else _rect_sigmoid(v)
            q = tf.where(cs["fixed"][i], cs["near"][i], cs["f"][i] + h)
            out.append(cs["s"][i] * tf.clip_by_value(q, -grid.QMAX, grid.QMAX))
        return pack(out)

    def output(xb, w):
        return act(apply_linear(layer, xb, w, mid) + b)

    def recon(xb, tb, w):
        return tf.reduce_mean(tf.reduce_sum(tf.square(output(xb, w) - act(tb)), axis=-1))

    opt = tf.keras.optimizers.Adam(cfg.learning_rate)
    xs, ts = tf.constant(x), tf.constant(target)
    n = len(x)
    batch = min(cfg.batch_size, n)
    warm = float(int(cfg.iterations * cfg.warm_up))
    b_hi, b_lo = cfg.beta

    @tf.function(autograph=True)
    def train():      # the whole loop in one graph: per-step Python dispatch cost more than small layers' maths
        for it in tf.range(cfg.iterations):
            idx = tf.random.stateless_uniform((batch,), (cfg.seed, it), 0, n, dtype=tf.int32)
            xb, tb = tf.gather(xs, idx), tf.gather(ts, idx)
            itf = tf.cast(it, tf.float32)
            frac = tf.maximum(itf - warm, 0.0) / max(1.0, cfg.iterations - warm)
            beta = b_hi + (b_lo - b_hi) * frac
            lam = tf.where(itf < warm, 0.0, cfg.reg_weight)
            with tf.GradientTape() as tape:
                loss = recon(xb, tb, weights(False))
                reg = tf.add_n([tf.reduce_sum(1.0 - tf.pow(tf.abs(2.0 * _rect_sigmoid(v) - 1.0), beta))
                                for v in vs])
                total = loss + lam * reg
            opt.apply_gradients(zip(tape.gradient(total, vs), vs))

    train()

    hard = weights(True)
    nearest = [tf.constant((n * s).astype(np.float32)) for n, s in zip(near, scales)]
    mse_n = _mse(output, x, target, act, pack(nearest))
    mse_a = _mse(output, x, target, act, hard)
    rounded = tuple(np.asarray(h.numpy(), np.float32) for h in (hard if kind == "separable" else (hard,)))
    if mse_a > mse_n:        # never worse than nearest on the data it learned from
        rounded, mse_a = tuple(np.asarray(k.numpy(), np.float32) for k in nearest), mse_n
    flipped = float(np.mean(np.concatenate([(np.round(r / s) != n).reshape(-1)
                                            for r, s, n in zip(rounded, scales, near)])))
    return Rounded(rounded, mse_n, mse_a, flipped)


def _mse(output, x, target, act, w, batch: int = 64) -> float:
    import tensorflow as tf

    total, count = 0.0, 0
    for i in range(0, len(x), batch):
        d = output(tf.constant(x[i:i + batch]), w) - act(tf.constant(target[i:i + batch]))
        total += float(tf.reduce_sum(tf.square(d)))
        count += int(np.prod(d.shape))
    return total / max(count, 1)
