"""edgeprep's own PTQ (``edgeprep.ptq``): each algorithm against an independent computation, on a tiny real model and
the committed Fashion-MNIST data, and the same integers in the TFLite and OpenVINO artifacts of one quantized graph."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import MANIFEST


def _tiny(seed: int = 0):
    """Conv-ReLU -> Conv (uneven channel scales), SeparableConv, Dense: every kind of pair CLE handles."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="c1")(x)
    x = layers.Conv2D(16, 3, padding="same", name="c2")(x)
    x = layers.ReLU(name="r2")(x)
    x = layers.SeparableConv2D(16, 3, strides=2, padding="same", activation="relu", name="sep")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(10, activation="softmax", name="head")(x)
    model = keras.Model(inp, x)
    rng = np.random.default_rng(seed)
    c1 = model.get_layer("c1")
    k, b = c1.get_weights()
    spread = np.exp(rng.uniform(-2.5, 2.5, k.shape[-1])).astype(np.float32)   # channel ranges 150x apart
    c1.set_weights([k * spread, b * spread])
    return model


def _x(data, n=64):
    return data.calibration.arrays(n)[0]


def test_cle_keeps_the_float_function_and_equalizes_channel_ranges(data):
    from edgeprep.ptq import cle
    from edgeprep.qat.model import QATModel

    model = _tiny()
    x = _x(data)
    before = model.predict(x, verbose=0)
    def ratio_spread():     # how far apart the per-channel ratios range(c1 out) / range(c2 in) are
        r1 = np.abs(model.get_layer("c1").kernel.numpy()).reshape(-1, 8).max(axis=0)
        r2 = np.abs(model.get_layer("c2").kernel.numpy()).transpose(2, 0, 1, 3).reshape(8, -1).max(axis=1)
        return float((r1 / r2).max() / (r1 / r2).min())

    assert ratio_spread() > 20          # the fixture is unequal, so the test can fail
    probe = QATModel(model, ranges={}, state=None, _calibrating=True)
    done = cle.equalize(probe.steps)
    assert {d["pair"] for d in done} >= {"c1 -> c2", "sep (depthwise -> pointwise)"}
    after = model.predict(x, verbose=0)
    assert np.max(np.abs(after - before)) <= 1e-5 * max(1.0, np.max(np.abs(before)))
    # equal after each sweep; c2's own equalization with the next layer moves it a little afterwards
    assert ratio_spread() < 1.25


def test_range_search_matches_tensorflow_and_is_never_worse_than_minmax(data):
    import tensorflow as tf

    from edgeprep.ptq import ranges
    from edgeprep.ptq.stats import TensorStats

    rng = np.random.default_rng(0)
    values = np.concatenate([rng.exponential(0.5, 20000), rng.exponential(8.0, 30)]).astype(np.float32)
    ours = ranges.fake_quant(values, -0.3, 7.0)
    theirs = tf.quantization.fake_quant_with_min_max_vars(values, -0.3, 7.0, num_bits=8).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    st = TensorStats()
    st.add(values, 8192, rng)
    assert st.lo == float(values.min()) and st.hi == float(values.max()) and st.sample.size == 8192
    lo, hi = ranges.choose(st, "mse")
    minmax = ranges.quant_mse(st.sample, *ranges.choose(st, "minmax"))
    assert ranges.quant_mse(st.sample, lo, hi) <= minmax
    assert hi < values.max()                  # the long tail was clipped: the search did something
    assert ranges.quant_mse(st.sample, lo, hi) < 0.8 * minmax


def test_adaround_weights_lie_on_the_grid_and_beat_nearest_rounding(data):
    from edgeprep.ptq import adaround, grid

    model = _tiny()
    layer = model.get_layer("c2")
    x = model.get_layer("c1")(_x(data, 128)).numpy()
    w, b = (v.numpy() for v in (layer.kernel, layer.bias))
    import tensorflow as tf

    target = tf.nn.conv2d(x, w, 1, "SAME").numpy() + b
    r = adaround.round_layer(layer, "conv", (w,), b, x, target, tf.nn.relu,
                             adaround.AdaRoundConfig(iterations=200))
    k = r.kernels[0]
    s = grid.scales(w, "conv")
    np.testing.assert_allclose(k / s, np.round(k / s), atol=1e-4)     # on the grid
    np.testing.assert_allclose(np.abs(k).reshape(-1, k.shape[-1]).max(0), np.abs(w).reshape(-1, w.shape[-1]).max(0),
                               rtol=1e-6)                            # the scales did not move
    assert np.max(np.abs(k - w) / s) <= 1.0 + 1e-4                   # up or down, never further
    assert r.flipped > 0 and r.mse < r.mse_nearest


