"""Flatbuffer rewrites of converted TFLite models, read back from the real LiteRT interpreter (issue 16):
``static_shape.fold_static_reshape`` gives a Flatten's RESHAPE, whose target the graph computes with SHAPE ->
STRIDED_SLICE -> PACK, a constant target, so XNNPACK takes it. Exact: the outputs are bit-identical, at the batch of
the artifact and at another one (the batch dimension stays ``-1``)."""

from __future__ import annotations

import numpy as np
import pytest

SHAPE_OPS = ("SHAPE", "STRIDED_SLICE", "PACK")


def _flatten_model():
    """Conv -> Conv -> Flatten -> Dense softmax: the Flatten converts to the shape-computing RESHAPE."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    x = inp = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu6", name="c1")(x)
    x = layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="c2")(x)
    x = layers.Dense(10, activation="softmax", name="head")(layers.Flatten(name="flat")(x))
    return keras.Model(inp, x)


def _counts(flat: bytes) -> dict[str, int]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=flat, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    counts: dict[str, int] = {}
    for op in it._get_ops_details():
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return counts


def _delegation(flat: bytes) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    from device_bench.runners.litert import delegation

    it = Interpreter(model_content=flat, num_threads=1)
    it.allocate_tensors()
    return delegation(it._get_ops_details(), it.get_output_details()[0]["index"])


def _run(flat: bytes, x: np.ndarray, xnnpack: bool = True) -> np.ndarray:
    """The model on ``x`` in one call (the input resized to its batch), int8 inputs quantized as the model says."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(model_content=flat, num_threads=1, experimental_op_resolver_type=resolver)
    d = it.get_input_details()[0]
    it.resize_tensor_input(d["index"], list(x.shape))
    it.allocate_tensors()
    if d["dtype"] != np.float32:
        scale, zp = d["quantization"]
        info = np.iinfo(d["dtype"])
        x = np.clip(np.round(x / scale) + zp, info.min, info.max).astype(d["dtype"])
    it.set_tensor(d["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).copy()


def _assert_exact(before: bytes, after: bytes, x: np.ndarray) -> None:
    """Bit-identical outputs, XNNPACK and builtin kernels, one image at a time and a batch of 3."""
    for xnnpack in (True, False):
        one = [(_run(before, x[i:i + 1], xnnpack), _run(after, x[i:i + 1], xnnpack)) for i in range(len(x))]
        assert all(a.tobytes() == b.tobytes() for a, b in one)
        a, b = _run(before, x[:3], xnnpack), _run(after, x[:3], xnnpack)
        assert b.shape == (3, 10) and a.tobytes() == b.tobytes()


def test_fold_static_reshape_gives_flatten_a_constant_target_and_xnnpack_takes_it(data):
    """The rewrite itself, on the plain converter's fp32 and int8 models: SHAPE, STRIDED_SLICE and PACK go, the
    RESHAPE stays (its target a constant with the batch left -1), the outputs do not change by one bit, and XNNPACK
    takes the RESHAPE (fp32: one partition, fully delegated; int8: only the int8 SOFTMAX left, XNNPACK has no
    int8 softmax). A model without such a RESHAPE, or a rewritten one, comes back unchanged."""
    import tensorflow as tf

    from edgeprep.backends.tflite.static_shape import fold_static_reshape

    model = _flatten_model()
    x = data.evaluation.arrays(16)[0].astype(np.float32)
    fp32 = bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(len(x)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    int8 = bytes(conv.convert())
    for before, left in ((fp32, {}), (int8, {"SOFTMAX": 1})):
        counts = _counts(before)
        assert all(counts.get(k) == 1 for k in SHAPE_OPS) and counts["RESHAPE"] == 1, counts
        assert {k: v for k, v in _delegation(before)["not_delegated"].items() if k in SHAPE_OPS + ("RESHAPE",)} \
            == {"SHAPE": 1, "STRIDED_SLICE": 1, "PACK": 1, "RESHAPE": 1}
        after, n = fold_static_reshape(before)
        assert n == 1
        folded = _counts(after)
        assert not any(k in folded for k in SHAPE_OPS) and folded["RESHAPE"] == 1
        assert folded == {k: v for k, v in counts.items() if k not in SHAPE_OPS}
        delegated = _delegation(after)
        assert delegated["partitions"] == 1 and delegated["not_delegated"] == left, delegated
        _assert_exact(before, after, x)
        assert fold_static_reshape(after) == (after, 0)


def test_converted_artifacts_of_every_precision_have_the_reshape_folded(data, tmp_path):
    """edgeprep's convert stage applies it to every precision (an exact rewrite: no option, with float_fallback =
    false too) and says so in the artifact's notes; the fp32 model is then fully delegated, the int8 one in one
    partition with only its int8 SOFTMAX outside."""
    from edgeprep.config.formats import TFLiteOptions
    from edgeprep.models import load_model
    from edgeprep.stages.convert import convert

    _flatten_model().save(tmp_path / "flat.keras")
    handle = load_model(tmp_path / "flat.keras")
    kw = {"calibration": data.calibration, "calibration_samples": 32, "workdir": tmp_path / "work"}
    arts = {"fp32": convert(handle, "tflite", "fp32", TFLiteOptions(), tmp_path / "m.fp32.tflite"),
            "fp16": convert(handle, "tflite", "fp16", TFLiteOptions(), tmp_path / "m.fp16.tflite"),
            "int8": convert(handle, "tflite", "int8", TFLiteOptions(), tmp_path / "m.int8.tflite", **kw),
            "strict": convert(handle, "tflite", "int8", TFLiteOptions(float_fallback=False),
                              tmp_path / "s.int8.tflite", **kw)}
    for name, art in arts.items():
        flat = art.path.read_bytes()
        assert not any(k in _counts(flat) for k in SHAPE_OPS), name
        assert any("RESHAPE x1 given a constant target" in n for n in art.notes), (name, art.notes)
    assert _delegation(arts["fp32"].path.read_bytes())["fully_delegated"]
    int8 = _delegation(arts["int8"].path.read_bytes())
    assert int8["partitions"] == 1 and int8["not_delegated"] == {"SOFTMAX": 1}, int8


def test_fold_leaves_a_reshape_whose_target_it_cannot_prove(data):
    """Only the pattern it can prove: a target of two dynamic dimensions (batch and a dynamic length) would need two
    -1s, and one computed with other ops (GATHER, REDUCE_PROD, MUL: a Dense on a sequence) is not evaluated; both
    stay computed."""
    import keras
    import tensorflow as tf

    from edgeprep.backends.tflite.static_shape import fold_static_reshape

    def converted(fn):
        inp = keras.Input((None, 4), name="seq")
        return bytes(tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, fn(inp))).convert())

    two = converted(keras.layers.Lambda(lambda t: tf.reshape(t, (tf.shape(t)[0], tf.shape(t)[1], 2, 2))))
    assert _counts(two) == {"SHAPE": 1, "STRIDED_SLICE": 2, "PACK": 1, "RESHAPE": 1}
    other = converted(lambda t: keras.layers.Lambda(lambda u: tf.reshape(u, (tf.shape(u)[0], tf.shape(u)[1] * 4)))(
        keras.layers.Dense(4)(t)))
    assert _counts(other)["MUL"] == 1 and _counts(other)["GATHER"] == 2
    for flat in (two, other):
        assert fold_static_reshape(flat) == (flat, 0)


@pytest.mark.slow
def test_mobilenetv3_fp32_is_fully_delegated_and_its_int8_keeps_only_the_int8_softmax(tmp_path):
    """The committed MobileNetV3Small (alpha 0.75, Fashion-MNIST 96x96 RGB): its Flatten left SHAPE, STRIDED_SLICE,
    PACK and RESHAPE outside XNNPACK (fp32: 2 partitions). Folded, fp32 is one partition, fully delegated, with
    bit-identical outputs; edgeprep's int8 artifact (HARD_SWISH in float, the RESHAPE folded) is one partition with
    the int8 SOFTMAX alone outside it (running it in float measured no faster: it stays int8)."""
    import tensorflow as tf
    from conftest import DATA_DIR, ROOT

    from edgeprep.backends.tflite.static_shape import fold_static_reshape
    from edgeprep.config.formats import TFLiteOptions
    from edgeprep.data import load_data
    from edgeprep.models import load_model
    from edgeprep.stages.convert import convert

    model = load_model(ROOT / "examples" / "hard" / "mobilenetv3_small_fmnist.keras")
    data = load_data(DATA_DIR / "fashion_mnist_96rgb.toml")
    x = data.evaluation.arrays(8)[0].astype(np.float32)
    before = bytes(tf.lite.TFLiteConverter.from_keras_model(model.obj).convert())
    assert _delegation(before)["partitions"] == 2
    after, n = fold_static_reshape(before)
    assert n == 1 and _counts(after) == {k: v for k, v in _counts(before).items() if k not in SHAPE_OPS}
    assert _delegation(after) == {"partitions": 1, "ops": 109, "not_delegated": {}, "fully_delegated": True}
    _assert_exact(before, after, x)
    art = convert(model, "tflite", "int8", TFLiteOptions(), tmp_path / "m.int8.tflite",
                  calibration=data.calibration, calibration_samples=32, workdir=tmp_path / "work")
    counts = _counts(art.path.read_bytes())
    assert not any(k in counts for k in SHAPE_OPS) and counts["RESHAPE"] == 1 and counts["HARD_SWISH"] == 19
    assert _delegation(art.path.read_bytes()) == {"partitions": 1, "ops": 147, "not_delegated": {"SOFTMAX": 1},
                                                   "fully_delegated": False}
