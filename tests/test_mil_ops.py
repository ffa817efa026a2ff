"""Every op implementation of the reference executor against an independent computation, in fp32 and fp16.

Each case builds one MIL op with coremltools' Builder; all cases of a family go into one program, saved as a real
.mlpackage per precision and executed on random inputs. The expectation is a numpy formula in float64 on the
values the program really holds: inputs and constants rounded to fp16 in fp16 programs (coremltools casts them).
Tolerances: fp32 outputs within 2e-6 of the output's scale (float32 rounding and accumulation); fp16 outputs
within half an fp16 ulp of the exact value (one rounding at the op boundary, 2^-11 relative) plus float32
accumulation noise (1e-6 of the scale) - a second rounding, a wrong formula or fp32 leaking through all fail.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
from mil_programs import save_program

from device_bench.mil import Program
from device_bench.mil.ops import registry


@dataclass
class Case:
    name: str
    family: str
    inputs: dict                   # input name -> shape (random normal) or (shape, low, high) (uniform)
    build: Callable                # (mb, vars, consts) -> var or list of vars
    expect: Callable               # (vars, consts, q) -> array or list of arrays (float64 numpy)
    consts: dict = field(default_factory=dict)
    exact: bool = False            # integer / boolean results: must be equal
    opset: str = "iOS16"


CASES: list[Case] = []
R = np.random.default_rng(7)


def case(name, family, inputs, build, expect, consts=None, **kw):
    CASES.append(Case(name, family, inputs, build, expect, consts or {}, **kw))


def rand(*shape, low=None, high=None):
    if low is not None:
        return R.uniform(low, high, shape).astype(np.float32)
    return R.standard_normal(shape).astype(np.float32)


# ---- independent reference formulas (direct loops, float64) --------------------------------------------------
def ref_conv(x, w, b, strides, pads, dil, groups):
    n, c, h, wd = x.shape
    co, cg, kh, kw = w.shape
    xp = np.pad(x, [(0, 0), (0, 0), pads[0], pads[1]])
    oh = (xp.shape[2] - (kh - 1) * dil[0] - 1) // strides[0] + 1
    ow = (xp.shape[3] - (kw - 1) * dil[1] - 1) // strides[1] + 1
    out = np.zeros((n, co, oh, ow))
    og = co // groups
    for o in range(co):
        g = o // og
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg, i * strides[0]:i * strides[0] + (kh - 1) * dil[0] + 1:dil[0],
                           j * strides[1]:j * strides[1] + (kw - 1) * dil[1] + 1:dil[1]]
                out[:, o, i, j] = np.sum(patch * w[o], axis=(1, 2, 3))
    return out + (0 if b is None else b.reshape(1, -1, 1, 1))


def ref_conv_transpose(x, w, strides, crop, out_hw):
    """Full transposed convolution by scattering every input pixel, then cropping ``crop`` = (top, left)."""
    n, ci, h, wd = x.shape
    _, co, kh, kw = w.shape
    full = np.zeros((n, co, (h - 1) * strides[0] + kh, (wd - 1) * strides[1] + kw))
    for i in range(h):
        for j in range(wd):
            full[:, :, i * strides[0]:i * strides[0] + kh, j * strides[1]:j * strides[1] + kw] += \
                np.einsum("nc,cokl->nokl", x[:, :, i, j], w)
    return full[:, :, crop[0]:crop[0] + out_hw[0], crop[1]:crop[1] + out_hw[1]]


def ref_pool(x, k, s, pads, fn, count=None):
    """fn over each window of x padded with NaN (NaN = not input); ``count`` 'valid' or 'all' for averages."""
    xp = np.pad(x, [(0, 0), (0, 0), pads[0], pads[1]], constant_values=np.nan)
    oh, ow = (xp.shape[2] - k[0]) // s[0] + 1, (xp.shape[3] - k[1]) // s[1] + 1
    out = np.zeros(x.shape[:2] + (oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = xp[:, :, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]].reshape(*x.shape[:2], -1)
            if fn == "max":
                out[:, :, i, j] = np.nanmax(win, axis=-1)
            elif fn == "l2":
                out[:, :, i, j] = np.sqrt(np.nansum(win ** 2, axis=-1))
            else:
                denom = np.sum(~np.isnan(win), axis=-1) if count == "valid" else win.shape[-1]
                out[:, :, i, j] = np.nansum(win, axis=-1) / denom
    return out


def bilinear_ref(x, oh, ow, src):
    """Bilinear resize with source coordinate function src(i, n_in, n_out) (clipped to the input)."""
    def axis(a, n_out, ax):
        n_in = a.shape[ax]
        out = []
        for i in range(n_out):
            g = min(max(src(i, n_in, n_out), 0.0), n_in - 1)
            lo = int(np.floor(g))
            hi = min(lo + 1, n_in - 1)
            f = g - lo
            out.append(np.take(a, lo, axis=ax) * (1 - f) + np.take(a, hi, axis=ax) * f)
        return np.stack(out, axis=ax)
    return axis(axis(x, oh, 2), ow, 3)


def sig(x):
    return 1 / (1 + np.exp(-x))


def erf(x):
    import math
    return np.vectorize(math.erf)(x)


# ---- elementwise --------------------------------------------------------------------------------------------
X23 = {"x": (2, 3, 4), "y": (2, 3, 4)}
for name, f in {"add": np.add, "sub": np.subtract, "mul": np.multiply, "maximum": np.maximum,
                "minimum": np.minimum}.items():
    case(name, "binary", X23, lambda mb, v, c, n=name: getattr(mb, n)(x=v["x"], y=v["y"]),
         lambda v, c, q, f=f: f(v["x"], v["y"]))
case("add_broadcast", "binary", {"x": (2, 3, 4), "y": (3, 1)}, lambda mb, v, c: mb.add(x=v["x"], y=v["y"]),
     lambda v, c, q: v["x"] + v["y"])
case("real_div", "binary", {"x": (2, 3, 4), "y": ((2, 3, 4), 0.5, 2.0)},
     lambda mb, v, c: mb.real_div(x=v["x"], y=v["y"]), lambda v, c, q: v["x"] / v["y"])
case("pow", "binary", {"x": ((2, 3, 4), 0.2, 2.0), "y": ((2, 3, 4), -1.5, 1.5)},
     lambda mb, v, c: mb.pow(x=v["x"], y=v["y"]), lambda v, c, q: v["x"] ** v["y"])
case("floor_div", "binary", {"x": (2, 3, 4), "y": ((2, 3, 4), 0.3, 1.0)},
     lambda mb, v, c: mb.floor_div(x=v["x"], y=v["y"]), lambda v, c, q: np.floor_divide(v["x"], v["y"]))
case("mod", "binary", {"x": (2, 3, 4), "y": ((2, 3, 4), 0.3, 1.0)},
     lambda mb, v, c: mb.mod(x=v["x"], y=v["y"]), lambda v, c, q: np.mod(v["x"], v["y"]))
for name, f in {"equal": np.equal, "not_equal": np.not_equal, "less": np.less, "less_equal": np.less_equal,
                "greater": np.greater, "greater_equal": np.greater_equal}.items():
    case(name, "compare", {"x": (2, 6), "y": (2, 6)},
         lambda mb, v, c, n=name: getattr(mb, n)(x=v["x"], y=mb.mul(x=v["y"], y=0.0) if n.endswith("equal")
                                                  and "not" not in n else v["y"]),
         lambda v, c, q, f=f, n=name: f(v["x"], 0 * v["y"] if n.endswith("equal") and "not" not in n
                                        else v["y"]), exact=True)
case("logical", "compare", {"x": (2, 6), "y": (2, 6)},
     lambda mb, v, c: [mb.logical_and(x=mb.less(x=v["x"], y=0.0), y=mb.less(x=v["y"], y=0.0)),
                       mb.logical_or(x=mb.less(x=v["x"], y=0.0), y=mb.less(x=v["y"], y=0.0)),
                       mb.logical_xor(x=mb.less(x=v["x"], y=0.0), y=mb.less(x=v["y"], y=0.0)),
                       mb.logical_not(x=mb.less(x=v["x"], y=0.0))],
     lambda v, c, q: [(v["x"] < 0) & (v["y"] < 0), (v["x"] < 0) | (v["y"] < 0), (v["x"] < 0) ^ (v["y"] < 0),
                      ~(v["x"] < 0)], exact=True)
case("select", "compare", {"x": (2, 6), "y": (2, 6)},
     lambda mb, v, c: mb.select(cond=mb.less(x=v["x"], y=v["y"]), a=v["x"], b=v["y"]),
     lambda v, c, q: np.where(v["x"] < v["y"], v["x"], v["y"]))

UNARY = {"abs": (np.abs, None), "exp": (np.exp, None), "tanh": (np.tanh, None), "sin": (np.sin, None),
         "cos": (np.cos, None), "sinh": (np.sinh, None), "cosh": (np.cosh, None), "atan": (np.arctan, None),
         "erf": (erf, None), "floor": (np.floor, None), "ceil": (np.ceil, None), "round": (np.round, None),
         "sign": (np.sign, None), "square": (np.square, None), "exp2": (np.exp2, None), "tan": (np.tan, (-1, 1)),
         "sqrt": (np.sqrt, (0.1, 3)), "asin": (np.arcsin, (-0.9, 0.9)), "acos": (np.arccos, (-0.9, 0.9)),
         "atanh": (np.arctanh, (-0.9, 0.9))}
for name, (f, rng) in UNARY.items():
    case(name, "unary", {"x": (3, 5) if rng is None else ((3, 5), *rng)},
         lambda mb, v, c, n=name: getattr(mb, n)(x=v["x"]), lambda v, c, q, f=f: f(v["x"]))
case("log", "unary", {"x": ((3, 5), 0.1, 3)}, lambda mb, v, c: mb.log(x=v["x"], epsilon=0.01),
     lambda v, c, q: np.log(v["x"] + q(0.01)))
case("rsqrt", "unary", {"x": ((3, 5), 0.1, 3)}, lambda mb, v, c: mb.rsqrt(x=v["x"]),
     lambda v, c, q: 1 / np.sqrt(v["x"] + q(1e-12)))
case("inverse", "unary", {"x": ((3, 5), 0.1, 3)}, lambda mb, v, c: mb.inverse(x=v["x"], epsilon=0.001),
     lambda v, c, q: 1 / (v["x"] + q(0.001)))
case("clip", "unary", {"x": (3, 5)}, lambda mb, v, c: mb.clip(x=v["x"], alpha=-0.5, beta=0.7),
     lambda v, c, q: np.clip(v["x"], q(-0.5), q(0.7)))
case("threshold", "unary", {"x": (3, 5)}, lambda mb, v, c: mb.threshold(x=v["x"], alpha=0.3),
     lambda v, c, q: np.maximum(v["x"], q(0.3)))
case("cast_int32", "unary", {"x": (3, 5)}, lambda mb, v, c: mb.cast(x=mb.mul(x=v["x"], y=3.0), dtype="int32"),
     lambda v, c, q: np.trunc(q(v["x"] * 3.0)), exact=True)
case("identity", "unary", {"x": (3, 5)}, lambda mb, v, c: mb.identity(x=v["x"]), lambda v, c, q: v["x"])

# ---- activations --------------------------------------------------------------------------------------------
A = {"x": (2, 4, 3, 3)}
ACTS = {
    "relu": (lambda mb, x: mb.relu(x=x), lambda x, q: np.maximum(x, 0)),
    "relu6": (lambda mb, x: mb.relu6(x=mb.mul(x=x, y=4.0)), lambda x, q: np.clip(q(x * 4), 0, 6)),
    "leaky_relu": (lambda mb, x: mb.leaky_relu(x=x, alpha=0.1), lambda x, q: np.where(x >= 0, x, q(0.1) * x)),
    "elu": (lambda mb, x: mb.elu(x=x, alpha=0.7), lambda x, q: np.where(x > 0, x, q(0.7) * np.expm1(x))),
    "sigmoid": (lambda mb, x: mb.sigmoid(x=x), lambda x, q: sig(x)),
    "sigmoid_hard": (lambda mb, x: mb.sigmoid_hard(x=x, alpha=0.2, beta=0.5),
                     lambda x, q: np.clip(q(0.2) * x + 0.5, 0, 1)),
    "hard_swish": (lambda mb, x: mb.mul(x=x, y=mb.sigmoid_hard(x=x, alpha=1 / 6, beta=0.5)),
                   lambda x, q: x * q(np.clip(q(1 / 6) * x + 0.5, 0, 1))),
    "silu": (lambda mb, x: mb.silu(x=x), lambda x, q: x * sig(x)),
    "gelu_exact": (lambda mb, x: mb.gelu(x=x), lambda x, q: 0.5 * x * (1 + erf(x / np.sqrt(2)))),
    "gelu_tanh": (lambda mb, x: mb.gelu(x=x, mode="TANH_APPROXIMATION"),
                  lambda x, q: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))),
    "gelu_sigmoid": (lambda mb, x: mb.gelu(x=x, mode="SIGMOID_APPROXIMATION"), lambda x, q: x * sig(1.702 * x)),
    "softplus": (lambda mb, x: mb.softplus(x=x), lambda x, q: np.log1p(np.exp(x))),
    "softsign": (lambda mb, x: mb.softsign(x=x), lambda x, q: x / (1 + np.abs(x))),
    "scaled_tanh": (lambda mb, x: mb.scaled_tanh(x=x, alpha=1.5, beta=0.7),
                    lambda x, q: 1.5 * np.tanh(q(0.7) * x)),
    "linear_activation": (lambda mb, x: mb.linear_activation(x=x, alpha=1.5, beta=-0.3),
                          lambda x, q: 1.5 * x + q(-0.3)),
    "clamped_relu": (lambda mb, x: mb.clamped_relu(x=x, alpha=0.1, beta=1.0),
                     lambda x, q: np.minimum(np.where(x >= 0, x, q(0.1) * x), 1.0)),
    "thresholded_relu": (lambda mb, x: mb.thresholded_relu(x=x, alpha=0.5), lambda x, q: np.where(x >= 0.5, x, 0)),
    "softmax": (lambda mb, x: mb.softmax(x=x, axis=1),
                lambda x, q: np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)),
}
for name, (b, e) in ACTS.items():
    case(name, "activation", A, lambda mb, v, c, b=b: b(mb, v["x"]), lambda v, c, q, e=e: e(v["x"], q))
case("prelu", "activation", A, lambda mb, v, c: mb.prelu(x=v["x"], alpha=c["a"]),
     lambda v, c, q: np.where(v["x"] > 0, v["x"], c["a"].reshape(1, -1, 1, 1) * v["x"]),
     consts={"a": rand(4, low=0.05, high=0.5)})
case("softplus_parametric", "activation", A,
     lambda mb, v, c: mb.softplus_parametric(x=v["x"], alpha=c["a"], beta=c["b"]),
     lambda v, c, q: c["a"].reshape(1, -1, 1, 1) * np.log1p(np.exp(c["b"].reshape(1, -1, 1, 1) * v["x"])),
     consts={"a": rand(4, low=0.5, high=1.5), "b": rand(4, low=0.5, high=1.5)})

# ---- dense algebra ------------------------------------------------------------------------------------------
case("linear", "linear", {"x": (3, 6)}, lambda mb, v, c: mb.linear(x=v["x"], weight=c["w"], bias=c["b"]),
     lambda v, c, q: v["x"] @ c["w"].T + c["b"], consts={"w": rand(5, 6), "b": rand(5)})
case("matmul", "linear", {"x": (2, 3, 4), "y": (4, 5)}, lambda mb, v, c: mb.matmul(x=v["x"], y=v["y"]),
     lambda v, c, q: v["x"] @ v["y"])
case("matmul_transposed", "linear", {"x": (2, 4, 3), "y": (2, 5, 4)},
     lambda mb, v, c: mb.matmul(x=v["x"], y=v["y"], transpose_x=True, transpose_y=True),
     lambda v, c, q: np.swapaxes(v["x"], 1, 2) @ np.swapaxes(v["y"], 1, 2))
case("einsum", "linear", {"x": (1, 2, 3, 4), "y": (1, 4, 3, 5)},
     lambda mb, v, c: mb.einsum(values=(v["x"], v["y"]), equation="nchw,nwhr->nchr"),
     lambda v, c, q: np.einsum("nchw,nwhr->nchr", v["x"], v["y"]))

# ---- convolutions -------------------------------------------------------------------------------------------
CX = {"x": (2, 4, 9, 8)}
CONVS = {  # name: (weight shape, conv kwargs, reference (strides, pads, dilations, groups))
    "conv_valid_stride2": ((6, 4, 3, 3), dict(strides=[2, 2]), ((2, 2), [(0, 0), (0, 0)], (1, 1), 1)),
    "conv_same_dilated": ((5, 4, 3, 3), dict(pad_type="same", dilations=[2, 2]),
                          ((1, 1), [(2, 2), (2, 2)], (2, 2), 1)),
    "conv_same_stride2": ((5, 4, 3, 2), dict(pad_type="same", strides=[2, 2]),
                          ((2, 2), [(1, 1), (0, 0)], (1, 1), 1)),
    "conv_same_lower": ((5, 4, 2, 2), dict(pad_type="same_lower"), ((1, 1), [(1, 0), (1, 0)], (1, 1), 1)),
    "conv_custom_pad": ((3, 4, 3, 3), dict(pad_type="custom", pad=[1, 2, 0, 3]),
                        ((1, 1), [(1, 2), (0, 3)], (1, 1), 1)),
    "conv_groups2": ((6, 2, 3, 3), dict(pad_type="same", groups=2), ((1, 1), [(1, 1), (1, 1)], (1, 1), 2)),
    "conv_depthwise": ((4, 1, 3, 3), dict(pad_type="same", groups=4), ((1, 1), [(1, 1), (1, 1)], (1, 1), 4)),
    "conv_depthwise_x2_stride2": ((8, 1, 3, 3), dict(pad_type="same", groups=4, strides=[2, 2]),
                                  ((2, 2), [(1, 1), (0, 1)], (1, 1), 4)),
    "conv_pointwise": ((7, 4, 1, 1), {}, ((1, 1), [(0, 0), (0, 0)], (1, 1), 1)),
}
for name, (wshape, kw, (s, p, d, g)) in CONVS.items():
    case(name, "conv", CX, lambda mb, v, c, kw=kw: mb.conv(x=v["x"], weight=c["w"], bias=c["b"], **kw),
         lambda v, c, q, s=s, p=p, d=d, g=g: ref_conv(v["x"], c["w"], c["b"], s, p, d, g),
         consts={"w": rand(*wshape), "b": rand(wshape[0])})
case("conv_1d", "conv", {"x": (2, 3, 11)},
     lambda mb, v, c: mb.conv(x=v["x"], weight=c["w"], pad_type="same", strides=[2]),
     lambda v, c, q: ref_conv(v["x"][:, :, None], c["w"][:, :, None], None, (1, 2), [(0, 0), (1, 1)], (1, 1), 1)
     [:, :, 0], consts={"w": rand(4, 3, 3)})
TCX = {"x": (2, 3, 4, 5)}
case("conv_transpose_valid_s2", "conv", TCX,
     lambda mb, v, c: mb.conv_transpose(x=v["x"], weight=c["w"], strides=[2, 2], bias=c["b"]),
     lambda v, c, q: ref_conv_transpose(v["x"], c["w"], (2, 2), (0, 0), (9, 11)) + c["b"].reshape(1, -1, 1, 1),
     consts={"w": rand(3, 4, 3, 3), "b": rand(4)})
case("conv_transpose_same_s2", "conv", TCX,
     lambda mb, v, c: mb.conv_transpose(x=v["x"], weight=c["w"], strides=[2, 2], pad_type="same"),
     lambda v, c, q: ref_conv_transpose(v["x"], c["w"], (2, 2), (0, 0), (8, 10)), consts={"w": rand(3, 4, 3, 3)})
case("conv_transpose_custom", "conv", TCX,
     lambda mb, v, c: mb.conv_transpose(x=v["x"], weight=c["w"], pad_type="custom", pad=[1, 0, 2, 1]),
     lambda v, c, q: ref_conv_transpose(v["x"], c["w"], (1, 1), (1, 2), (5, 4)), consts={"w": rand(3, 2, 3, 3)})
case("conv_transpose_groups", "conv", {"x": (1, 4, 3, 3)},
     lambda mb, v, c: mb.conv_transpose(x=v["x"], weight=c["w"], groups=2, strides=[2, 2]),
     lambda v, c, q: np.concatenate([ref_conv_transpose(v["x"][:, :2], c["w"][:2], (2, 2), (0, 0), (7, 7)),
                                     ref_conv_transpose(v["x"][:, 2:], c["w"][2:], (2, 2), (0, 0), (7, 7))], 1),
     consts={"w": rand(4, 3, 3, 3)})

# ---- normalization ------------------------------------------------------------------------------------------
NX = {"x": (2, 4, 5, 3)}
case("batch_norm", "norm", NX,
     lambda mb, v, c: mb.batch_norm(x=v["x"], mean=c["m"], variance=c["v"], gamma=c["g"], beta=c["b"],
                                    epsilon=1e-3),
     lambda v, c, q: ((v["x"] - c["m"].reshape(1, -1, 1, 1)) / np.sqrt(c["v"].reshape(1, -1, 1, 1) + q(1e-3))
                      * c["g"].reshape(1, -1, 1, 1) + c["b"].reshape(1, -1, 1, 1)),
     consts={"m": rand(4), "v": rand(4, low=0.2, high=2), "g": rand(4), "b": rand(4)})
case("instance_norm", "norm", NX, lambda mb, v, c: mb.instance_norm(x=v["x"], gamma=c["g"], beta=c["b"]),
     lambda v, c, q: ((v["x"] - v["x"].mean((2, 3), keepdims=True)) / np.sqrt(v["x"].var((2, 3), keepdims=True)
                      + q(1e-5)) * c["g"].reshape(1, -1, 1, 1) + c["b"].reshape(1, -1, 1, 1)),
     consts={"g": rand(4), "b": rand(4)})
case("layer_norm_last", "norm", NX, lambda mb, v, c: mb.layer_norm(x=v["x"], axes=[-1], gamma=c["g"], beta=c["b"]),
     lambda v, c, q: ((v["x"] - v["x"].mean(-1, keepdims=True)) / np.sqrt(v["x"].var(-1, keepdims=True) + q(1e-5))
                      * c["g"] + c["b"]), consts={"g": rand(3), "b": rand(3)})
case("layer_norm_chw", "norm", NX, lambda mb, v, c: mb.layer_norm(x=v["x"], axes=[1, 2, 3], epsilon=1e-3),
     lambda v, c, q: (v["x"] - v["x"].mean((1, 2, 3), keepdims=True))
     / np.sqrt(v["x"].var((1, 2, 3), keepdims=True) + q(1e-3)))
case("l2_norm", "norm", NX, lambda mb, v, c: mb.l2_norm(x=v["x"]),
     lambda v, c, q: v["x"] / np.sqrt((v["x"] ** 2).sum((1, 2, 3), keepdims=True) + q(1e-6)))
case("local_response_norm", "norm", NX, lambda mb, v, c: mb.local_response_norm(x=v["x"], size=3, alpha=0.3),
     lambda v, c, q: v["x"] / (1 + q(0.3) / 3 * np.stack([
         (np.pad(v["x"] ** 2, [(0, 0), (1, 1), (0, 0), (0, 0)])[:, i:i + 3]).sum(1) for i in range(4)], 1)) ** 0.75)

# ---- pooling ------------------------------------------------------------------------------------------------
PX = {"x": (2, 3, 7, 6)}
POOLS = {  # name: (op, kwargs, reference (kernel, strides, pads, fn, count))
    "max_pool_valid": ("max_pool", dict(kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid"),
                       ((2, 2), (2, 2), [(0, 0), (0, 0)], "max", None)),
    "max_pool_same": ("max_pool", dict(kernel_sizes=[3, 3], strides=[2, 2], pad_type="same"),
                      ((3, 3), (2, 2), [(1, 1), (0, 1)], "max", None)),
    "max_pool_ceil": ("max_pool", dict(kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid", ceil_mode=True),
                      ((2, 2), (2, 2), [(0, 1), (0, 0)], "max", None)),
    "avg_pool_same_excl": ("avg_pool", dict(kernel_sizes=[3, 3], strides=[1, 1], pad_type="same",
                                            exclude_padding_from_average=True),
                           ((3, 3), (1, 1), [(1, 1), (1, 1)], "avg", "valid")),
    "avg_pool_custom_incl": ("avg_pool", dict(kernel_sizes=[2, 3], strides=[2, 1], pad_type="custom",
                                              pad=[1, 1, 0, 2], exclude_padding_from_average=False),
                             ((2, 3), (2, 1), [(1, 1), (0, 2)], "avg", "all")),
    "l2_pool": ("l2_pool", dict(kernel_sizes=[2, 2], strides=[1, 2], pad_type="valid"),
                ((2, 2), (1, 2), [(0, 0), (0, 0)], "l2", None)),
}
for name, (opname, kw, (k, s, p, fn, cnt)) in POOLS.items():
    case(name, "pool", PX, lambda mb, v, c, o=opname, kw=kw: getattr(mb, o)(x=v["x"], **kw),
         lambda v, c, q, k=k, s=s, p=p, fn=fn, cnt=cnt: ref_pool(v["x"], k, s, p, fn, cnt))

# ---- reductions ---------------------------------------------------------------------------------------------
RX = {"x": ((2, 3, 4), 0.2, 1.5)}
REDS = {"reduce_sum": np.sum, "reduce_mean": np.mean, "reduce_max": np.max, "reduce_min": np.min,
        "reduce_prod": np.prod, "reduce_l1_norm": lambda a, axis, keepdims: np.sum(np.abs(a), axis, keepdims=keepdims),
        "reduce_l2_norm": lambda a, axis, keepdims: np.sqrt(np.sum(a * a, axis, keepdims=keepdims)),
        "reduce_sum_square": lambda a, axis, keepdims: np.sum(a * a, axis, keepdims=keepdims),
        "reduce_log_sum": lambda a, axis, keepdims: np.log(np.sum(a, axis, keepdims=keepdims)),
        "reduce_log_sum_exp": lambda a, axis, keepdims: np.log(np.sum(np.exp(a), axis, keepdims=keepdims))}
for name, f in REDS.items():
    case(name, "reduce", RX, lambda mb, v, c, n=name: [getattr(mb, n)(x=v["x"], axes=[1], keep_dims=True),
                                                         getattr(mb, n)(x=v["x"], axes=[0, -1])],
         lambda v, c, q, f=f: [f(v["x"], axis=1, keepdims=True), f(v["x"], axis=(0, 2), keepdims=False)])
case("reduce_argmax_argmin", "reduce", {"x": (3, 7)},
     lambda mb, v, c: [mb.reduce_argmax(x=v["x"], axis=1), mb.reduce_argmin(x=v["x"], axis=0, keep_dims=True)],
     lambda v, c, q: [np.argmax(v["x"], 1), np.argmin(v["x"], 0)[None]], exact=True)

# ---- layout -------------------------------------------------------------------------------------------------
SX = {"x": (2, 3, 4)}
LAYOUT = {
    "reshape": (lambda mb, x: mb.reshape(x=x, shape=[0, -1, 2]), lambda x: x.reshape(2, 6, 2)),
    "transpose": (lambda mb, x: mb.transpose(x=x, perm=[2, 0, 1]), lambda x: x.transpose(2, 0, 1)),
    "squeeze": (lambda mb, x: mb.squeeze(x=mb.expand_dims(x=x, axes=[1]), axes=[1]), lambda x: x),
    "expand_dims": (lambda mb, x: mb.expand_dims(x=x, axes=[0, -1]), lambda x: x[None, ..., None]),
    "flatten2d": (lambda mb, x: mb.flatten2d(x=x, axis=2), lambda x: x.reshape(6, 4)),
    "concat": (lambda mb, x: mb.concat(values=[x, mb.mul(x=x, y=2.0), x], axis=1),
               lambda x: np.concatenate([x, 2 * x, x], 1)),
    "concat_interleave": (lambda mb, x: mb.concat(values=[x, mb.mul(x=x, y=2.0)], axis=2, interleave=True),
                          lambda x: np.stack([x, 2 * x], 3).reshape(2, 3, 8)),
    "stack": (lambda mb, x: mb.stack(values=[x, mb.mul(x=x, y=-1.0)], axis=1), lambda x: np.stack([x, -x], 1)),
    "split_num": (lambda mb, x: list(mb.split(x=x, num_splits=2, axis=2)), lambda x: [x[..., :2], x[..., 2:]]),
    "split_sizes": (lambda mb, x: list(mb.split(x=x, split_sizes=[1, 2], axis=1)), lambda x: [x[:, :1], x[:, 1:]]),
    "slice_by_index": (lambda mb, x: mb.slice_by_index(x=x, begin=[1, 0, 3], end=[2, 3, 0], stride=[1, 2, -1],
                                                       begin_mask=[False, True, False],
                                                       end_mask=[False, True, True], squeeze_mask=[True, False, False]),
                       lambda x: x[1, ::2, 3::-1]),
    "slice_by_size": (lambda mb, x: mb.slice_by_size(x=x, begin=[0, 1, 1], size=[-1, 2, 2]),
                      lambda x: x[:, 1:3, 1:3]),
    "pad_constant": (lambda mb, x: mb.pad(x=x, pad=[1, 2, 0, 1], constant_val=0.5),
                     lambda x: np.pad(x, [(0, 0), (1, 2), (0, 1)], constant_values=0.5)),
    "pad_reflect": (lambda mb, x: mb.pad(x=x, pad=[1, 2], mode="reflect"),
                    lambda x: np.pad(x, [(0, 0), (0, 0), (1, 2)], mode="reflect")),
    "pad_replicate": (lambda mb, x: mb.pad(x=x, pad=[2, 1, 1, 0], mode="replicate"),
                      lambda x: np.pad(x, [(0, 0), (2, 1), (1, 0)], mode="edge")),
    "tile": (lambda mb, x: mb.tile(x=x, reps=[1, 2, 3]), lambda x: np.tile(x, (1, 2, 3))),
    "reverse": (lambda mb, x: mb.reverse(x=x, axes=[0, 2]), lambda x: x[::-1, :, ::-1]),
    "gather": (lambda mb, x: mb.gather(x=x, indices=np.array([2, 0, 0], np.int32), axis=1),
               lambda x: x[:, [2, 0, 0]]),
    "gather_along_axis": (lambda mb, x: mb.gather_along_axis(
        x=x, indices=np.array([[[0, 1, 2, 0]], [[2, 1, 0, 1]]], np.int32), axis=1),
        lambda x: np.take_along_axis(x, np.array([[[0, 1, 2, 0]], [[2, 1, 0, 1]]]), 1)),
    "band_part": (lambda mb, x: mb.band_part(x=x, lower=1, upper=0),
                  lambda x: x * (np.tril(np.ones((3, 4))) - np.tril(np.ones((3, 4)), -2))),
}
for name, (b, e) in LAYOUT.items():
    case(name, "layout", SX, lambda mb, v, c, b=b: b(mb, v["x"]), lambda v, c, q, e=e: e(v["x"]))
case("shape", "layout", SX, lambda mb, v, c: mb.shape(x=v["x"]), lambda v, c, q: np.array([2, 3, 4]), exact=True)
case("fill_range", "layout", SX, lambda mb, v, c: [mb.add(x=v["x"], y=mb.fill(shape=[2, 3, 4], value=1.5)),
                                                   mb.range_1d(start=1, end=9, step=3)],
     lambda v, c, q: [v["x"] + 1.5, np.array([1, 4, 7])])
DX = {"x": (1, 8, 2, 3)}
case("depth_to_space", "layout", DX, lambda mb, v, c: mb.depth_to_space(x=v["x"], block_size=2),
     lambda v, c, q: np.stack([np.stack([v["x"][:, (i * 2 + j) * 2:(i * 2 + j) * 2 + 2] for j in range(2)], -1)
                               for i in range(2)], -3).reshape(1, 2, 4, 6))
case("space_to_depth", "layout", {"x": (1, 2, 4, 6)}, lambda mb, v, c: mb.space_to_depth(x=v["x"], block_size=2),
     lambda v, c, q: np.concatenate([v["x"][:, :, i::2, j::2] for i in range(2) for j in range(2)], 1))
case("pixel_shuffle", "layout", DX, lambda mb, v, c: mb.pixel_shuffle(x=v["x"], upscale_factor=2),
     lambda v, c, q: np.stack([np.stack([v["x"][:, i * 2 + j::4] for j in range(2)], -1) for i in range(2)], -3)
     .reshape(1, 2, 4, 6))

# ---- resizing -----------------------------------------------------------------------------------------------
ZX = {"x": (1, 2, 3, 4)}


def HALF(i, n, m):
    return (i + 0.5) * n / m - 0.5


def ALIGN(i, n, m):
    return i * (n - 1) / (m - 1)


case("upsample_nearest", "resize", ZX, lambda mb, v, c: mb.upsample_nearest_neighbor(
    x=v["x"], scale_factor_height=2, scale_factor_width=3), lambda v, c, q: v["x"].repeat(2, 2).repeat(3, 3))
case("resize_nearest", "resize", ZX, lambda mb, v, c: mb.resize_nearest_neighbor(
    x=v["x"], target_size_height=6, target_size_width=8), lambda v, c, q: v["x"].repeat(2, 2).repeat(2, 3))
case("upsample_bilinear_align", "resize", ZX, lambda mb, v, c: mb.upsample_bilinear(
    x=v["x"], scale_factor_height=2, scale_factor_width=2, align_corners=True),
    lambda v, c, q: bilinear_ref(v["x"], 6, 8, ALIGN))
case("upsample_bilinear_half", "resize", ZX, lambda mb, v, c: mb.upsample_bilinear(
    x=v["x"], scale_factor_height=2, scale_factor_width=3, align_corners=False),
    lambda v, c, q: bilinear_ref(v["x"], 6, 12, HALF))
case("upsample_bilinear_legacy", "resize", ZX, lambda mb, v, c: mb.upsample_bilinear(
    x=v["x"], scale_factor_height=2, scale_factor_width=2, align_corners=False, half_pixel_centers=False),
    lambda v, c, q: bilinear_ref(v["x"], 6, 8, lambda i, n, m: i * n / m))
for mode, src in {"STRICT_ALIGN_CORNERS": ALIGN, "DEFAULT": lambda i, n, m: i * n / m, "UNALIGN_CORNERS": HALF,
                  "OFFSET_CORNERS": lambda i, n, m: (i + 0.5) * max(1, n - 1) / m}.items():
    case(f"resize_bilinear_{mode.lower()}", "resize", ZX, lambda mb, v, c, mode=mode: mb.resize_bilinear(
        x=v["x"], target_size_height=5, target_size_width=7, sampling_mode=mode),
        lambda v, c, q, src=src: bilinear_ref(v["x"], 5, 7, src))
case("resize_ios17", "resize17", ZX, lambda mb, v, c: mb.resize(
    x=v["x"], shape=np.array([5, 7], np.int32), resized_dims=np.uint32(2), interpolation_mode="LINEAR",
    sampling_mode="UNALIGN_CORNERS"), lambda v, c, q: bilinear_ref(v["x"], 5, 7, HALF), opset="iOS17")


# ---- running ------------------------------------------------------------------------------------------------
def _inputs(c: Case) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(zlib.crc32(c.name.encode()))
    out = {}
    for k, spec in c.inputs.items():
        if isinstance(spec[0], tuple):
            shape, lo, hi = spec
            out[k] = rng.uniform(lo, hi, shape).astype(np.float32)
        else:
            out[k] = rng.standard_normal(spec).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """(family, precision) -> {case name: (outputs, inputs)}, building and running each program once."""
    from coremltools.converters.mil import Builder as mb

    cache: dict = {}

    def get(family: str, precision: str):
        if (family, precision) not in cache:
            cases = [c for c in CASES if c.family == family]
            feeds = {f"{c.name}__{k}": v for c in cases for k, v in _inputs(c).items()}

            def body(**v):
                outs = {}
                for c in cases:
                    res = c.build(mb, {k: v[f"{c.name}__{k}"] for k in c.inputs}, c.consts)
                    for i, r in enumerate(res if isinstance(res, list) else [res]):
                        outs[f"{c.name}__{i}"] = r
                return outs
            path = save_program({k: a.shape for k, a in feeds.items()}, body,
                                tmp_path_factory.mktemp(family) / f"{family}.{precision}.mlpackage", precision,
                                opset=cases[0].opset)
            prog = Program(path)
            cache[(family, precision)] = (prog.run(feeds), feeds, prog)
        return cache[(family, precision)]
    return get


def q16(a):
    return np.asarray(a, np.float32).astype(np.float16).astype(np.float64)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_op_matches_reference(executed, c: Case, precision):
    outs, feeds, _ = executed(c.family, precision)
    q = q16 if precision == "fp16" else (lambda a: np.asarray(a, np.float32).astype(np.float64))
    v = {k: q(feeds[f"{c.name}__{k}"]) for k in c.inputs}
    consts = {k: q(a) for k, a in c.consts.items()}
    want = c.expect(v, consts, q)
    want = want if isinstance(want, list) else [want]
    for i, w in enumerate(want):
        got = outs[f"{c.name}__{i}"]
        w = np.asarray(w)
        assert got.shape == w.shape, (c.name, i, got.shape, w.shape)
        if c.exact:
            np.testing.assert_array_equal(got, w.astype(got.dtype), err_msg=c.name)
            continue
        err = np.abs(got.astype(np.float64) - w)
        scale = float(np.max(np.abs(w))) if w.size else 0.0
        bound = (2.0 ** -11 * 1.001 * np.abs(w) + 2.0 ** -24 + 1e-6 * scale) if precision == "fp16" \
            else (2e-6 * np.abs(w) + 2e-6 * scale)
        worst = int(np.argmax(err - bound))
        assert np.all(err <= bound), (f"{c.name}[{i}] {precision}: |error| {err.flat[worst]:.3g} > bound "
                                      f"{np.broadcast_to(bound, err.shape).flat[worst]:.3g} at {worst}")


def test_fp16_programs_really_hold_fp16_values(executed):
    """Every float value an fp16 program computes is exactly representable in fp16 (rounded at the boundary)."""
    outs, feeds, prog = executed("activation", "fp16")
    everything = prog.run(feeds, keep=True)
    floats = [v for v in everything.values() if isinstance(v, np.ndarray) and v.dtype == np.float32]
    assert len(floats) > 20
    for v in floats:
        np.testing.assert_array_equal(v, v.astype(np.float16).astype(np.float32))
    assert prog.precision == "fp16" and executed("activation", "fp32")[2].precision == "fp32"


def test_op_coverage(executed):
    """Every registered op type occurs in at least one tested program (constexpr ops: test_mil_format.py)."""
    seen = set()
    for family in sorted({c.family for c in CASES}):
        seen |= set(executed(family, "fp32")[2].op_counts)
    missing = {n for n in registry() if not n.startswith("constexpr_")} - seen
    assert not missing, f"op implementations without a test case: {sorted(missing)}"