def test_adaround_trains_each_layer_on_the_same_op(data):
    """The training loop's form of each layer's op (a matrix product over input patches for the few-channel c1, over
    the pixels a strided 1x1 convolution reads, for a SeparableConv2D's pointwise half) computes ``apply_linear``."""
    import keras
    import tensorflow as tf

    from edgeprep.ptq import adaround
    from edgeprep.qat.model import apply_linear, kernel_kind

    model = _tiny()
    x = _x(data, 16)
    pw = keras.layers.Conv2D(12, 1, strides=2, name="pw")
    pw.build((None, 14, 14, 8))

    def mid(t):
        return tf.quantization.fake_quant_with_min_max_vars(t, -1.0, 3.0, num_bits=8)

    c1 = model.get_layer("c1")(x)
    inputs = {"c1": x, "pw": c1.numpy(), "sep": model.get_layer("c2")(c1).numpy(),
              "head": np.random.default_rng(0).normal(size=(16, 16)).astype(np.float32)}
    for layer in (model.get_layer("c1"), pw, model.get_layer("sep"), model.get_layer("head")):
        kind = kernel_kind(layer)
        w = (layer.depthwise_kernel.numpy(), layer.pointwise_kernel.numpy()) if kind == "separable" else \
            layer.kernel.numpy()
        xs, op = adaround._training_op(layer, kind, mid, inputs[layer.name])
        np.testing.assert_allclose(op(xs, w), apply_linear(layer, inputs[layer.name], w, mid), atol=1e-4,
                                   err_msg=layer.name)


@pytest.mark.parametrize("xla", [False, True])
def test_adaround_step_follows_the_gradient_of_its_loss(monkeypatch, xla):
    """One step of the written-out update (the loss's gradient chained through the soft rounding, the regulariser's
    added, Adam) is what differentiating ``λ reg + Σ g w(v)`` and Keras's Adam give, with and without XLA."""
    import keras
    import tensorflow as tf

    from edgeprep.ptq import adaround
    from edgeprep.ptq.adaround import GAMMA, ZETA

    monkeypatch.setattr(adaround, "XLA_MIN_WORK", 0 if xla else float("inf"))
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 8, 16)).astype(np.float32)
    k = adaround._Kernel.of(w, "conv")
    v0 = k.init + rng.normal(scale=2.0, size=w.shape).astype(np.float32)     # h inside and outside (0, 1)
    gw = rng.normal(size=w.shape).astype(np.float32)
    cfg = adaround.AdaRoundConfig(iterations=10, warm_up=0.0)       # the regulariser on from the first step (β 20)
    vs, ms, _, ws = adaround._updater([k], cfg)(tf.constant(0), [tf.constant(v0)], [tf.zeros_like(v0)],
                                                 [tf.zeros_like(v0)], [tf.constant(gw)])
    v = tf.Variable(v0)
    with tf.GradientTape() as tape:
        h = tf.clip_by_value(tf.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)
        kernel = k.scale * tf.clip_by_value(tf.where(k.free > 0, k.base + h, k.base), -127.0, 127.0)
        total = tf.reduce_sum(kernel * gw) + cfg.reg_weight * tf.reduce_sum(1.0 - tf.pow(tf.abs(2.0 * h - 1.0), 20.0))
    grad = tape.gradient(total, v)
    np.testing.assert_allclose(ms[0] / (1 - 0.9), grad, rtol=1e-4, atol=1e-7)       # Adam's first moment: the gradient
    keras.optimizers.Adam(cfg.learning_rate).apply_gradients([(grad, v)])
    np.testing.assert_allclose(vs[0], v.numpy(), rtol=1e-5, atol=1e-6)
    h = np.clip(1 / (1 + np.exp(-vs[0].numpy())) * (ZETA - GAMMA) + GAMMA, 0, 1)
    np.testing.assert_allclose(ws[0], k.scale * (k.base + k.free * h), rtol=1e-5, atol=1e-7)


