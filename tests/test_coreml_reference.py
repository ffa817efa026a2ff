"""End to end: Keras models converted to Core ML and executed by the reference executor agree with Keras float.

Tolerances per precision, and why (SQNR of the model output against Keras float; measured on these five models:
fp32 >= 134 dB, fp16 >= 65 dB, int8 >= 44 dB, pal6 >= 34 dB, top-1 agreement >= 0.99 / 0.99 / 0.94):
- fp32: the executor and TensorFlow both compute in float32 and differ only in summation order (~1e-7
  relative): >= 110 dB per layer, >= 120 dB per model, top-1 agreement 1.0.
- fp16: every op rounds its output to fp16 (relative error <= 2^-11, about -66 dB for one rounding) and the
  weights are stored in fp16; the errors add up over the ops of a layer or a model: >= 60 dB per single layer,
  >= 55 dB per model, top-1 agreement >= 0.98.
- int8 weights (W8A16) and 6-bit palettized weights: the compressed weights differ from the float ones (8-bit
  per-channel steps, a 64-entry k-means table), so the remaining gap is the compression's, not the executor's
  (decompression is checked value for value against coremltools in test_mil_format.py): >= 38 dB / >= 28 dB,
  top-1 agreement >= 0.97 / >= 0.9 on 100 images.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from conftest import EXAMPLE_MODEL, MANIFEST, run_cli

from device_bench import metrics
from device_bench.mil import Program

EXPECT = {"fp32": (120.0, 1.0), "fp16": (55.0, 0.98), "int8": (38.0, 0.97), "pal6": (28.0, 0.9)}


def convert_keras(model, directory, precisions=("fp32", "fp16", "int8", "pal6")) -> dict:
    """{precision: .mlpackage}: fp32 and fp16 by coremltools' converter as edgeprep runs it; int8 (W8A16, the
    backend's configuration) and 6-bit palettization compress the fp16 ML Program, as coremltools.optimize does."""
    import coremltools as ct
    import coremltools.optimize as cto

    c = cto.coreml
    out = {}
    for base in [p for p in ("fp32", "fp16") if p in precisions or (p == "fp16" and {"int8", "pal6"} &
                                                                        set(precisions))]:
        m = ct.convert(model, source="tensorflow", convert_to="mlprogram",
                       inputs=[ct.TensorType(name="image", shape=(1, *model.input_shape[1:]))],
                       compute_precision=ct.precision.FLOAT16 if base == "fp16" else ct.precision.FLOAT32,
                       minimum_deployment_target=ct.target.iOS16)
        variants = {base: m}
        if base == "fp16":
            variants["int8"] = c.linear_quantize_weights(m, c.OptimizationConfig(c.OpLinearQuantizerConfig(
                mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=256)))
            variants["pal6"] = c.palettize_weights(m, c.OptimizationConfig(c.OpPalettizerConfig(
                nbits=6, mode="kmeans", weight_threshold=256)))
        for precision, mlmodel in variants.items():
            if precision in precisions:
                out[precision] = directory / f"{model.name}.{precision}.mlpackage"
                mlmodel.save(str(out[precision]))
    return out


def run_program(path, x: np.ndarray) -> np.ndarray:
    prog = Program(path)
    name, out = prog.inputs[0][0], prog.outputs[0]
    return np.concatenate([prog.run({name: x[i:i + 1]})[out] for i in range(len(x))]).astype(np.float32)


