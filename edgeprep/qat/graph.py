"""Read a Keras 3 Functional (or Sequential) model into a QAT plan, one ``Step`` per layer call.

Each layer is classified by what it becomes in an int8 graph:

- ``linear``   Conv1D/2D/3D, DepthwiseConv2D, SeparableConv2D, Dense: weights fake-quantized per output channel; a
               BatchNormalization that is its only consumer (and whose only input it is) is folded into it. A
               SeparableConv2D is two int8 ops, as TFLite and OpenVINO run it: a depthwise conv, an activation
               quantizer on its output, then the 1x1 pointwise conv (the BN folds into the pointwise one);
- ``folded``   that BatchNormalization: its arithmetic happens inside the linear step;
- ``bias``     ``x + c`` / ``x - c`` of a linear step's output and a scalar constant (a ``keras.ops`` call, as
               hard-sigmoid's ``x + 3`` in MobileNetV3): converters fold it into that step's bias, so there is no
               quantizer between them (the float twin and the PTQ graph have one op where a quantizer would make
               two, and the per-layer error would pair the wrong tensors);
- ``act``      activations; ReLU/ReLU6 right after a linear/add step (or its ``bias``) are fused into it (no
               quantizer between);
- ``same``     ops that keep their input's scale (max-pool, reshape, flatten, dropout, padding): no quantizer;
- ``quant``    other supported ops (add, concat, mean, multiply, standalone BN, rescaling): output quantized;
- ``float``    anything else (custom layers, nested models, unsupported configs): run as-is, not quantized,
               listed with the reason. Its output is quantized so the rest of the graph stays int8.

A step whose activation has no int8 kernel in TFLite (ELU) keeps its kind (OpenVINO runs it between FakeQuantize
nodes) but carries a ``reason`` and is listed under ``kept_float``: TFLite runs that op in float.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LINEAR = {"Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D", "Dense"}
SAME_SCALE = {"MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "Flatten", "Reshape", "Dropout", "SpatialDropout1D",
              "SpatialDropout2D", "ZeroPadding1D", "ZeroPadding2D", "Identity", "GaussianNoise", "GaussianDropout",
              "GlobalMaxPooling1D", "GlobalMaxPooling2D", "Cropping2D", "Permute"}
QUANT = {"Add", "Concatenate", "Multiply", "Subtract", "Average", "AveragePooling1D", "AveragePooling2D",
         "GlobalAveragePooling1D", "GlobalAveragePooling2D", "BatchNormalization", "Rescaling"}
ACTIVATIONS = {"relu", "relu6", "softmax", "sigmoid", "tanh", "linear", "silu", "swish", "hard_swish",
               "hard_silu", "elu", "leaky_relu"}
HARD_SWISH = {"hard_swish", "hard_silu"}    # Keras 3 names hard_swish by its alias hard_silu
FUSABLE = {"relu", "relu6"}
# Activations a conv/dense carries fused in the int8 graph: no int8 tensor between the op and its activation.
# Any other built-in activation gets a range point on its input (the pre-activation tensor).
FUSED = FUSABLE | {"linear"}
# Activations TFLite's converter leaves in float (no int8 kernel), with the reason given in the plan.
TFLITE_FLOAT = {"elu": "TFLite has no int8 ELU kernel: the ELU runs in float between int8 tensors"}
# Fixed output ranges TFLite requires for these int8 kernels (scale 1/256 or 1/128).
FIXED_RANGE = {"softmax": (0.0, 255.0 / 256.0), "sigmoid": (0.0, 255.0 / 256.0), "tanh": (-1.0, 127.0 / 128.0)}


@dataclass
class Step:
    layer: object
    node: object
    kind: str                       # input, linear, folded, bias, act, same, quant, float
    activation: str | None = None   # for act steps, and for linear steps with a built-in activation
    fold: object | None = None      # the BatchNormalization folded into a linear step
    quantize_output: bool = True
    reason: str | None = None       # why a layer (or, TFLITE_FLOAT, its activation) is kept float
    consumers: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.layer.name


def activation_name(fn) -> str | None:
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return name.lower() if name else None


def _relu_kind(layer) -> str | None:
    """'relu'/'relu6' when a ReLU layer is a plain (fusable) one, else None."""
    if getattr(layer, "negative_slope", 0) or getattr(layer, "threshold", 0):
        return None
    mv = getattr(layer, "max_value", None)
    return "relu" if mv is None else ("relu6" if float(mv) == 6.0 else None)


def functional_of(model):
    """The Functional graph behind a model (Sequential models keep one in ``_functional``)."""
    import keras

    if isinstance(model, keras.Sequential):
        inner = getattr(model, "_functional", None)
        if inner is None:
            from edgeprep.errors import ModelError

            raise ModelError(f"{model.name}: the Sequential model is not built", "build it with an Input first")
        return inner
    if not hasattr(model, "_nodes_by_depth"):
        from edgeprep.errors import ModelError

        raise ModelError(f"{model.name}: QAT needs a Functional or Sequential Keras model (a subclassed model has "
                         "no graph to rewrite)", "rebuild the model with the Functional API")
    return model


def plan(model) -> list[Step]:
    """The model's layer calls in execution order, each classified (see the module docstring)."""
    fn = functional_of(model)
    nodes = [n for d in sorted(fn._nodes_by_depth, reverse=True) for n in fn._nodes_by_depth[d]]
    steps, producer = [], {}
    for node in nodes:
        layer = node.operation
        step = _classify(layer, node)
        steps.append(step)
        for t in node.outputs:
            producer[id(t)] = step
    for step in steps:
        if step.kind == "input":
            continue
        for t in step.node.input_tensors:
            if id(t) in producer:
                producer[id(t)].consumers.append(step)
    _fold_and_fuse(steps, producer)
    for step in steps:
        if step.kind in ("linear", "act") and step.activation in TFLITE_FLOAT:
            step.reason = TFLITE_FLOAT[step.activation]
    return steps