def test_walk_reads_what_a_pass_from_the_input_reads(data):
    """A ``Walk`` resumed layer by layer reads each linear step's input and output as a pass from the model input
    does, also after a layer it read changed (it runs that layer again) and past one it left (it does not)."""
    from edgeprep.ptq.grid import nearest_kernels
    from edgeprep.ptq.walk import Walk
    from edgeprep.qat.model import Mode, QATModel

    model = _tiny()
    x = _x(data, 32)
    probe = QATModel(model, ranges={}, state=None, _calibrating=True)
    probe(x, Mode(quantize=False, record=True))
    qat = QATModel(model, {k: (float(np.min(v)), float(np.max(v))) for k, v in probe.recorded.items()})
    qat.prepare_export()
    names = ["c1", "c2", "sep", "head"]
    mode = Mode(quantize=True, export=True)
    walk = Walk(qat, [x[:20], x[20:]], mode)
    for name in names:
        got = walk.tap(name, "in")
        qat(x, Mode(quantize=True, export=True, taps=frozenset({name})))
        np.testing.assert_allclose(got, qat.recorded[f"{name}/@in"], atol=1e-6, err_msg=name)
        w, b = qat.export_weights[name]
        qat.overrides[name] = (nearest_kernels(w, "separable" if name == "sep" else "dense" if name == "head"
                                               else "conv"), b + 0.1)
        out = walk.tap(name, "out", again=False)
        qat(x, Mode(quantize=True, export=True, taps=frozenset({name})))
        np.testing.assert_allclose(out, qat.recorded[f"{name}/@out"], atol=1e-5, err_msg=name)


@pytest.fixture(scope="module")
def quantized(data):
    from edgeprep.ptq.adaround import AdaRoundConfig
    from edgeprep.ptq.optimize import PTQSettings, quantize_params

    settings = PTQSettings(calibration_samples=200, samples=64, adaround_config=AdaRoundConfig(iterations=30))
    return quantize_params(_tiny(), data.calibration, settings)


def test_bias_correction_removes_the_mean_error_it_measured(quantized):
    _, account = quantized
    corrected = account["bias_correction"]
    assert set(corrected) == {"c1", "c2", "sep", "head"}
    for name, e in corrected.items():
        assert e["mean_error_after"] <= e["mean_error_before"] + 1e-7, name
    assert corrected["c1"]["mean_error_after"] < 1e-5 < corrected["c1"]["mean_error_before"]


def test_tflite_and_openvino_carry_the_same_integers(quantized, tmp_path):
    import openvino as ov
    from ai_edge_litert.interpreter import Interpreter

    from edgeprep.backends.openvino.qat import to_openvino
    from edgeprep.backends.tflite.qat import to_tflite
    from edgeprep.ptq import grid

    qat, _ = quantized
    ours = {name: grid.integers(w, "conv") for name, (w, _b) in qat.overrides.items() if name == "c2"}
    # TFLite: the int8 kernel of c2 (stored OHWI)
    it = Interpreter(model_content=to_tflite(qat, (28, 28, 1)))
    kernels = [d for d in it.get_tensor_details() if d["dtype"] == np.int8 and len(d["shape"]) == 4
               and tuple(d["shape"]) == (16, 3, 3, 8)]
    assert len(kernels) == 1
    tfl = it.get_tensor(kernels[0]["index"]).transpose(1, 2, 3, 0)
    np.testing.assert_array_equal(tfl, ours["c2"])
    # OpenVINO: the converter folds each weight FakeQuantize into an int8 constant (then Convert and a scale)
    to_openvino(qat, (28, 28, 1), tmp_path / "m.xml", tmp_path)
    m = ov.Core().read_model(tmp_path / "m.xml")
    found = [op.get_data() for op in m.get_ops() if op.get_type_name() == "Constant"
             and op.get_element_type() == ov.Type.i8 and tuple(op.get_output_shape(0)) == (16, 8, 3, 3)]
    assert len(found) == 1
    np.testing.assert_array_equal(found[0], ours["c2"].transpose(3, 2, 0, 1))      # OIHW


