"""One converter per ONNX operator: ``(walk, node, inputs) -> outputs``, registered explicitly in ``OPS``.

Keras layers only (no Lambda, no custom layers), so converted models save as ``.keras`` and every Keras stage of
edgeprep reads them. Constant subgraphs (Shape -> Gather -> Concat -> Reshape chains) are evaluated with numpy
(``FOLD``); ``Shape`` gives 0 for the batch axis, which ``Reshape`` reads as "keep the batch".
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from edgeprep.onnx.graph import (
    NHWC,
    BNBinding,
    Value,
    Walk,
    attrs,
    call,
    const_for,
    explicit_pads,
    identity,
    keras_padding,
    order_preserving,
    spatial,
    to_perm,
)

Converter = Callable[[Walk, object, list], list]
OPS: dict[str, Converter] = {}


def register(*names: str):
    def deco(fn: Converter) -> Converter:
        for name in names:
            if name in OPS:
                raise ValueError(f"ONNX op {name} registered twice")
            OPS[name] = fn
        return fn
    return deco


def _layers():
    import keras

    return keras.layers


def _const(walk: Walk, v: Value | None, what: str) -> np.ndarray:
    if v is None or not v.is_const:
        raise walk.unsupported(f"{what} must be a constant (an initializer), not computed")
    return v.const


# -- convolution, normalization, dense -------------------------------------------------------------------------

@register("Conv")
def conv(walk: Walk, node, ins: list) -> list:
    L = _layers()
    a = attrs(node)
    w = _const(walk, ins[1], "the Conv weight").astype(np.float32)
    b = None if len(ins) < 3 or ins[2] is None else _const(walk, ins[2], "the Conv bias").astype(np.float32)
    if w.ndim != 4:
        raise walk.unsupported(f"a {w.ndim - 2}-D convolution (only 2-D is handled)")
    x = to_perm(walk, ins[0], NHWC)
    cin = x.tensor.shape[-1]
    cout, cin_g, kh, kw = w.shape
    group = int(a.get("group", 1))
    strides = tuple(a.get("strides", (1, 1)))
    dil = tuple(a.get("dilations", (1, 1)))
    hw = spatial(x)
    pads = explicit_pads(walk, a, hw, (kh, kw), strides, dil)
    padding = keras_padding(pads, hw, (kh, kw), strides, dil)
    t = x.tensor
    if padding is None:      # zero padding then a valid convolution: exactly ONNX's explicit pads
        _, t = call(walk, L.ZeroPadding2D, t, suffix="_pad", padding=((pads[0], pads[2]), (pads[1], pads[3])))
        padding = "valid"
    common = dict(kernel_size=(kh, kw), strides=strides, padding=padding, dilation_rate=dil, use_bias=b is not None)
    if group == 1:
        layer, out = call(walk, L.Conv2D, t, filters=cout, **common)
        weights = [w.transpose(2, 3, 1, 0)]
    elif group == cin and cin_g == 1:
        mult = cout // cin
        layer, out = call(walk, L.DepthwiseConv2D, t, depth_multiplier=mult, **common)
        weights = [w.reshape(cin, mult, kh, kw).transpose(2, 3, 0, 1)]
    else:
        layer, out = call(walk, L.Conv2D, t, filters=cout, groups=group, **common)
        weights = [w.transpose(2, 3, 1, 0)]
    layer.set_weights(weights + ([b] if b is not None else []))
    return [Value(out, perm=NHWC, linear=layer if b is not None else None)]


@register("BatchNormalization")
def batch_norm(walk: Walk, node, ins: list) -> list:
    a = attrs(node)
    if int(a.get("training_mode", 0)):
        raise walk.unsupported("training_mode=1", "export the model in inference mode (model.eval())")
    if len(node.output) > 1 and any(node.output[1:]):
        raise walk.unsupported("running-statistics outputs", "export the model in inference mode (model.eval())")
    params = [_const(walk, v, "BatchNormalization parameters").astype(np.float32) for v in ins[1:5]]
    x = ins[0]
    if x.is_const:
        raise walk.unsupported("BatchNormalization of a constant")
    if x.rank == 4:
        x = to_perm(walk, x, NHWC)
    axis = int(list(x.perm).index(1))
    layer, out = call(walk, _layers().BatchNormalization, x.tensor, axis=axis,
                      epsilon=float(a.get("epsilon", 1e-5)), momentum=float(a.get("momentum", 0.9)))
    layer.set_weights(params)
    walk.bn.append(BNBinding(layer.name, node.name, *node.input[1:5]))
    return [Value(out, perm=x.perm)]


def _dense(walk: Walk, x: Value, kernel: np.ndarray, bias: np.ndarray | None) -> Value:
    x = to_perm(walk, x, identity(x.rank))
    layer, out = call(walk, _layers().Dense, x.tensor, units=int(kernel.shape[1]), use_bias=bias is not None)
    layer.set_weights([kernel.astype(np.float32)] + ([np.broadcast_to(bias, (kernel.shape[1],)).astype(np.float32)]
                                                     if bias is not None else []))
    return Value(out, perm=x.perm, linear=layer if bias is not None else None)


@register("Gemm")
def gemm(walk: Walk, node, ins: list) -> list:
    a = attrs(node)
    if int(a.get("transA", 0)) or ins[0].is_const or ins[0].rank != 2:
        raise walk.unsupported("Gemm with a transposed or constant first input")
    w = _const(walk, ins[1], "the Gemm weight")
    w = (w.T if int(a.get("transB", 0)) else w) * float(a.get("alpha", 1.0))
    c = None if len(ins) < 3 or ins[2] is None else _const(walk, ins[2], "the Gemm bias") * float(a.get("beta", 1.0))
    return [_dense(walk, ins[0], w, c)]


@register("MatMul")
def matmul(walk: Walk, node, ins: list) -> list:
    if ins[0].is_const or ins[1] is None or not ins[1].is_const or ins[1].const.ndim != 2:
        raise walk.unsupported("MatMul of two computed tensors (only tensor x constant matrix is handled)")
    bias = None
    users = walk.consumers.get(node.output[0], [])
    if len(users) == 1 and users[0].op_type == "Add":      # MatMul + Add(bias): one Dense with a bias
        other = [i for i in users[0].input if i != node.output[0]]
        v = walk.values.get(other[0]) if len(other) == 1 else None
        if v is not None and v.is_const and v.const.size == ins[1].const.shape[1] and v.const.ndim <= 1 + 1:
            bias = v.const.reshape(-1)
            walk.skip.add(users[0].name or id(users[0]))
            walk.aliases[users[0].output[0]] = node.output[0]
    return [_dense(walk, ins[0], ins[1].const, bias)]


def _affine(walk: Walk, v: Value, name: str, scale, offset) -> Value:
    """``v * scale + offset`` (constants laid out like ``v``'s storage): folded into the conv/dense that computed
    ``v`` when nothing else reads it and the constants are per output channel — as converters fold such a shift into
    the bias (and as NNCF's bias correction needs: it refuses a scalar Add after a conv) — else a Rescaling layer."""
    layer = v.linear
    users = walk.consumers.get(name, [])
    channels = v.tensor.shape[-1]

    def per_channel(c):
        c = np.asarray(c, np.float32)
        if c.size == 1:
            return np.full(channels, float(c.reshape(())), np.float32)
        if c.ndim >= 1 and c.shape[-1] == channels and c.size == channels:
            return c.reshape(channels)
        return None
    s, o = per_channel(scale), per_channel(offset)
    if layer is not None and len(users) == 1 and name not in walk.outputs and s is not None and o is not None:
        kernel, bias = layer.get_weights()
        if type(layer).__name__ == "DepthwiseConv2D":
            kernel = kernel * s.reshape(kernel.shape[2], kernel.shape[3])
        else:
            kernel = kernel * s
        layer.set_weights([kernel, bias * s + o])
        return Value(v.tensor, perm=v.perm, linear=layer)

    def arg(c):
        return float(c) if np.ndim(c) == 0 else np.asarray(c, np.float32)
    return _act(walk, v, _layers().Rescaling, scale=arg(scale), offset=arg(offset))


# -- activations ---------------------------------------------------------------------------------------------------

def _act(walk: Walk, v: Value, cls, **kw) -> Value:
    _, out = call(walk, cls, v.tensor, **kw)
    return Value(out, perm=v.perm)


@register("Relu")
def relu(walk, node, ins):
    return [_act(walk, ins[0], _layers().ReLU)]


@register("LeakyRelu")
def leaky_relu(walk, node, ins):
    return [_act(walk, ins[0], _layers().LeakyReLU, negative_slope=float(attrs(node).get("alpha", 0.01)))]


@register("Clip")
def clip(walk, node, ins):
    a = attrs(node)
    lo = a.get("min", -np.inf) if walk.opset < 11 else (-np.inf if len(ins) < 2 or ins[1] is None
                                                        else float(_const(walk, ins[1], "Clip min")))
    hi = a.get("max", np.inf) if walk.opset < 11 else (np.inf if len(ins) < 3 or ins[2] is None
                                                       else float(_const(walk, ins[2], "Clip max")))
    if lo != 0:
        raise walk.unsupported(f"Clip to [{lo}, {hi}] (only Clip(0, max), ReLU/ReLU6, is handled)")
    return [_act(walk, ins[0], _layers().ReLU, **({} if np.isinf(hi) else {"max_value": float(hi)}))]


@register("Sigmoid", "Tanh")
def sigmoid(walk, node, ins):
    return [_act(walk, ins[0], _layers().Activation, activation=node.op_type.lower())]


@register("HardSwish")
def hard_swish(walk, node, ins):
    return [_act(walk, ins[0], _layers().Activation, activation="hard_swish")]


@register("HardSigmoid")
def hard_sigmoid(walk, node, ins):
    """clip(alpha x + beta, 0, 1) = relu6(6 alpha x + 6 beta) / 6: layers every quantizer stage knows."""
    a = attrs(node)
    alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    L = _layers()
    v = _affine(walk, ins[0], node.input[0], 6 * alpha, 6 * beta)
    v = _act(walk, v, L.ReLU, max_value=6.0)
    return [_act(walk, v, L.Rescaling, scale=1 / 6)]


@register("Softmax")
def softmax(walk, node, ins):
    v = ins[0]
    axis = int(attrs(node).get("axis", -1 if walk.opset >= 13 else 1)) % v.rank
    if walk.opset < 13 and axis != v.rank - 1:
        raise walk.unsupported(f"opset-{walk.opset} Softmax over axes {axis}.. (flattened)")
    return [_act(walk, v, _layers().Softmax, axis=int(list(v.perm).index(axis)))]


# -- elementwise ---------------------------------------------------------------------------------------------------

@register("Add", "Sub", "Mul", "Div")
def binary(walk, node, ins):
    L = _layers()
    a, b = ins
    op = node.op_type
    if not a.is_const and not b.is_const:
        if a.rank != b.rank:
            raise walk.unsupported(f"{op} of a {a.rank}-D and a {b.rank}-D tensor")
        if op == "Div":
            raise walk.unsupported("Div of two computed tensors")
        b = to_perm(walk, b, a.perm)
        cls = {"Add": L.Add, "Sub": L.Subtract, "Mul": L.Multiply}[op]
        _, out = call(walk, cls, [a.tensor, b.tensor])
        return [Value(out, perm=a.perm)]
    tensor_first = not a.is_const
    x, c = (a, b.const) if tensor_first else (b, a.const)
    c = const_for(x, c, walk)
    if op == "Mul":
        scale, offset = c, 0.0
    elif op == "Add":
        scale, offset = 1.0, c
    elif op == "Sub":
        scale, offset = (1.0, -c) if tensor_first else (-1.0, c)
    else:
        if not tensor_first:
            raise walk.unsupported("Div of a constant by a tensor")
        scale, offset = 1.0 / c, 0.0
    if np.all(np.asarray(scale) == 1) and np.all(np.asarray(offset) == 0):
        return [x]
    return [_affine(walk, x, node.input[0] if tensor_first else node.input[1], scale, offset)]


# -- pooling -------------------------------------------------------------------------------------------------------

@register("GlobalAveragePool", "GlobalMaxPool")
def global_pool(walk, node, ins):
    L = _layers()
    x = to_perm(walk, ins[0], NHWC)
    cls = L.GlobalAveragePooling2D if node.op_type == "GlobalAveragePool" else L.GlobalMaxPooling2D
    return [_act(walk, x, cls, keepdims=True)]


@register("ReduceMean")
def reduce_mean(walk, node, ins):
    a = attrs(node)
    v = ins[0]
    axes = a.get("axes")
    if axes is None and len(ins) > 1 and ins[1] is not None:
        axes = _const(walk, ins[1], "ReduceMean axes").tolist()
    if v.rank != 4 or axes is None:
        raise walk.unsupported("ReduceMean other than over the spatial axes of a 4-D tensor")
    keras_axes = sorted(int(list(v.perm).index(ax % 4)) for ax in axes)
    if keras_axes != [1, 2]:
        raise walk.unsupported(f"ReduceMean over axes {list(axes)} (only the spatial mean is handled)")
    keep = bool(a.get("keepdims", 1))
    _, out = call(walk, _layers().GlobalAveragePooling2D, v.tensor, keepdims=keep)
    if keep:
        return [Value(out, perm=v.perm)]
    rest = [p for p in v.perm if p not in [ax % 4 for ax in axes]]   # remaining ONNX axes, in storage order
    return [Value(out, perm=tuple(int(r) for r in np.argsort(np.argsort(rest))))]


@register("AveragePool", "MaxPool")
def pool(walk, node, ins):
    L = _layers()
    a = attrs(node)
    if len(node.output) > 1 and any(node.output[1:]):
        raise walk.unsupported("MaxPool indices output")
    k = tuple(a["kernel_shape"])
    if len(k) != 2:
        raise walk.unsupported(f"{len(k)}-D pooling")
    strides = tuple(a.get("strides", (1, 1)))
    if tuple(a.get("dilations", (1, 1))) != (1, 1):
        raise walk.unsupported("dilated pooling")
    x = to_perm(walk, ins[0], NHWC)
    hw = spatial(x)
    pads = explicit_pads(walk, a, hw, k, strides, (1, 1))
    if int(a.get("ceil_mode", 0)):
        if any(s is None for s in hw) or any(
                (hw[i] + pads[i] + pads[i + 2] - k[i]) % strides[i] for i in range(2)):
            raise walk.unsupported("ceil_mode=1 where it changes the output size")
    padding = keras_padding(pads, hw, k, strides, (1, 1))
    t = x.tensor
    avg = node.op_type == "AveragePool"
    if padding is None or (avg and padding == "same" and int(a.get("count_include_pad", 0))):
        if not (avg and int(a.get("count_include_pad", 0))):
            raise walk.unsupported(f"padding {pads} that Keras pooling cannot express",
                                   "use symmetric 'same'-style padding, or pad explicitly before the pool")
        _, t = call(walk, L.ZeroPadding2D, t, suffix="_pad", padding=((pads[0], pads[2]), (pads[1], pads[3])))
        padding = "valid"
    cls = L.AveragePooling2D if avg else L.MaxPooling2D
    _, out = call(walk, cls, t, pool_size=k, strides=strides, padding=padding)
    return [Value(out, perm=NHWC)]


# -- shape ---------------------------------------------------------------------------------------------------------

def _reshape_to(walk: Walk, v: Value, target: list[int]) -> Value:
    """``v`` reshaped to the ONNX shape ``target`` (batch first, kept)."""
    L = _layers()
    src = v.onnx_shape
    per_sample = src[1:]
    if any(d is None for d in per_sample):
        raise walk.unsupported("Reshape of a tensor with dynamic dimensions")
    n_in = int(np.prod(per_sample))
    batch, rest = target[0], [int(per_sample[i]) if d == 0 and i < len(per_sample) else int(d)
                              for i, d in enumerate(target[1:])]
    if batch not in (0, -1) and src[0] not in (None, batch):
        raise walk.unsupported(f"Reshape to {target}, which changes the batch axis")
    if -1 in rest:
        known = int(np.prod([d for d in rest if d != -1]))
        rest[rest.index(-1)] = n_in // max(known, 1)
    if int(np.prod(rest)) != n_in:
        raise walk.unsupported(f"Reshape of {list(src)} to {target}")
    if not order_preserving(v):
        v = to_perm(walk, v, identity(v.rank))
    out_rank = len(rest) + 1
    perm = identity(out_rank)
    if out_rank == 4 and (rest[1] * rest[2] == 1 or rest[0] == 1):
        perm = NHWC                              # [N,C,1,1] stored as [N,1,1,C]: next to conv features
    shape = tuple(([None] + rest)[p] for p in perm)[1:]
    if tuple(v.tensor.shape[1:]) == shape:
        return Value(v.tensor, perm=perm)
    cls, kw = (L.Flatten, {}) if out_rank == 2 else (L.Reshape, {"target_shape": shape})
    _, out = call(walk, cls, v.tensor, **kw)
    return Value(out, perm=perm)


@register("Flatten")
def flatten(walk, node, ins):
    if int(attrs(node).get("axis", 1)) != 1:
        raise walk.unsupported("Flatten with axis other than 1")
    return [_reshape_to(walk, ins[0], [0, -1])]


@register("Reshape")
def reshape(walk, node, ins):
    if int(attrs(node).get("allowzero", 0)):
        raise walk.unsupported("Reshape with allowzero=1")
    return [_reshape_to(walk, ins[0], _const(walk, ins[1], "the Reshape shape").astype(int).tolist())]


def _axes(walk, node, ins, what) -> list[int]:
    a = attrs(node)
    if "axes" in a:
        return list(a["axes"])
    if len(ins) > 1 and ins[1] is not None:
        return _const(walk, ins[1], f"the {what} axes").astype(int).tolist()
    return []


@register("Squeeze")
def squeeze(walk, node, ins):
    v = ins[0]
    shape = list(v.onnx_shape)
    axes = [ax % len(shape) for ax in _axes(walk, node, ins, "Squeeze")] or \
        [i for i, d in enumerate(shape) if d == 1]
    if 0 in axes:
        raise walk.unsupported("Squeeze of the batch axis")
    return [_reshape_to(walk, v, [0] + [d for i, d in enumerate(shape) if i not in axes and i])]


@register("Unsqueeze")
def unsqueeze(walk, node, ins):
    v = ins[0]
    shape = list(v.onnx_shape)
    rank = len(shape) + len(_axes(walk, node, ins, "Unsqueeze"))
    axes = sorted(ax % rank for ax in _axes(walk, node, ins, "Unsqueeze"))
    if 0 in axes:
        raise walk.unsupported("Unsqueeze before the batch axis")
    for ax in axes:
        shape.insert(ax, 1)
    return [_reshape_to(walk, v, [0] + shape[1:])]


@register("Transpose")
def transpose(walk, node, ins):
    v = ins[0]
    p = list(attrs(node).get("perm", list(range(v.rank))[::-1]))
    # onnx_out = onnx_in.transpose(p); keras = onnx_in.transpose(v.perm) = onnx_out.transpose(r), r = p^-1 . perm
    inv = np.argsort(p)
    return [Value(v.tensor, perm=tuple(int(inv[q]) for q in v.perm))]


@register("Concat")
def concat(walk, node, ins):
    if any(v.is_const for v in ins):
        raise walk.unsupported("Concat with a constant input")
    first = ins[0]
    axis = int(attrs(node)["axis"]) % first.rank
    if axis == 0:
        raise walk.unsupported("Concat along the batch axis")
    vs = [to_perm(walk, v, first.perm) for v in ins]
    _, out = call(walk, _layers().Concatenate, [v.tensor for v in vs], axis=int(list(first.perm).index(axis)))
    return [Value(out, perm=first.perm)]


@register("Pad")
def pad(walk, node, ins):
    a = attrs(node)
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = list(a["pads"]) if "pads" in a else _const(walk, ins[1], "the Pad pads").astype(int).tolist()
    value = float(a.get("value", 0.0)) if walk.opset < 11 else (
        0.0 if len(ins) < 3 or ins[2] is None or ins[2].const.size == 0 else float(_const(walk, ins[2], "value")))
    if len(ins) > 3 and ins[3] is not None:
        raise walk.unsupported("Pad with an axes input")
    v = ins[0]
    if mode != "constant" or value != 0.0 or v.rank != 4 or len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) \
            or any(p < 0 for p in pads):
        raise walk.unsupported(f"Pad mode={mode} value={value} pads={pads} (only zero padding of H and W)")
    x = to_perm(walk, v, NHWC)
    _, out = call(walk, _layers().ZeroPadding2D, x.tensor, padding=((pads[2], pads[6]), (pads[3], pads[7])))
    return [Value(out, perm=NHWC)]


@register("Identity", "Dropout")
def passthrough(walk, node, ins):
    if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1]:
        raise walk.unsupported("Dropout mask output")
    return [ins[0]]


