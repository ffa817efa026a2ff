"""ONNX test models, made in fixtures from Keras models (no downloads): exported with tf2onnx (what a TensorFlow user
has), or with ``export_unfused`` below (what a PyTorch export looks like: NCHW, BatchNormalization nodes kept, a
symbolic batch and dynamic H/W), and graphs written with ``onnx.helper`` directly.

``export_unfused`` handles the layer types of the models here only; every export is checked against the Keras model
with ONNX Runtime (``assert_same``), so a mistake in it fails the fixture, not a test downstream.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def conv_bn_relu(seed=0):
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((28, 28, 1))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same")(x)
    x = layers.ReLU(6.0)(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(10, activation="softmax")(x), name="conv_bn_relu")


def depthwise_separable(seed=0):
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((28, 28, 1))
    x = layers.Conv2D(8, 3, strides=2, padding="same")(inp)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(6.0)(x)
    x = layers.Conv2D(16, 1)(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="valid", depth_multiplier=2)(x)
    x = layers.Flatten()(x)
    return keras.Model(inp, layers.Dense(10)(x), name="depthwise_separable")


def residual(seed=0):
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((28, 28, 1))
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    y = layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    y = layers.BatchNormalization()(y)
    x = layers.ReLU()(layers.Add()([x, y]))
    x = layers.MaxPooling2D(2)(x)
    x = layers.AveragePooling2D(2)(x)
    x = layers.Flatten()(x)
    return keras.Model(inp, layers.Dense(10, activation="softmax")(x), name="residual")


def se_block(seed=0):
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((28, 28, 1))
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inp)
    s = layers.GlobalAveragePooling2D(keepdims=True)(x)
    s = layers.Conv2D(4, 1, activation="relu")(s)
    s = layers.Conv2D(16, 1, activation="sigmoid")(s)
    x = layers.Multiply()([x, s])
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(10, activation="softmax")(x), name="se_block")


def hard_swish(seed=0):
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((28, 28, 1))
    x = layers.Conv2D(8, 3, strides=2, padding="same")(inp)
    x = layers.Activation("hard_swish")(x)
    x = layers.DepthwiseConv2D(3, padding="same")(x)
    x = layers.Activation("hard_swish")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(10, activation="softmax")(x), name="hard_swish")


ARCHITECTURES = {f.__name__: f for f in (conv_bn_relu, depthwise_separable, residual, se_block, hard_swish)}


def mobilenet_v3_style(channels: int = 3, seed: int = 0, width: int = 16):
    """A tiny MobileNetV3-style classifier: hard-swish stem, inverted residual blocks (expand 1x1, depthwise,
    squeeze-excite with hard-sigmoid, project 1x1, residual add), BatchNorm after every conv, GAP head."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)

    def bn(x):
        return layers.BatchNormalization(momentum=0.9)(x)

    def block(x, expand, out, stride, se):
        y = layers.Activation("hard_swish")(bn(layers.Conv2D(expand, 1, use_bias=False)(x)))
        y = layers.Activation("hard_swish")(bn(layers.DepthwiseConv2D(3, stride, "same", use_bias=False)(y)))
        if se:
            s = layers.GlobalAveragePooling2D(keepdims=True)(y)
            s = layers.Conv2D(max(expand // 4, 4), 1, activation="relu")(s)
            s = layers.Conv2D(expand, 1)(s)
            s = layers.Rescaling(1 / 6, 0.5)(s)              # hard-sigmoid: relu6(x + 3) / 6
            s = layers.ReLU(1.0)(s)
            y = layers.Multiply()([y, s])
        y = bn(layers.Conv2D(out, 1, use_bias=False)(y))
        return layers.Add()([x, y]) if stride == 1 and x.shape[-1] == out else y

    inp = keras.Input((28, 28, channels), name="image")
    x = layers.Activation("hard_swish")(bn(layers.Conv2D(width, 3, 2, "same", use_bias=False)(inp)))
    x = block(x, width * 2, width, 1, se=True)
    x = block(x, width * 3, width * 2, 2, se=False)
    x = block(x, width * 4, width * 2, 1, se=True)
    x = layers.Activation("hard_swish")(bn(layers.Conv2D(width * 6, 1, use_bias=False)(x)))
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.1)(x)
    return keras.Model(inp, layers.Dense(10, activation="softmax")(x), name="mobilenet_v3_style")


def tf2onnx_export(model, path: Path) -> Path:
    """``model`` exported by tf2onnx (NHWC input, as TensorFlow users get it; TensorFlow folds BatchNorm)."""
    import tensorflow as tf
    import tf2onnx

    from edgeprep._util import quiet

    spec = (tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32, name="image"),)
    with quiet():
        proto, _ = tf2onnx.convert.from_function(tf.function(lambda x: model(x, training=False)),
                                                 input_signature=spec, opset=17)
    Path(path).write_bytes(proto.SerializeToString())
    return Path(path)