def _for_16x8(qat, x):
    """What ``stages.ptq.owned_params`` sets on an int16 parameter set: 16-bit export, samples to calibrate on."""
    qat.activation_bits = 16
    qat.representative = lambda: ([x[i:i + 1]] for i in range(len(x)))


def test_int16_activations_keep_the_int8_weights_in_both_formats(data, tmp_path):
    """``activations = "int16"``: TFLite's 16x8 graph (int16 activations) and OpenVINO's weights-only IR (no
    activation FakeQuantize) both store the parameter set's int8 kernel, OpenVINO as an int8 constant rather than
    float weights four times the size."""
    import openvino as ov
    from ai_edge_litert.interpreter import Interpreter

    from edgeprep.backends.openvino.qat import to_openvino
    from edgeprep.backends.tflite.qat import to_tflite
    from edgeprep.ptq import grid
    from edgeprep.ptq.adaround import AdaRoundConfig
    from edgeprep.ptq.optimize import PTQSettings, quantize_params

    settings = PTQSettings(calibration_samples=200, samples=64, activations="int16",
                           adaround_config=AdaRoundConfig(iterations=30))
    qat, _ = quantize_params(_tiny(), data.calibration, settings)
    _for_16x8(qat, _x(data, 32))
    ours = grid.integers(qat.overrides["c2"][0], "conv")
    it = Interpreter(model_content=to_tflite(qat, (28, 28, 1)))
    details = it.get_tensor_details()
    assert any(d["dtype"] == np.int16 and len(d["shape"]) == 4 for d in details)      # activations int16
    kernel = [d for d in details if d["dtype"] == np.int8 and tuple(d["shape"]) == (16, 3, 3, 8)]
    np.testing.assert_array_equal(it.get_tensor(kernel[0]["index"]).transpose(1, 2, 3, 0), ours)
    to_openvino(qat, (28, 28, 1), tmp_path / "w.xml", tmp_path)
    m = ov.Core().read_model(tmp_path / "w.xml")
    assert not [op for op in m.get_ops() if op.get_type_name() == "FakeQuantize"]
    found = [op.get_data() for op in m.get_ops() if op.get_type_name() == "Constant"
             and op.get_element_type() == ov.Type.i8 and tuple(op.get_output_shape(0)) == (16, 8, 3, 3)]
    assert len(found) == 1
    np.testing.assert_array_equal(found[0], ours.transpose(3, 2, 0, 1))
    floats = [op for op in m.get_ops() if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f32
              and len(op.get_output_shape(0)) == 4 and int(np.prod(op.get_output_shape(0))) >= 16 * 8 * 9]
    assert not floats, [tuple(op.get_output_shape(0)) for op in floats]


def test_int16_activations_keep_an_op_without_a_16x8_kernel_in_float(data):
    """TFLite's 16x8 mode has no HARD_SWISH kernel (every MobileNetV3 has one): that op stays float and the rest of
    the graph int16, instead of the converter refusing the model; with float_fallback off it is refused."""
    import keras
    from ai_edge_litert.interpreter import Interpreter
    from keras import layers

    from edgeprep.backends.tflite.qat import to_tflite
    from edgeprep.errors import ConversionError
    from edgeprep.ptq.adaround import AdaRoundConfig
    from edgeprep.ptq.optimize import PTQSettings, quantize_params

    keras.utils.set_random_seed(0)
    x = inp = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="hard_swish", name="c1")(x)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="c2")(x)
    x = layers.Dense(10, activation="softmax", name="head")(layers.GlobalAveragePooling2D(name="gap")(x))
    settings = PTQSettings(calibration_samples=64, samples=32, activations="int16",
                           adaround_config=AdaRoundConfig(iterations=10))
    qat, _ = quantize_params(keras.Model(inp, x), data.calibration, settings)
    _for_16x8(qat, _x(data, 16))
    it = Interpreter(model_content=to_tflite(qat, (28, 28, 1)))
    ops = {op["op_name"]: op for op in it._get_ops_details()}
    assert "HARD_SWISH" in ops
    dtypes = {d["index"]: d["dtype"] for d in it.get_tensor_details()}
    assert dtypes[ops["HARD_SWISH"]["outputs"][0]] == np.float32
    assert dtypes[ops["CONV_2D"]["outputs"][0]] in (np.int16, np.float32)
    assert any(dtypes[op["outputs"][0]] == np.int16 for op in it._get_ops_details())
    with pytest.raises(ConversionError, match="HARD_SWISH"):
        to_tflite(qat, (28, 28, 1), float_fallback=False)


