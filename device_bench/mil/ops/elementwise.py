"""Elementwise ops: binary arithmetic and comparisons (numpy broadcasting), unary math, clip, cast, select."""

from __future__ import annotations

import math

import numpy as np

from device_bench.mil.dtypes import ALIASES, round_to
from device_bench.mil.ops import Unsupported, f32, op, scalar


def _pair(x, y):
    """Operands in the type the op computes in: integers stay integers, any float makes both float32."""
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind in "iub" and y.dtype.kind in "iub":
        return x, y
    wide = np.float64 if np.float64 in (x.dtype, y.dtype) else np.float32
    return x.astype(wide, copy=False), y.astype(wide, copy=False)


_BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "maximum": np.maximum, "minimum": np.minimum,
    "floor_div": np.floor_divide, "mod": np.mod, "equal": np.equal, "not_equal": np.not_equal, "less": np.less,
    "less_equal": np.less_equal, "greater": np.greater, "greater_equal": np.greater_equal,
}


def _binary(fn):
    def impl(x, y):
        a, b = _pair(x, y)
        return fn(a, b)
    return impl


for _name, _fn in _BINARY.items():
    op(_name)(_binary(_fn))


@op("real_div")
def real_div(x, y):
    a, b = _pair(x, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.true_divide(a, b)


@op("pow")
def pow_(x, y):
    a, b = _pair(x, y)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return np.power(a.astype(np.float64), b.astype(np.float64))


@op("logical_and")
def logical_and(x, y):
    return np.logical_and(x, y)


@op("logical_or")
def logical_or(x, y):
    return np.logical_or(x, y)


@op("logical_xor")
def logical_xor(x, y):
    return np.logical_xor(x, y)


@op("logical_not")
def logical_not(x):
    return np.logical_not(x)


def _d(x) -> np.ndarray:
    """float64 for transcendental functions: the result is then rounded once to the declared type."""
    return np.asarray(x, dtype=np.float64)


_erf = np.frompyfunc(math.erf, 1, 1)


def erf(x) -> np.ndarray:
    return _erf(_d(x)).astype(np.float64)


_UNARY = {
    "abs": np.abs, "acos": np.arccos, "asin": np.arcsin, "atan": np.arctan, "atanh": np.arctanh, "ceil": np.ceil,
    "cos": np.cos, "cosh": np.cosh, "exp": np.exp, "exp2": np.exp2, "floor": np.floor, "round": np.round,
    "sign": np.sign, "sin": np.sin, "sinh": np.sinh, "sqrt": np.sqrt, "square": np.square, "tan": np.tan,
    "tanh": np.tanh, "erf": erf,
}


def _unary(fn):
    def impl(x):
        x = np.asarray(x)
        if x.dtype.kind in "iu" and fn in (np.abs, np.sign, np.square):
            return fn(x)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            return fn(_d(x))
    return impl


for _name, _fn in _UNARY.items():
    op(_name)(_unary(_fn))


@op("inverse")
def inverse(x, epsilon=1e-4):
    with np.errstate(divide="ignore"):
        return 1.0 / (_d(x) + scalar(epsilon))


@op("log")
def log(x, epsilon=1e-45):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(_d(x) + scalar(epsilon))


@op("rsqrt")
def rsqrt(x, epsilon=1e-12):
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 / np.sqrt(_d(x) + scalar(epsilon))


@op("clip")
def clip(x, alpha, beta):
    return np.minimum(np.maximum(f32(x), f32(alpha)), f32(beta))


@op("threshold")
def threshold(x, alpha):
    return np.maximum(f32(x), f32(alpha))


@op("cast")
def cast(x, dtype):
    name = ALIASES.get(str(dtype))
    if name is None:
        raise Unsupported(f"cast to '{dtype}' is not supported (known: {', '.join(ALIASES)})")
    return round_to(x, name)


@op("identity")
def identity(x):
    return np.asarray(x)


@op("select")
def select(cond, a, b):
    x, y = _pair(a, b)
    return np.where(np.asarray(cond).astype(bool), x, y)
