"""The registry of op implementations: one function per MIL op type, grouped in modules by family.

An implementation is a plain function of the op's MIL parameters (by their MIL names) returning one array, or a
tuple for ops with several outputs. It computes in float32 (float64 where a formula needs it); the executor rounds
each result to the type the program declares (fp16 for fp16 programs). Registration is explicit (``@op("relu")``
in the family modules listed in ``FAMILIES``) and a second registration of a name is refused.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class OpImpl:
    name: str
    fn: Callable
    params: frozenset[str]          # MIL parameter names the implementation accepts
    tuples: frozenset[str]          # parameters that are tuples of tensors (always passed as a list)
    wants_out: bool                 # takes ``_out``: the declared output types (for shape-ambiguous ops)


class Unsupported(ValueError):
    """An op's parameters ask for a variant this implementation does not cover (message names it)."""


OPS: dict[str, OpImpl] = {}
FAMILIES = ("elementwise", "activation", "linear", "conv", "norm", "pool", "reduce", "shape", "resize",
            "constexpr")


def op(*names: str, tuples: tuple[str, ...] = ()):
    """Register ``fn`` as the implementation of the MIL op types ``names``."""
    def deco(fn: Callable) -> Callable:
        params = [p for p in inspect.signature(fn).parameters if p != "_out"]
        for name in names:
            if name in OPS:
                raise ValueError(f"MIL op '{name}' is implemented twice ({OPS[name].fn.__module__} and "
                                 f"{fn.__module__})")
            OPS[name] = OpImpl(name, fn, frozenset(params), frozenset(tuples),
                               "_out" in inspect.signature(fn).parameters)
        return fn
    return deco


def registry() -> dict[str, OpImpl]:
    """Every implemented op, importing the family modules on first use."""
    if not OPS:
        for family in FAMILIES:
            importlib.import_module(f"{__name__}.{family}")
    return OPS


# helpers shared by the family modules -------------------------------------------------------------------------

def f32(x) -> np.ndarray:
    """A tensor as float32 (integers and booleans converted) for computation."""
    return np.asarray(x, dtype=np.float32)


def ints(x) -> list[int]:
    return [int(v) for v in np.asarray(x).reshape(-1)]


def scalar(x, cast=float):
    return cast(np.asarray(x).reshape(-1)[0]) if not isinstance(x, str) else x


def axis_of(axis, rank: int) -> int:
    a = int(np.asarray(axis).reshape(-1)[0])
    return a + rank if a < 0 else a