def test_run_with_edgeprep_ptq_beats_the_converters_on_the_example_model(tmp_path):
    """``[quantize.ptq] engine = "edgeprep"`` through ``edgeprep run``: TFLite and OpenVINO int8 from one set of
    parameters, each above the converters' own PTQ of the same model (measured here side by side), in the report."""
    import dataclasses

    from conftest import EXAMPLE_MODEL

    from edgeprep.pipelines.run import run
    from edgeprep.targets import load_target

    base = load_target("openvino-cpu")
    base = dataclasses.replace(base, formats=("tflite", "openvino"), precisions=("int8",), bench=None)
    q = base.quantize
    sqnr = {}
    for engine in ("vendor", "edgeprep"):
        ptq = dataclasses.replace(q.ptq, engine=engine, adaround_iterations=30, samples=64)
        target = dataclasses.replace(base, quantize=dataclasses.replace(q, ptq=ptq, layer_error_samples=0))
        result = run(EXAMPLE_MODEL, target, MANIFEST, tmp_path / engine)
        for a in result.report["artifacts"]:
            sqnr[engine, a["format"]] = a["metrics"]["sqnr_db"]
            assert a["verification"]["status"] == "verified", a["verification"]
            if engine == "edgeprep":
                assert a["quantization"]["algorithms"].startswith("edgeprep PTQ: mse ranges, CLE, AdaRound")
    ptq = result.report["ptq"]["int8"]
    assert set(ptq["seconds"]) == {"cle", "statistics_and_ranges", "adaround", "bias_correction"}
    # measured with these short settings: TFLite 34.3 -> 38.8 dB; OpenVINO 37.9 (NNCF, accurate bias correction)
    # -> 38.6 dB (39.4 with the default 300 iterations and 256 samples)
    assert sqnr["edgeprep", "tflite"] >= sqnr["vendor", "tflite"] + 2.0, sqnr
    assert sqnr["edgeprep", "openvino"] >= sqnr["vendor", "openvino"] + 0.3, sqnr
    assert abs(sqnr["edgeprep", "tflite"] - sqnr["edgeprep", "openvino"]) < 1.5, sqnr   # the same integers