# ---- every Keras layer edgeprep's conversions meet, one output each --------------------------------------------
def layer_zoo():
    import keras
    from keras import layers

    keras.utils.set_random_seed(3)
    inp = keras.Input((12, 12, 4), name="image")
    outs = {
        "conv_same_dilated": layers.Conv2D(6, 3, padding="same", dilation_rate=2)(inp),
        "conv_valid_stride2": layers.Conv2D(5, 3, strides=2)(inp),
        "conv_same_stride2": layers.Conv2D(5, 3, strides=2, padding="same")(inp),
        "depthwise_multiplier2": layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(inp),
        "separable": layers.SeparableConv2D(7, 3, padding="same")(inp),
        "conv_transpose_same_s2": layers.Conv2DTranspose(3, 3, strides=2, padding="same")(inp),
        "conv_transpose_valid_s2": layers.Conv2DTranspose(3, 3, strides=2)(inp),
        "conv_transpose_same_k4": layers.Conv2DTranspose(3, 4, padding="same")(inp),
        "max_pool_same": layers.MaxPooling2D(3, strides=2, padding="same")(inp),
        "avg_pool_valid": layers.AveragePooling2D(2)(inp),
        "avg_pool_same": layers.AveragePooling2D(3, strides=2, padding="same")(inp),
        "global_avg_pool": layers.GlobalAveragePooling2D()(inp),
        "global_max_pool": layers.GlobalMaxPooling2D()(inp),
        "upsampling_nearest": layers.UpSampling2D(2)(inp),
        "upsampling_bilinear": layers.UpSampling2D(2, interpolation="bilinear")(inp),
        "resizing_bilinear": layers.Resizing(17, 9)(inp),
        "batch_norm": layers.BatchNormalization()(inp),
        "layer_norm": layers.LayerNormalization()(inp),
        "group_norm": layers.GroupNormalization(groups=2)(inp),
        "gelu_tanh": layers.Activation(lambda t: keras.activations.gelu(t, approximate=True))(inp),
        "hard_swish": layers.Activation("hard_swish")(inp),
        "hard_sigmoid": layers.Activation("hard_sigmoid")(inp),
        "swish": layers.Activation("swish")(inp),
        "elu": layers.ELU()(inp),
        "leaky_relu": layers.LeakyReLU(0.2)(inp),
        "prelu": layers.PReLU(shared_axes=[1, 2])(inp),
        "softmax": layers.Softmax()(inp),
        "dense": layers.Dense(5)(inp),
        "zero_padding": layers.ZeroPadding2D(((1, 2), (0, 1)))(inp),
        "cropping": layers.Cropping2D(((1, 2), (0, 1)))(inp),
        "concatenate": layers.Concatenate()([inp, layers.ReLU(6.0)(inp)]),
    }
    model = keras.Model(inp, list(outs.values()))
    rng = np.random.default_rng(3)
    for layer in model.layers:                      # statistics and slopes that matter
        if isinstance(layer, layers.BatchNormalization):
            layer.moving_mean.assign(rng.standard_normal(4).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, 4).astype("float32"))
            layer.gamma.assign(rng.standard_normal(4).astype("float32"))
        if isinstance(layer, layers.PReLU):
            layer.alpha.assign(rng.uniform(0, 0.5, layer.alpha.shape).astype("float32"))
    return model, list(outs)


@pytest.mark.slow
@pytest.mark.parametrize("precision, min_db", [("fp32", 110.0), ("fp16", 60.0)])
def test_every_keras_layer_matches_tensorflow(tmp_path, precision, min_db):
    model, names = layer_zoo()
    x = np.random.default_rng(4).standard_normal((2, 12, 12, 4)).astype(np.float32)
    ref = model.predict(x, verbose=0)
    prog = Program(convert_keras(model, tmp_path, (precision,))[precision])
    got = [prog.run({"image": x[i:i + 1]}) for i in range(len(x))]
    assert len(prog.outputs) == len(names)
    worst = {}
    for name, out, r in zip(names, prog.outputs, ref):
        mine = np.concatenate([g[out] for g in got])
        assert mine.shape == r.shape, name
        worst[name] = metrics.sqnr_db(r, mine)
    assert min(worst.values()) >= min_db, sorted(worst.items(), key=lambda kv: kv[1])[:5]


