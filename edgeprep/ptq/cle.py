"""Cross-layer equalization (Nagel et al., 2019): rescale the channels between two linear layers so that each
channel's weight range is the same in both, leaving the float function unchanged.

For a pair ``A -> B`` where every channel ``c`` of A's output reaches B only through positively homogeneous ops
(ReLU, max-pooling, zero padding, dropout, reshape-free same-scale ops), ``A``'s output channel ``c`` is divided
by ``s_c`` and B's input channel ``c`` multiplied by it, with ``s_c = sqrt(r1_c / r2_c)`` (``r1``: the range of A's
channel, BatchNorm folded; ``r2``: the range of B's input channel). Pairs: conv/dense -> conv/depthwise/dense,
depthwise -> conv, and the depthwise -> pointwise pair inside a SeparableConv2D. ReLU6 is not positively
homogeneous (its clip at 6 moves): a pair with ReLU6 (or any other activation) between is left alone.

The weights of the Keras model are changed in place; ``equalize`` returns the pairs it scaled.
"""

from __future__ import annotations

import numpy as np

PASS_THROUGH = {"MaxPooling2D", "ZeroPadding2D", "Dropout", "SpatialDropout2D", "Identity", "GaussianDropout"}
S_LIMIT = 1e3


def _kind(layer) -> str | None:
    cls = type(layer).__name__
    if cls == "Conv2D" and getattr(layer, "groups", 1) == 1:
        return "conv"
    if cls == "DepthwiseConv2D" and layer.depth_multiplier == 1:
        return "depthwise"
    if cls == "SeparableConv2D" and layer.depth_multiplier == 1:
        return "separable"
    if cls == "Dense":
        return "dense"
    return None


def _out_kernel(layer, kind):
    """The variable whose last axis (depthwise: axis 2) is the layer's output channel."""
    return layer.pointwise_kernel if kind == "separable" else layer.kernel


def _in_kernel(layer, kind):
    """The variable whose axis -2 (depthwise: axis 2) is the layer's input channel."""
    return layer.depthwise_kernel if kind == "separable" else layer.kernel


def _act(step) -> str:
    return step.activation or "linear"


def pairs(steps) -> list[tuple]:
    """(A step, B step) pairs of a plan that can be equalized, and SeparableConv2D steps (their inner pair)."""
    out = []
    for s in steps:
        if s.kind != "linear" or _kind(s.layer) is None:
            continue
        if _kind(s.layer) == "separable":
            out.append((s, s))
        if _act(s) not in ("linear", "relu"):
            continue
        tail, relu = (s.consumers[0] if s.fold is not None else s), _act(s) == "relu"
        while len(tail.consumers) == 1:
            nxt = tail.consumers[0]
            cls = type(nxt.layer).__name__
            if nxt.kind == "act" and nxt.activation == "relu" and not relu:
                relu, tail = True, nxt
            elif cls in PASS_THROUGH:
                tail = nxt     # max-pool, padding and dropout commute with a positive per-channel scale
            elif nxt.kind == "linear" and _kind(nxt.layer) is not None and len(nxt.node.input_tensors) == 1:
                out.append((s, nxt))
                break
            else:
                break
    return out


def _ranges_out(step) -> np.ndarray:
    """A's per-output-channel weight range, its BatchNorm folded."""
    kind = _kind(step.layer)
    w = np.abs(np.asarray(_out_kernel(step.layer, kind).numpy()))
    r = w.max(axis=(0, 1, 3)) if kind == "depthwise" else w.reshape(-1, w.shape[-1]).max(axis=0)
    if step.fold is not None:
        bn = step.fold
        gamma = np.asarray(bn.gamma.numpy()) if bn.scale else 1.0
        r = r * np.abs(gamma / np.sqrt(np.asarray(bn.moving_variance.numpy()) + bn.epsilon))
    return r


def _ranges_in(layer) -> np.ndarray:
    kind = _kind(layer)
    w = np.abs(np.asarray(_in_kernel(layer, kind).numpy()))
    if kind in ("separable", "depthwise"):
        return w.max(axis=(0, 1, 3))
    return w.reshape(-1, w.shape[-2], w.shape[-1]).max(axis=(0, 2)) if w.ndim > 2 else w.max(axis=1)


def _scale_out(step, s: np.ndarray) -> None:
    """Divide A's output channel c by s_c (through its BatchNorm when one is folded into it)."""
    layer, kind = step.layer, _kind(step.layer)
    if step.fold is not None:
        bn = step.fold
        bn.gamma.assign(bn.gamma.numpy() / s)
        bn.beta.assign(bn.beta.numpy() / s)
        return
    k = _out_kernel(layer, kind)
    k.assign(k.numpy() / (s[None, None, :, None] if kind == "depthwise" else s))
    if layer.use_bias:
        layer.bias.assign(layer.bias.numpy() / s)


def _scale_in(layer, s: np.ndarray) -> None:
    kind = _kind(layer)
    k = _in_kernel(layer, kind)
    v = k.numpy()
    if kind in ("separable", "depthwise"):
        k.assign(v * s[None, None, :, None])
    else:
        k.assign(v * (s[:, None] if v.ndim == 2 else s[None, None, :, None]))


def _factors(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    s = np.sqrt(np.maximum(r1, 1e-12) / np.maximum(r2, 1e-12))
    dead = (r1 < 1e-12) | (r2 < 1e-12)
    return np.where(dead, 1.0, np.clip(s, 1 / S_LIMIT, S_LIMIT)).astype(np.float32)


def equalize(steps, rounds: int = 2) -> list[dict]:
    """Equalize every pair of the plan ``steps`` in place (``rounds`` sweeps; chains converge over sweeps)."""
    found = pairs(steps)
    done: dict[str, dict] = {}
    for _ in range(rounds):
        for a, b in found:
            if a is b:       # SeparableConv2D: depthwise output channel c -> pointwise input channel c
                layer = a.layer
                dw, pw = layer.depthwise_kernel, layer.pointwise_kernel
                r1 = np.abs(dw.numpy()).max(axis=(0, 1, 3))
                r2 = np.abs(pw.numpy()).max(axis=(0, 1, 3))
                s = _factors(r1, r2)
                dw.assign(dw.numpy() / s[None, None, :, None])
                pw.assign(pw.numpy() * s[None, None, :, None])
                name = f"{layer.name} (depthwise -> pointwise)"
            else:
                r1, r2 = _ranges_out(a), _ranges_in(b.layer)
                if r1.shape != r2.shape:
                    continue
                s = _factors(r1, r2)
                _scale_out(a, s)
                _scale_in(b.layer, s)
                name = f"{a.name} -> {b.name}"
            d = done.setdefault(name, {"pair": name, "max_factor": 1.0, "min_factor": 1.0})
            d["max_factor"] = round(max(d["max_factor"], d["max_factor"] * float(s.max())), 4)
            d["min_factor"] = round(min(d["min_factor"], d["min_factor"] * float(s.min())), 4)
    return list(done.values())