def _tiny_bn(seed: int = 1):
    """Conv-BN-ReLU without bias, depthwise-BN, separable-BN, conv with bias-BN, Dense: BatchNorm left unfolded,
    with statistics far from the identity."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="c1")(x)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="r1")(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, depth_multiplier=2, name="dw")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.ReLU(name="r2")(x)
    x = layers.SeparableConv2D(16, 3, strides=2, padding="same", use_bias=False, name="sep")(x)
    x = layers.BatchNormalization(name="bn3")(x)
    x = layers.ReLU(name="r3")(x)
    x = layers.Conv2D(16, 1, name="c4")(x)
    x = layers.BatchNormalization(center=False, name="bn4")(x)
    x = layers.ReLU(name="r4")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(10, activation="softmax", name="head")(x)
    model = keras.Model(inp, x)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            weights = [rng.uniform(0.5, 2.0, n)] + ([rng.normal(0, 0.3, n)] if layer.center else []) + \
                [rng.normal(0, 0.5, n), rng.uniform(0.2, 3.0, n)]
            layer.set_weights([w.astype(np.float32) for w in weights])
    return model


def test_qat_starts_exactly_where_edgeprep_ptq_ended(data):
    """``qat_start`` writes AdaRound's kernels and the corrected biases back into a model whose BatchNorm stays
    unfolded (each kernel divided by its BN's scale, each bias through the BN's shift): folded again, as QAT's
    graph does, it is PTQ's quantized graph, output for output, with the searched ranges."""
    from edgeprep.ptq.adaround import AdaRoundConfig
    from edgeprep.ptq.optimize import PTQSettings, quantize_params
    from edgeprep.qat.model import QATModel
    from edgeprep.stages.ptq import OwnedParams, qat_start

    model = _tiny_bn()
    settings = PTQSettings(calibration_samples=200, samples=64, adaround_config=AdaRoundConfig(iterations=30))
    qat, account = quantize_params(model, data.calibration, settings)
    assert {a["layer"] for a in account["adaround"]} == {"c1", "dw", "sep", "c4", "head"}
    start, ranges, notes = qat_start(OwnedParams(qat, account, "int8"))
    assert notes == []
    assert [type(la).__name__ for la in start.layers].count("BatchNormalization") == 4     # still unfolded
    x = _x(data, 32)
    ptq_out = np.concatenate([qat.serving_function((28, 28, 1))(x[i:i + 1]).numpy() for i in range(len(x))])
    resumed = QATModel(start, ranges)
    got = np.concatenate([resumed.serving_function((28, 28, 1))(x[i:i + 1]).numpy() for i in range(len(x))])
    plain = QATModel(model, ranges)       # the model as given, rounded to nearest: what the start must not be
    nearest = np.concatenate([plain.serving_function((28, 28, 1))(x[i:i + 1]).numpy() for i in range(len(x))])
    assert np.abs(got - ptq_out).max() < 1e-5, np.abs(got - ptq_out).max()
    assert np.abs(nearest - ptq_out).max() > 1e-3
    for name, kernels in qat.overrides.items():     # the same integers: the kernels fold back onto PTQ's grid
        layer_w = resumed.folded_numpy(next(s for s in resumed.steps if s.name == name))[0]
        want = kernels[0]
        for a, b in zip(layer_w if isinstance(layer_w, tuple) else (layer_w,),
                        want if isinstance(want, tuple) else (want,)):
            assert np.allclose(a, b, rtol=1e-5, atol=1e-7), name


def test_layers_named_to_keep_float_stay_float_with_edgeprep_ptq(tmp_path):
    """An explicit [quantize] keep_float list applies to edgeprep's PTQ as to the converters' (it was ignored: the
    fake-quant export kept nothing); a name that is no layer of the model is refused."""
    import json

    from edgeprep.config import from_mapping
    from edgeprep.errors import ConfigError
    from edgeprep.pipelines.quantize import quantize
    from edgeprep.targets import TargetProfile

    _tiny().save(tmp_path / "tiny.keras")

    def target(keep):
        return from_mapping(TargetProfile, {
            "name": "t", "description": "tiny", "formats": ["tflite"], "precisions": ["int8"],
            "quantize": {"calibration_samples": 100, "layer_error_samples": 0, "keep_float": keep,
                         "ptq": {"engine": "edgeprep", "adaround_iterations": 5, "samples": 32}}}, "test")

    result = quantize(tmp_path / "tiny.keras", target(["c2"]), MANIFEST, tmp_path / "kept", method="ptq")
    [a] = result.report["artifacts"]
    # its ReLU layer with it: the conv's output range is the ReLU's
    assert a["quantization"]["kept_float"] == ["c2", "r2"]
    assert a["quantization"]["algorithms"].startswith("edgeprep PTQ")
    plain = quantize(tmp_path / "tiny.keras", target([]), MANIFEST, tmp_path / "plain", method="ptq")
    [b] = plain.report["artifacts"]
    assert "kept_float" not in b["quantization"] and b["sha256"] != a["sha256"]
    assert a["inspection"]["float_ops"] and not b["inspection"]["float_ops"], (a["inspection"], b["inspection"])
    with pytest.raises(ConfigError, match="keep_float names no layer of this model: nope"):
        quantize(tmp_path / "tiny.keras", target(["nope"]), MANIFEST, tmp_path / "bad", method="ptq")
    assert not (tmp_path / "bad").exists() and json.loads((tmp_path / "kept" / "report.json").read_text())


