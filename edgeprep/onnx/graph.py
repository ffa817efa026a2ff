"""The ONNX -> Keras 3 Functional walk: values, their layouts, and the helpers every op converter uses.

A converted value is a Keras tensor (or a numpy constant) plus ``perm``: the Keras tensor is the ONNX tensor
transposed by ``perm``. Convolutions, pools and BatchNorm need channels-last storage of an ONNX channels-first
tensor (``NHWC`` = (0, 2, 3, 1)); elementwise ops, Concat and Softmax work in whatever storage their inputs have, with
axes and constants remapped; ``Transpose`` nodes only change ``perm`` and cost nothing. A ``Permute`` layer is
inserted only where a value must change storage (a ``Flatten`` of a non-1x1 feature map, the graph output, a
channels-first input fed to the first Conv). So an NCHW graph becomes an ordinary NHWC Keras model — Conv2D,
DepthwiseConv2D, BatchNormalization, Dense, ReLU ... — on which every Keras stage (BN calibration, folding, PTQ, QAT)
applies unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edgeprep.errors import InputError

NHWC = (0, 2, 3, 1)


class UnsupportedOp(InputError):
    """An ONNX operator (or an attribute of one) the converter does not handle."""


@dataclass
class Value:
    tensor: Any = None                 # a KerasTensor, or None for a constant
    const: np.ndarray | None = None
    perm: tuple[int, ...] = ()
    linear: Any = None                 # the Conv2D/DepthwiseConv2D/Dense layer (with a bias) that computed it

    @property
    def is_const(self) -> bool:
        return self.tensor is None

    @property
    def rank(self) -> int:
        return self.const.ndim if self.is_const else len(self.tensor.shape)

    @property
    def onnx_shape(self) -> tuple:
        """The ONNX tensor's shape (None for the batch and unknown axes)."""
        if self.is_const:
            return tuple(self.const.shape)
        k = tuple(self.tensor.shape)
        inv = np.argsort(self.perm)
        return tuple(k[int(inv[i])] for i in range(len(k)))


@dataclass
class BNBinding:
    """A converted BatchNormalization: the Keras layer and the ONNX initializers holding its parameters."""

    layer: str
    node: str
    scale: str
    bias: str
    mean: str
    var: str


@dataclass
class Walk:
    """State of one conversion: values by ONNX name, constants, unique layer names, what was made."""

    values: dict[str, Value] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)
    consumers: dict[str, list] = field(default_factory=dict)
    skip: set[str] = field(default_factory=set)          # nodes already absorbed by another (MatMul + Add)
    aliases: dict[str, str] = field(default_factory=dict)
    outputs: set[str] = field(default_factory=set)        # the graph's output names
    bn: list[BNBinding] = field(default_factory=list)
    ops: dict[str, int] = field(default_factory=dict)
    opset: int = 17
    node: Any = None                                      # the node being converted (for messages)

    def layer_name(self, base: str) -> str:
        name = re.sub(r"[^A-Za-z0-9_]", "_", base).strip("_") or "layer"
        if not name[0].isalpha():
            name = "n_" + name
        out, i = name, 1
        while out in self.names:
            i += 1
            out = f"{name}_{i}"
        self.names.add(out)
        return out

    def unsupported(self, what: str, fix: str = "") -> UnsupportedOp:
        n = self.node
        return UnsupportedOp(f"ONNX node '{label(n)}' ({n.op_type}): {what}",
                             fix or "supported ops are listed in 'edgeprep convert --help'; replace the op in the "
                                    "exported model (e.g. with one of those ops) and export again")


def attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def label(node) -> str:
    """A node's name for messages and layer names: its name, else its first output."""
    return node.name or (node.output[0] if node.output else "") or node.op_type.lower()


def call(walk: Walk, layer_cls: Callable, x, suffix: str = "", **kwargs):
    """Apply a new Keras layer named after the current node (``suffix`` for a helper layer before the main one)."""
    layer = layer_cls(name=walk.layer_name(label(walk.node) + suffix), **kwargs)
    return layer, layer(x)


def to_perm(walk: Walk, v: Value, perm: tuple[int, ...]) -> Value:
    """``v`` stored as ``onnx.transpose(perm)`` (a Permute layer when its storage differs)."""
    import keras

    if v.is_const:
        raise walk.unsupported("a constant where a tensor is expected")
    if v.perm == tuple(perm):
        return v
    inv = np.argsort(v.perm)
    r = [int(inv[q]) for q in perm]
    if r[0] != 0:
        raise walk.unsupported("a transpose that moves the batch axis")
    _, t = call(walk, keras.layers.Permute, v.tensor, dims=tuple(r[1:]))
    return Value(t, perm=tuple(perm))


def identity(rank: int) -> tuple[int, ...]:
    return tuple(range(rank))


def order_preserving(v: Value) -> bool:
    """Whether the Keras storage of ``v`` lists its elements in the ONNX order (axes of size 1 do not count)."""
    shape = v.onnx_shape
    moved = [p for p in v.perm if shape[p] != 1]
    return moved == sorted(moved)


def const_for(v: Value, c: np.ndarray, walk: Walk) -> np.ndarray:
    """A constant broadcast against ``v`` (ONNX semantics), laid out like ``v``'s storage, without the batch axis."""
    c = np.asarray(c, np.float32)
    if c.size == 1:
        return c.reshape(())
    if c.ndim > v.rank:
        raise walk.unsupported(f"a constant of shape {list(c.shape)} broadcast against a {v.rank}-D tensor")
    c = c.reshape((1,) * (v.rank - c.ndim) + c.shape).transpose(v.perm)
    if c.shape[0] != 1:
        raise walk.unsupported("a constant with a batch axis")
    return c[0]


def spatial(v: Value) -> tuple:
    """(H, W) of an ONNX NCHW value (None where unknown)."""
    s = v.onnx_shape
    return s[2], s[3]


def tf_same_pads(size: int | None, k: int, stride: int, dilation: int = 1) -> tuple[int, int] | None:
    """The (before, after) padding of TensorFlow's ``same`` for an axis of ``size`` (None when size is unknown)."""
    eff = (k - 1) * dilation + 1
    if size is None:
        return ((eff - 1) // 2, eff - 1 - (eff - 1) // 2) if stride == 1 else None
    out = -(-size // stride)
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


def explicit_pads(walk: Walk, a: dict, hw: tuple, kernel: tuple, strides: tuple, dilations: tuple) -> list[int]:
    """ONNX pads [top, left, bottom, right] from ``pads`` or ``auto_pad``."""
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if len(pads) != 4:
            raise walk.unsupported(f"{len(pads) // 2}-D padding (only 2-D images are handled)")
        return pads
    if auto == "VALID":
        return [0, 0, 0, 0]
    same = [tf_same_pads(hw[i], kernel[i], strides[i], dilations[i]) for i in range(2)]
    if any(s is None for s in same):
        raise walk.unsupported(f"auto_pad {auto} with a dynamic input size")
    if auto == "SAME_LOWER":
        same = [(b_, a_) for a_, b_ in same]
    return [same[0][0], same[1][0], same[0][1], same[1][1]]


def keras_padding(pads: list[int], hw: tuple, kernel: tuple, strides: tuple, dilations: tuple) -> str | None:
    """"valid" or "same" when Keras' padding computes exactly ``pads``; None when it does not."""
    if not any(pads):
        return "valid"
    same = [tf_same_pads(hw[i], kernel[i], strides[i], dilations[i]) for i in range(2)]
    if all(s is not None for s in same) and [same[0][0], same[1][0], same[0][1], same[1][1]] == list(pads):
        return "same"
    return None