def _classify(layer, node) -> Step:
    cls = type(layer).__name__
    if node.is_input or cls == "InputLayer":
        return Step(layer, node, "input")
    if len([n for n in layer._inbound_nodes]) > 1:
        return Step(layer, node, "float", reason="shared layer (called more than once)")
    if cls in LINEAR:
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            return Step(layer, node, "float", reason="channels_first layout")
        if getattr(layer, "groups", 1) != 1:
            return Step(layer, node, "float", reason="grouped convolution")
        act = activation_name(layer.activation)
        if act not in ACTIVATIONS:
            return Step(layer, node, "float", reason=f"activation '{act}' is not handled")
        return Step(layer, node, "linear", activation=act)
    if cls == "ReLU":
        kind = _relu_kind(layer)
        return Step(layer, node, "act", activation=kind) if kind else \
            Step(layer, node, "float", reason="ReLU with slope/threshold")
    if cls == "Activation":
        act = activation_name(layer.activation)
        return Step(layer, node, "act", activation=act) if act in ACTIVATIONS else \
            Step(layer, node, "float", reason=f"activation '{act}' is not handled")
    if cls == "Softmax":
        return Step(layer, node, "act", activation="softmax")
    if cls in SAME_SCALE:
        return Step(layer, node, "same", quantize_output=False)
    if cls in QUANT:
        if cls == "BatchNormalization" and layer.axis not in (-1, len(node.input_tensors[0].shape) - 1):
            return Step(layer, node, "float", reason="BatchNormalization over a non-channel axis")
        return Step(layer, node, "quant")
    return Step(layer, node, "float", reason=f"layer type {cls} is not handled by the quantizer")


def is_bias_constant(step: Step) -> bool:
    """Is ``step`` ``x + c``, ``c + x`` or ``x - c`` of one tensor and a scalar constant, as a ``keras.ops`` call
    (not a layer)? Converters fold such a shift into the bias of a conv/dense that feeds it."""
    import keras

    if type(step.layer).__name__ not in ("Add", "Subtract") or isinstance(step.layer, keras.layers.Layer):
        return False
    args, kwargs = step.node.arguments.args, step.node.arguments.kwargs
    if len(args) != 2 or kwargs or len(step.node.input_tensors) != 1:
        return False
    tensor_first = isinstance(args[0], keras.KerasTensor)
    const = args[1] if tensor_first else args[0]
    if type(step.layer).__name__ == "Subtract" and not tensor_first:
        return False        # c - x negates the conv's output: not a bias shift
    return isinstance(const, (int, float, np.number)) and not isinstance(const, bool)


def _fold_and_fuse(steps: list[Step], producer: dict) -> None:
    for step in steps:
        if step.kind != "linear" or step.activation != "linear" or len(step.consumers) != 1:
            continue
        bn = step.consumers[0]
        if type(bn.layer).__name__ == "BatchNormalization" and bn.kind == "quant" \
                and len(bn.node.input_tensors) == 1:
            step.fold, bn.kind, bn.quantize_output = bn.layer, "folded", False
    tails = {}      # linear step -> the last step converters merge into it (itself, its folded BN, its bias)
    for step in steps:
        if step.kind != "linear":
            continue
        tail = step.consumers[0] if step.fold is not None else step
        if step.activation == "linear" and len(tail.consumers) == 1 and tail.consumers[0].kind == "quant" \
                and is_bias_constant(tail.consumers[0]):
            tail = tail.consumers[0]
            tail.kind = "bias"
            step.quantize_output = False
        tails[id(step)] = tail
    for step in steps:
        if step.kind not in ("linear", "quant") or step.activation not in (None, "linear"):
            continue
        tail = tails.get(id(step), step)
        if len(tail.consumers) == 1 and tail.consumers[0].kind == "act" \
                and tail.consumers[0].activation in FUSABLE and type(step.layer).__name__ in LINEAR | {"Add"}:
            tail.quantize_output = False
            step.quantize_output = False


def summary(steps: list[Step]) -> dict:
    """What the plan does, for the report."""
    return {
        "layers": sum(1 for s in steps if s.kind != "input"),
        "quantized_weights": [s.name for s in steps if s.kind == "linear"],
        "folded_batchnorm": {s.name: s.fold.name for s in steps if s.fold is not None},
        "kept_float": [{"layer": s.name, "type": type(s.layer).__name__, "reason": s.reason}
                       for s in steps if s.kind == "float" or s.reason],
    }