def test_engine_choice_takes_the_cheapest_tier_that_meets_the_gates_by_hand():
    from edgeprep.stages.ptq_choice import Candidate, choose, needs_escalation

    ep = Candidate("edgeprep", 0, {"sqnr_db": 36.0, "agreement": 0.99}, True)
    vendor = Candidate("vendor", 0, {"sqnr_db": 30.0, "agreement": 0.995}, True)
    wide = Candidate("edgeprep-int16", 1, {"sqnr_db": 50.0, "agreement": 1.0}, True)
    assert choose([vendor, ep])[0] == 1                      # both pass: the nearer the float model
    assert choose([vendor, ep, wide])[0] == 1                # int16 passes too, but costs latency: int8 kept
    missed = [dataclasses.replace(c, passed=False) for c in (ep, vendor)]
    assert needs_escalation(missed) and not needs_escalation([ep, missed[1]])
    index, why = choose(missed + [wide])
    assert index == 2 and why.startswith("meets every int8 gate")
    index, why = choose(missed + [dataclasses.replace(wide, passed=False)])
    assert index == 2 and why.startswith("no candidate meets")
    assert choose([Candidate("vendor", 0, {"sqnr_db": float("nan")}, True),
                   Candidate("edgeprep", 0, {"sqnr_db": 1.0}, True)])[0] == 1   # NaN is never nearer
    with pytest.raises(ValueError):
        choose([])


def test_engine_auto_measures_both_engines_and_escalates_to_int16_only_when_int8_misses(tmp_path):
    """``[quantize.ptq] engine = "auto"`` through ``edgeprep quantize``: each candidate converted and measured on the
    calibration data; with a gate int8 meets, int8 is kept (the candidate nearer the float model there); with one
    no int8 candidate meets, edgeprep's 16-bit activations are tried and chosen. The report says what was measured."""
    from edgeprep.config import from_mapping
    from edgeprep.pipelines.quantize import quantize
    from edgeprep.targets import TargetProfile

    _tiny().save(tmp_path / "tiny.keras")

    def target(min_sqnr):
        return from_mapping(TargetProfile, {
            "name": "t", "description": "tiny", "formats": ["tflite"], "precisions": ["int8"],
            "gates": {"int8": {"min_sqnr_db": min_sqnr}},
            "quantize": {"calibration_samples": 100, "layer_error_samples": 0,
                         "ptq": {"engine": "auto", "adaround_iterations": 5, "samples": 32}}}, "test")

    easy = quantize(tmp_path / "tiny.keras", target(5.0), MANIFEST, tmp_path / "easy", method="ptq").report
    choice = easy["ptq"]["choice"]["tflite"]
    assert [c["name"] for c in choice["candidates"]] == ["edgeprep", "vendor"], choice     # int8 met the gate
    assert all(c["passed"] and c["sqnr_db"] > 5 for c in choice["candidates"])
    nearer = max(choice["candidates"], key=lambda c: c["sqnr_db"])["name"]
    [a] = easy["artifacts"]
    assert choice["chosen"] == nearer == a["quantization"]["engine"]
    assert "calibration" in choice["selected_on"] or "fashion" in choice["selected_on"]
    hard = quantize(tmp_path / "tiny.keras", target(90.0), MANIFEST, tmp_path / "hard", method="ptq").report
    choice = hard["ptq"]["choice"]["tflite"]
    names = [c["name"] for c in choice["candidates"]]
    assert names == ["edgeprep", "vendor", "edgeprep-int16"] and not any(c["passed"] for c in choice["candidates"])
    by = {c["name"]: c for c in choice["candidates"]}
    assert by["edgeprep-int16"]["sqnr_db"] > max(by["edgeprep"]["sqnr_db"], by["vendor"]["sqnr_db"]) + 10, by
    [a] = hard["artifacts"]
    assert choice["chosen"] == "edgeprep-int16" and a["quantization"]["activations"] == "int16 (16x8)"
    assert a["verification"]["status"] == "failed"          # measured on the evaluation data: 90 dB is out of reach
    # edgeprep.convert (and the convert command, one function) makes the same choice, so the same bytes
    import edgeprep

    art = edgeprep.convert(tmp_path / "tiny.keras", "tflite", "int8", data=MANIFEST, target=target(90.0),
                           out=tmp_path / "api.tflite")
    assert art.quantization["engine"] == "edgeprep-int16" and art.sha256 == a["sha256"]