# ---- whole models ---------------------------------------------------------------------------------------------
def _models():
    from keras import layers

    def head(x):
        x = layers.GlobalAveragePooling2D()(x)
        return layers.Dense(10, activation="softmax")(x)

    def conv_bn(x, filters, k=3, s=1, act="relu"):
        x = layers.Conv2D(filters, k, strides=s, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.5)(x)      # statistics settle within a short fit
        return layers.Activation(act)(x) if act else x

    def depthwise_separable(inp):
        x = conv_bn(inp, 16, s=2)
        for f, s in ((32, 1), (48, 2)):
            x = layers.DepthwiseConv2D(3, strides=s, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization(momentum=0.5)(x)
            x = layers.ReLU(6.0)(x)
            x = conv_bn(x, f, k=1, act="relu6")
        return head(x)

    def residual(inp):
        x = conv_bn(inp, 24, s=2)
        for _ in range(2):
            y = conv_bn(x, 24)
            y = conv_bn(y, 24, act=None)
            x = layers.ReLU()(layers.Add()([x, y]))
        return head(x)

    def bn_after_dense(inp):
        x = conv_bn(inp, 16, s=2)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Flatten()(x)
        x = layers.Dense(64, use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.5)(x)
        x = layers.ReLU()(x)
        x = layers.Dense(10)(x)
        x = layers.BatchNormalization(momentum=0.5)(x)
        return layers.Softmax()(x)

    def se_block(inp):
        x = conv_bn(inp, 32, s=2)
        s = layers.GlobalAveragePooling2D()(x)
        s = layers.Dense(8, activation="relu")(s)
        s = layers.Dense(32, activation="hard_sigmoid")(s)
        x = layers.Multiply()([x, layers.Reshape((1, 1, 32))(s)])
        x = conv_bn(x, 32, s=2, act="swish")
        return head(x)

    def upsampling_decoder(inp):
        x = conv_bn(inp, 16, s=2)
        x = conv_bn(x, 32, s=2)
        x = layers.UpSampling2D(2, interpolation="bilinear")(x)
        x = conv_bn(x, 16)
        x = layers.Conv2DTranspose(8, 3, strides=2, padding="same")(x)
        x = layers.UpSampling2D(1)(x)
        return layers.Conv2D(1, 3, padding="same", activation="sigmoid")(x)

    return {f.__name__: f for f in (depthwise_separable, residual, bn_after_dense, se_block, upsampling_decoder)}


MODELS = ["depthwise_separable", "residual", "bn_after_dense", "se_block", "upsampling_decoder"]


@pytest.fixture(scope="module")
def images(eval_npz, calib_npz):
    return (calib_npz["x"][:512].astype(np.float32) / 255.0, calib_npz["y"][:512],
            eval_npz["x"][:100].astype(np.float32) / 255.0)


def build(name, images):
    """The architecture, briefly trained on real images so its predictions (and BN statistics) mean something."""
    import keras

    keras.utils.set_random_seed(11)
    inp = keras.Input((28, 28, 1), name="image")
    model = keras.Model(inp, _models()[name](inp), name=name)
    x, y, _ = images
    if name == "upsampling_decoder":
        model.compile(keras.optimizers.Adam(3e-3), "mse")
        model.fit(x, x, epochs=2, batch_size=64, verbose=0)
    else:
        model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_models_agree_with_keras_per_precision(tmp_path, images, name):
    model = build(name, images)
    x = images[2]
    ref = model.predict(x, verbose=0)
    classifier = name != "upsampling_decoder"
    seen = {}
    packages = convert_keras(model, tmp_path)
    for precision, (min_db, min_agree) in EXPECT.items():
        out = run_program(packages[precision], x)
        m = metrics.compare(out.reshape(len(x), -1), ref.reshape(len(x), -1))
        seen[precision] = (round(m["sqnr_db"], 1), m["agreement"])
        assert m["sqnr_db"] >= min_db, (name, seen)
        if classifier:
            assert m["agreement"] >= min_agree, (name, seen)
    # precision ordering: fp32 is the same model, compression costs accuracy, never the other way round
    assert seen["fp32"][0] > seen["fp16"][0] > seen["int8"][0] - 3


# ---- the example model and verification through edgeprep ------------------------------------------------------
@pytest.mark.slow
def test_example_model_per_precision(tmp_path):
    from edgeprep.data import load_data
    from edgeprep.models import load_model
    from edgeprep.stages.verify import reference

    model = load_model(EXAMPLE_MODEL)
    data = load_data(MANIFEST).evaluation
    ref = reference(model, data, limit=200)
    x = np.concatenate([b for b, _ in data.batches(200, 200)])
    goals = {"fp32": (120.0, 1.0), "fp16": (55.0, 0.995), "int8": (40.0, 0.99), "pal6": (28.0, 0.98)}
    packages = convert_keras(model.obj, tmp_path)
    for precision, (min_db, min_agree) in goals.items():
        out = run_program(packages[precision], x)
        m = metrics.compare(out, ref.outputs, ref.labels)
        assert m["sqnr_db"] >= min_db and m["agreement"] >= min_agree, (precision, m)
        assert abs(m["accuracy"] - ref.accuracy) <= 0.01, (precision, m)


def _flip_signs_in_largest_blob(weight_file, fraction=0.3):
    """Alter the weight file as a bad copy or a broken compression step would: flip the sign of some fp16
    weights of its largest blob (the metadata records stay intact, so the package still loads)."""
    data = bytearray(weight_file.read_bytes())
    count = struct.unpack_from("<I", data, 0)[0]
    offset, blobs = 64, []
    for _ in range(count):
        _, dtype, size, start = struct.unpack_from("<IIQQ", data, offset)
        blobs.append((size, start, dtype))
        offset = (start + size + 63) // 64 * 64
    size, start, dtype = max(blobs)
    assert dtype == 1, "expected fp16 weights"
    rng = np.random.default_rng(0)
    for i in rng.choice(size // 2, int(size // 2 * fraction), replace=False):
        data[start + 2 * i + 1] ^= 0x80
    weight_file.write_bytes(bytes(data))


@pytest.mark.slow
def test_verify_catches_an_altered_weight_file_and_zeroed_bn_statistics(tmp_path, trained_small):
    import keras

    from edgeprep.config.formats import CoreMLOptions
    from edgeprep.config.gates import Thresholds
    from edgeprep.data import load_data
    from edgeprep.models import load_model
    from edgeprep.stages.convert import convert, open_artifact
    from edgeprep.stages.verify import reference, verify

    data = load_data(MANIFEST).evaluation
    small = load_model(trained_small)
    ref = reference(small, data, limit=300)
    gates = Thresholds(max_accuracy_drop=0.2, min_agreement=0.99)

    good = convert(small, "coreml", "fp16", CoreMLOptions(), tmp_path / "good.fp16.mlpackage")
    intact = verify(good, ref, data, gates, model=small)
    assert intact["status"] == "verified" and intact["metrics"]["agreement"] >= 0.99

    _flip_signs_in_largest_blob(good.path / "Data" / "com.apple.CoreML" / "weights" / "weight.bin")
    altered = verify(open_artifact(good.path), ref, data, gates, model=small)
    assert altered["status"] == "failed", altered["metrics"]
    assert altered["metrics"]["agreement"] < intact["metrics"]["agreement"] - 0.05
    assert min(r["sqnr_db"] for r in altered["layers"]["layers"]) < 20   # the damaged layer shows up

    zeroed = keras.models.load_model(trained_small)
    for layer in zeroed.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, "float32"))
            layer.moving_variance.assign(np.zeros(layer.moving_variance.shape, "float32"))
    zeroed.save(tmp_path / "zeroed.keras")
    bad = convert(load_model(tmp_path / "zeroed.keras"), "coreml", "fp16", CoreMLOptions(),
                  tmp_path / "zeroed.fp16.mlpackage")
    caught = verify(bad, ref, data, gates)
    assert caught["status"] == "failed"
    assert caught["metrics"]["agreement"] < 0.9, caught["metrics"]