def export_unfused(model, path: Path, dynamic_hw: bool = True) -> Path:
    """``model`` as an NCHW ONNX graph with BatchNormalization nodes (as torch.onnx.export writes a model in eval
    mode): input ``[N, C, H, W]`` with a symbolic batch and, if ``dynamic_hw``, symbolic H and W."""
    import keras
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, names = [], [], {}
    counter = [0]

    def new(base):
        counter[0] += 1
        return f"{base}_{counter[0]}"

    def const(value, base):
        name = new(base)
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def node(op, ins, base, **kw):
        out = new(base)
        nodes.append(helper.make_node(op, ins, [out], name=f"{base}/{op}_{counter[0]}", **kw))
        return out

    def activation(x, act, base):
        if act in ("linear", None):
            return x
        if act == "relu":
            return node("Relu", [x], base)
        if act == "sigmoid":
            return node("Sigmoid", [x], base)
        if act in ("hard_swish", "hard_silu"):
            return node("HardSwish", [x], base)
        if act == "softmax":
            return node("Softmax", [x], base, axis=-1)
        raise ValueError(f"export_unfused: activation {act}")

    def pads_of(layer, k, s):
        return {"auto_pad": "SAME_UPPER"} if layer.padding == "same" else {"pads": [0, 0, 0, 0]}

    c = model.inputs[0].shape[-1]
    h, w = model.inputs[0].shape[1:3]
    for layer in model.layers:
        inbound = layer._inbound_nodes[0]
        ins = [names[(t._keras_history.operation.name, t._keras_history.tensor_index)]
               for t in inbound.input_tensors]
        base = layer.name
        cls = type(layer).__name__
        if isinstance(layer, keras.layers.InputLayer):
            out = "input"
        elif cls in ("Conv2D", "DepthwiseConv2D"):
            k = layer.kernel.numpy()
            if cls == "Conv2D":
                wt = k.transpose(3, 2, 0, 1)
                group = 1
            else:
                kh, kw, cin, mult = k.shape
                wt = k.transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)
                group = cin
            args = [ins[0], const(wt, base + "_w")] + ([const(layer.bias.numpy(), base + "_b")] if layer.use_bias
                                                      else [])
            out = node("Conv", args, base, kernel_shape=list(wt.shape[2:]), strides=list(layer.strides),
                       group=group, **pads_of(layer, wt.shape[2:], layer.strides))
            out = activation(out, layer.activation.__name__, base)
        elif cls == "BatchNormalization":
            g, b, m, v = layer.get_weights()
            out = node("BatchNormalization", [ins[0], const(g, base + "_scale"), const(b, base + "_bias"),
                                              const(m, base + "_mean"), const(v, base + "_var")], base,
                       epsilon=float(layer.epsilon), momentum=float(layer.momentum))
        elif cls == "ReLU":
            out = node("Relu", ins, base) if layer.max_value is None else \
                node("Clip", [ins[0], const(0.0, base + "_lo"), const(float(layer.max_value), base + "_hi")], base)
        elif cls == "Activation":
            out = activation(ins[0], layer.activation.__name__, base)
        elif cls == "Rescaling":
            out = node("Add", [node("Mul", [ins[0], const(layer.scale, base + "_s")], base),
                               const(layer.offset, base + "_o")], base)
        elif cls in ("Add", "Multiply"):
            out = node({"Add": "Add", "Multiply": "Mul"}[cls], ins, base)
        elif cls == "GlobalAveragePooling2D":
            out = node("GlobalAveragePool", ins, base)
            if not layer.keepdims:
                out = node("Flatten", [out], base)
        elif cls in ("MaxPooling2D", "AveragePooling2D"):
            out = node("MaxPool" if cls == "MaxPooling2D" else "AveragePool", ins, base,
                       kernel_shape=list(layer.pool_size), strides=list(layer.strides), pads=[0, 0, 0, 0])
        elif cls == "Flatten":
            out = node("Flatten", [node("Transpose", ins, base, perm=[0, 2, 3, 1])], base)
        elif cls == "Dense":
            out = node("Gemm", [ins[0], const(layer.kernel.numpy(), base + "_w"), const(layer.bias.numpy(),
                                                                                        base + "_b")], base)
            out = activation(out, layer.activation.__name__, base)
        elif cls == "Dropout":
            out = ins[0]
        else:
            raise ValueError(f"export_unfused: layer type {cls}")
        names[(layer.name, 0)] = out
    dims = ["N", c, "H" if dynamic_hw else h, "W" if dynamic_hw else w]
    graph = helper.make_graph(nodes, model.name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info(names[(model.layers[-1].name, 0)], TensorProto.FLOAT,
                                                             ["N", model.outputs[0].shape[-1]])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeprep-tests")
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return Path(path)


def assert_same(model, path: Path, x_nhwc: np.ndarray, nchw: bool = True, atol: float = 1e-4) -> None:
    """The exported ONNX (ONNX Runtime) computes what the Keras model computes."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)) if nchw else x_nhwc
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    want = np.asarray(model(x_nhwc, training=False))
    np.testing.assert_allclose(got, want, atol=atol, rtol=1e-4)


def bn_graph(path: Path, seed: int = 0) -> Path:
    """An onnx.helper graph with an unfused BatchNormalization and a dynamic H/W input ``[batch, 3, height,
    width]``: Conv(pads 1) - BN - Relu - MaxPool(2) - Conv(stride 2, pads 1) - BN - Clip(0, 6) - ReduceMean(H, W,
    keepdims 0) - MatMul - Add - Softmax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def bn(c, base):
        return [numpy_helper.from_array(a.astype(np.float32), f"{base}_{n}") for a, n in (
            (rng.uniform(0.5, 1.5, c), "scale"), (rng.normal(0, 0.1, c), "bias"), (rng.normal(0, 0.2, c), "mean"),
            (rng.uniform(0.5, 2.0, c), "var"))]

    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.2, (16, 8, 3, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.normal(0, 0.3, (16, 10)).astype(np.float32), "fw"),
             numpy_helper.from_array(rng.normal(0, 0.1, (10,)).astype(np.float32), "fb"),
             numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6.0, np.float32), "hi")] + bn(8, "bn1") + bn(16, "bn2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn1_scale", "bn1_bias", "bn1_mean", "bn1_var"], ["b1"],
                         name="bn1", epsilon=1e-5),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c2", "bn2_scale", "bn2_bias", "bn2_mean", "bn2_var"], ["b2"],
                         name="bn2", epsilon=1e-3),
        helper.make_node("Clip", ["b2", "lo", "hi"], ["r2"], name="relu6"),
        helper.make_node("ReduceMean", ["r2"], ["g"], name="gap", axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["g", "fw"], ["mm"], name="fc"),
        helper.make_node("Add", ["mm", "fb"], ["logits"], name="fc_bias"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(nodes, "bn_graph",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return Path(path)


def unsupported_graph(path: Path) -> Path:
    """A valid ONNX graph with an op the converter does not handle (an Einsum)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="stem", pads=[1, 1, 1, 1]),
             helper.make_node("Einsum", ["c"], ["e"], name="mix/einsum", equation="nchw->nc")]
    graph = helper.make_graph(nodes, "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 4])], [w])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return Path(path)


def torch_style_graph(path: Path, seed: int = 0) -> Path:
    """The patterns torch.onnx.export writes, with onnx.helper: Pad, depthwise Conv (group = channels), HardSigmoid
    (alpha 1/6) gating, Concat of two branches, AveragePool with 'same'-style pads (count_include_pad 0), the
    Shape -> Gather -> Unsqueeze -> Concat -> Reshape flatten of x.view(x.size(0), -1), Gemm with transB, and an
    SE-style Reshape of a vector back to [N, C, 1, 1]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def init(name, *shape, scale=0.3):
        return numpy_helper.from_array(rng.normal(0, scale, shape).astype(np.float32), name)

    inits = [init("w0", 8, 1, 3, 3), init("b0", 8), init("dw", 8, 1, 3, 3), init("pw", 8, 8, 1, 1), init("pb", 8),
             init("se_w", 8, 8), init("fc_w", 10, 16 * 14 * 14, scale=0.05), init("fc_b", 10),
             numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
             numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
             numpy_helper.from_array(np.array([-1, 8, 1, 1], np.int64), "se_shape")]
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w0", "b0"], ["c0"], name="stem", strides=[2, 2], pads=[1, 1, 1, 1]),
        n("Relu", ["c0"], ["r0"], name="stem_relu"),
        n("Pad", ["r0", "pads"], ["p0"], name="pad", mode="constant"),
        n("Conv", ["p0", "dw"], ["d0"], name="dw", group=8),
        n("Conv", ["d0", "pw", "pb"], ["g0"], name="gate_conv"),
        n("HardSigmoid", ["g0"], ["g1"], name="gate", alpha=1 / 6, beta=0.5),
        n("Mul", ["d0", "g1"], ["m0"], name="gated"),
        n("GlobalAveragePool", ["m0"], ["s0"], name="se_pool"),
        n("Flatten", ["s0"], ["s1"], name="se_flat"),
        n("MatMul", ["s1", "se_w"], ["s2"], name="se_fc"),
        n("Sigmoid", ["s2"], ["s3"], name="se_sigmoid"),
        n("Reshape", ["s3", "se_shape"], ["s4"], name="se_view"),
        n("Mul", ["m0", "s4"], ["m1"], name="se_scale"),
        n("AveragePool", ["r0"], ["a0"], name="avg", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Concat", ["m1", "a0"], ["cat"], name="cat", axis=1),
        n("Shape", ["cat"], ["shape"], name="shape"),
        n("Gather", ["shape", "zero"], ["batch"], name="gather", axis=0),
        n("Concat", ["batch", "minus1"], ["view"], name="view_shape", axis=0),
        n("Reshape", ["cat", "view"], ["flat"], name="view"),
        n("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "torch_style", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                   ["batch", 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return Path(path)
