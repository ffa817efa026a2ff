"""The ONNX input: its layout (NCHW or NHWC), the layout the converted graph and its artifacts take, and its
dynamic dimensions fixed — each choice with the reason it was made, for the report.

Layout of the ONNX input, in this order of evidence: the graph (the input feeds a ``Conv`` directly: NCHW; it feeds
a ``Transpose`` to channels-first first, as tf2onnx exports Keras models: NHWC), then the dimensions (``[N,C,H,W]``
with C in {1, 3}: NCHW; ``[N,H,W,C]``: NHWC), then ONNX's own convention (NCHW).

The layout the converted Keras graph and every artifact take is the data's layout (``Preprocess.layout``:
``--layout`` or ``[preprocess] layout``; default NHWC, what mobile camera pipelines deliver). ONNX Runtime, the float
reference, is fed the same samples transposed to the ONNX input's own layout — an exact permutation.

Dynamic dimensions (``?`` height/width/channels) are fixed from, in this order: an explicit ``input_shape``, the
data's preprocessed sample shape (which a ``resize`` in the target profile, the data manifest or ``--resize``
sets), or the preprocessing alone when there is no data. The batch axis stays symbolic in the Keras graph; the
converters give every artifact a static batch of 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edgeprep.errors import InputError

Layout = Literal["NCHW", "NHWC"]


@dataclass(frozen=True)
class InputPlan:
    """How the ONNX input is fed: its layout, the artifacts' layout, and the fixed dimensions (both without batch)."""

    onnx_layout: Layout
    onnx_layout_reason: str
    layout: Layout                             # what the Keras graph, the artifacts and the data use
    layout_reason: str
    declared: tuple[int | str, ...]            # the ONNX input's dimensions as declared ("N", "?" when symbolic)
    onnx_shape: tuple[int, ...]                # fixed, in the ONNX layout, without batch
    fixed: tuple[tuple[str, str], ...] = ()   # (axis, "28 from the data") for every dimension that was dynamic

    @property
    def shape(self) -> tuple[int, ...]:
        """The fixed input shape in ``layout``, without batch (the Keras graph's input)."""
        dims = dict(zip(self.onnx_layout[1:], self.onnx_shape))
        return tuple(dims[a] for a in self.layout[1:])

    @property
    def to_onnx(self) -> tuple[int, ...] | None:
        """The transpose from ``layout`` to the ONNX input's layout (None when they are the same)."""
        if self.layout == self.onnx_layout:
            return None
        return tuple(self.layout.index(a) for a in self.onnx_layout)

    @property
    def keras_perm(self) -> tuple[int, ...]:
        """keras input = onnx input transposed by this permutation."""
        return tuple(self.onnx_layout.index(a) for a in self.layout)

    def describe(self) -> dict:
        batch = self.declared[0]
        return {"onnx_input": {"dims": list(self.declared), "layout": self.onnx_layout,
                               "layout_from": self.onnx_layout_reason},
                "artifact_input": {"shape": [1, *self.shape], "layout": self.layout, "layout_from": self.layout_reason,
                                   "batch": "1 (OpenVINO and Core ML: static; TFLite: 1 by default, resizable); "
                                            f"the ONNX batch axis is {batch!r}"},
                "dynamic_dims_fixed": {axis: how for axis, how in self.fixed}}


def declared_dims(value_info) -> tuple[int | str, ...]:
    """An ONNX value's dimensions: ints where static, the symbol (or "?") where not."""
    dims = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return tuple(dims)


def onnx_layout(graph, dims: tuple[int | str, ...]) -> tuple[Layout, str]:
    """The ONNX input's layout and why (see the module docstring)."""
    name = graph.input[0].name if graph.input else ""
    consumers = [n for n in graph.node if name in n.input]
    for n in consumers:
        if n.op_type == "Conv":
            return "NCHW", f"the input feeds Conv '{n.name}' directly (ONNX Conv is channels-first)"
        if n.op_type == "Transpose":
            perm = next((list(a.ints) for a in n.attribute if a.name == "perm"), None)
            if perm == [0, 3, 1, 2]:
                return "NHWC", f"the input is transposed to channels-first by '{n.name}' before any Conv"
    c_first, c_last = dims[1] in (1, 3), dims[3] in (1, 3)
    shown = "[" + ",".join(map(str, dims)) + "]"
    if c_first and not c_last:
        return "NCHW", f"the input dims {shown} have 1 or 3 channels on axis 1"
    if c_last and not c_first:
        return "NHWC", f"the input dims {shown} have 1 or 3 channels on the last axis"
    return "NCHW", f"the input dims {shown} do not say; ONNX's convention (PyTorch exports) is NCHW"


def plan_input(graph, layout: Layout, layout_given: bool, sample_shape: tuple[int | None, ...] | None,
               input_shape: tuple[int, ...] | None = None, shape_source: str = "the data",
               where: str = "the ONNX model") -> InputPlan:
    """Resolve the ONNX input of ``graph`` for feeding samples of ``sample_shape`` (in ``layout``, no batch).

    ``input_shape`` (in ``layout``, without batch) wins over the data for dynamic dimensions.
    """
    dims = declared_dims(graph.input[0])
    if len(dims) != 4:
        raise InputError(f"{where}: the input has {len(dims)} dimensions {list(dims)}; edgeprep converts image "
                         "models with one 4-D input (N,C,H,W or N,H,W,C)",
                         "export the model with a 4-D image input")
    native, why = onnx_layout(graph, dims)
    reason = "--layout / [preprocess] layout" if layout_given else \
        "the default: NHWC is what mobile camera pipelines deliver (--layout NCHW keeps the ONNX layout)"
    given = {}
    for source, shape in (("--input-shape", input_shape), (shape_source, sample_shape)):
        if shape is not None and len(shape) == 3:
            for axis, size in zip(layout[1:], shape):
                if size is not None:
                    given.setdefault(axis, (int(size), source))
    fixed, out = [], []
    for axis, d in zip(native[1:], dims[1:]):
        if isinstance(d, int):
            out.append(d)
            continue
        if axis not in given:
            what = {"H": "height", "W": "width", "C": "channels"}[axis]
            raise InputError(f"{where}: the input's {what} is dynamic ('{d}') and nothing fixes it",
                             "give --data (its samples fix it), or --resize H,W (and --channels C)")
        size, source = given[axis]
        out.append(size)
        fixed.append((axis, f"{size} from {source} (declared '{d}')"))
    return InputPlan(native, why, layout, reason, dims, tuple(out), tuple(fixed))