@register("Cast")
def cast(walk, node, ins):
    from onnx import TensorProto

    if int(attrs(node)["to"]) != TensorProto.FLOAT:
        raise walk.unsupported("Cast of a computed tensor to a non-float type")
    return [ins[0]]


# -- constant folding ------------------------------------------------------------------------------------------------

def _fold_shape(walk, node, ins):
    shape = [0 if d is None else int(d) for d in ins[0].onnx_shape]
    shape[0] = 0     # the batch: Reshape's 0 keeps it
    return np.asarray(shape, np.int64)


def _fold(walk: Walk, node, ins: list) -> list[np.ndarray] | None:
    """Outputs of a node whose inputs are all constant (or ``Shape`` of a tensor), or None when not foldable."""
    from onnx import numpy_helper

    op = node.op_type
    a = attrs(node)
    if op == "Constant":
        if "value" in a:
            return [numpy_helper.to_array(a["value"])]
        for key in ("value_float", "value_int"):
            if key in a:
                return [np.asarray(a[key])]
        for key in ("value_floats", "value_ints"):
            if key in a:
                return [np.asarray(list(a[key]))]
        return None
    if op == "Shape" and ins and ins[0] is not None:
        return [_fold_shape(walk, node, ins)]
    if not ins or any(v is None or not v.is_const for v in ins if v is not None) or ins[0] is None:
        return None
    c = [None if v is None else v.const for v in ins]
    if op in ("Identity", "Dropout"):
        return [c[0]]
    if op == "Cast":
        return [c[0].astype(numpy_helper.helper.tensor_dtype_to_np_dtype(int(a["to"])))]
    if op == "Gather":
        return [np.take(c[0], c[1], axis=int(a.get("axis", 0)))]
    if op == "Unsqueeze":
        axes = list(a["axes"]) if "axes" in a else c[1].astype(int).tolist()
        out = c[0]
        for ax in sorted(ax % (out.ndim + len(axes)) for ax in axes):
            out = np.expand_dims(out, ax)
        return [out]
    if op == "Squeeze":
        axes = list(a["axes"]) if "axes" in a else (c[1].astype(int).tolist() if len(c) > 1 and c[1] is not None
                                                     else None)
        return [np.squeeze(c[0], axis=None if axes is None else tuple(axes))]
    if op == "Concat":
        return [np.concatenate(c, axis=int(a["axis"]))]
    if op == "Reshape":
        return [c[0].reshape(c[1].astype(int).tolist())]
    if op == "Transpose":
        return [np.transpose(c[0], a.get("perm"))]
    if op == "Slice":
        if walk.opset < 10:
            starts, ends, axes = a["starts"], a["ends"], a.get("axes")
            steps = None
        else:
            starts, ends = c[1].tolist(), c[2].tolist()
            axes = c[3].tolist() if len(c) > 3 and c[3] is not None else None
            steps = c[4].tolist() if len(c) > 4 and c[4] is not None else None
        axes = list(range(len(starts))) if axes is None else axes
        index = [slice(None)] * c[0].ndim
        for i, ax in enumerate(axes):
            index[ax] = slice(int(starts[i]), int(ends[i]), int(steps[i]) if steps else 1)
        return [c[0][tuple(index)]]
    if op in ("ReduceProd", "ReduceSum"):
        axes = a.get("axes") if "axes" in a or len(c) < 2 or c[1] is None else c[1].tolist()
        fn = np.prod if op == "ReduceProd" else np.sum
        out = fn(c[0], axis=None if axes is None else tuple(axes), keepdims=bool(a.get("keepdims", 1)))
        return [np.asarray(out, c[0].dtype)]
    if op in ("Add", "Sub", "Mul", "Div"):
        fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
        out = fn(c[0], c[1])
        return [out.astype(c[0].dtype) if op != "Div" or c[0].dtype.kind == "f" else out.astype(c[0].dtype)]
    return None


FOLD = _fold
SUPPORTED = tuple(sorted(OPS))