@pytest.mark.slow
def test_cli_verify_reports_reference_executor_and_unverified_ops(tmp_path, trained_small):
    import keras

    from edgeprep.config.formats import CoreMLOptions
    from edgeprep.models import load_model
    from edgeprep.stages.convert import convert

    small = load_model(trained_small)
    convert(small, "coreml", "fp16", CoreMLOptions(), tmp_path / "small.fp16.mlpackage")
    # same input and output as the small model, but through top_k, an op the executor does not implement
    inp = keras.Input((28, 28, 1), name="image")
    logits = keras.layers.Dense(10)(keras.layers.Flatten()(inp))
    topk = keras.Model(inp, keras.layers.Softmax()(keras.ops.top_k(logits, 10)[0]), name="topk")
    convert_keras(topk, tmp_path, ("fp16",))
    proc = run_cli("verify", str(trained_small), str(tmp_path / "small.fp16.mlpackage"),
                   str(tmp_path / "topk.fp16.mlpackage"), "--data", str(MANIFEST), "--target", "apple-coreml",
                   "--samples", "200", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "verified (" in proc.stdout and "unmeasured" in proc.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    small_entry, topk_entry = report["artifacts"]
    assert small_entry["verification"]["executed_by"]["reference_executor"] is True
    assert small_entry["verification"]["layers"]["compared"] >= 5
    assert topk_entry["verification"]["status"] == "unmeasured"
    assert topk_entry["verification"]["reason"].startswith("numerics not measured: op topk")
    assert "numerics not measured: op topk" in (tmp_path / "out" / "summary.md").read_text()
