"""BatchNorm re-estimation and telemetry on tiny real models and the committed Fashion-MNIST data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bn_models import conv_variants, nested, randomize_bn, sequential_conv1d, under_mixed_float16, unfoldable
from conftest import DATA_DIR

from edgeprep.bn.graph import bn_layers
from edgeprep.config.calibrate import CalibrateConfig
from edgeprep.data import Dataset
from edgeprep.errors import DataError
from edgeprep.stages.calibrate import calibrate


def dataset(x, y=None, name="test data") -> Dataset:
    x = np.asarray(x, np.float32)
    return Dataset(name, len(x), lambda idx, _x=x: _x[idx], None if y is None else np.asarray(y))


def random_data(model, n=300, seed=1, scale=1.0, offset=0.0):
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).normal(offset, scale, (n, *shape)).astype("float32")


def bn_input_moments(model, layer, x):
    """Population mean and variance of a BN layer's input over ``x`` in float64, straight from Keras."""
    import keras

    probe = keras.Model(model.inputs, layer.input)
    act = np.asarray(probe(x, training=False), np.float64)
    axes = tuple(a for a in range(act.ndim) if a != layer.axis % act.ndim)
    return act.mean(axis=axes), act.var(axis=axes)


def test_exact_statistics_are_population_moments_seen_through_recalibrated_earlier_layers():
    model = conv_variants()
    randomize_bn(model)
    x = random_data(model)
    result = calibrate(model, dataset(x), CalibrateConfig(batch_size=32))
    assert [t.layer for t in result.telemetry.layers] == ["bn_conv", "bn_dw_nocenter", "bn_sep_noscale",
                                                          "bn_chained", "bn_fc_sync"]
    for path, layer in bn_layers(result.model):
        # the probe runs the *recalibrated* model: earlier BNs already carry their new statistics
        mean, var = bn_input_moments(result.model, layer, x)
        np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6, err_msg=path)
        np.testing.assert_allclose(layer.moving_variance.numpy(), var, rtol=1e-5, atol=1e-6, err_msg=path)
    assert all(t.verdict == "stale" and t.applied for t in result.telemetry.layers)
    # the model handed in is unchanged
    assert not np.allclose(bn_layers(model)[0][1].moving_mean.numpy(), bn_layers(result.model)[0][1].moving_mean)
    # a second pass finds nothing left to fix
    again = calibrate(result.model, dataset(x))
    assert all(t.verdict == "ok" and t.mean_drift.relative < 1e-4 for t in again.telemetry.layers)


def test_exact_statistics_do_not_depend_on_batch_size_and_ema_follows_momentum():
    model = conv_variants()
    randomize_bn(model)
    x = random_data(model, 130)
    a = calibrate(model, dataset(x), CalibrateConfig(batch_size=7)).model
    b = calibrate(model, dataset(x), CalibrateConfig(batch_size=64)).model
    for (_, la), (_, lb) in zip(bn_layers(a), bn_layers(b)):
        np.testing.assert_allclose(la.moving_variance.numpy(), lb.moving_variance.numpy(), rtol=2e-5)
    # momentum 0: the estimate is the last batch's statistics (samples 128..129 with batches of 64)
    ema = calibrate(model, dataset(x), CalibrateConfig(method="ema", momentum=0.0, batch_size=64))
    first = bn_layers(ema.model)[0][1]
    mean, var = bn_input_moments(ema.model, first, x[128:])
    np.testing.assert_allclose(first.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    assert ema.telemetry.method == "ema" and ema.telemetry.momentum == 0.0


@pytest.mark.parametrize("build", [nested, unfoldable, sequential_conv1d])
def test_nested_sequential_shared_and_non_last_axis_layers_are_recalibrated(build):
    model = build()
    randomize_bn(model)
    x = random_data(model, 96)
    result = calibrate(model, dataset(x))
    tele = {t.layer: t for t in result.telemetry.layers}
    assert set(tele) == {p for p, _ in bn_layers(model)} and all(t.applied for t in tele.values())
    if build is unfoldable:
        assert tele["bn_shared"].calls == 2 and "shared" in " ".join(tele["bn_shared"].reasons)
    if build is sequential_conv1d:
        layer = dict(bn_layers(result.model))["bn_axis1"]
        assert tele["bn_axis1"].channels == 16 and tele["bn_axis1"].axis == 1
        mean, var = bn_input_moments(result.model, layer, x)
        np.testing.assert_allclose(layer.moving_variance.numpy(), var, rtol=1e-5)
    if build is nested:
        assert "inner_block/inner_bn" in tele and "inner_seq/seq_bn" in tele
    again = calibrate(result.model, dataset(x))
    assert all(t.verdict == "ok" for t in again.telemetry.layers)


def test_telemetry_flags_dead_and_epsilon_dominated_channels_and_broken_statistics():
    model = conv_variants()
    randomize_bn(model)
    conv = model.get_layer("conv_nobias")
    k = conv.kernel.numpy()
    k[..., :2] = 0.0            # two dead output channels
    k[..., 2] *= 1e-2           # one whose variance falls below epsilon (1e-3)
    conv.kernel.assign(k)
    bn = model.get_layer("bn_fc_sync")
    mean = bn.moving_mean.numpy()
    mean[3] = np.nan
    bn.moving_mean.assign(mean)
    result = calibrate(model, dataset(random_data(model, 64)), CalibrateConfig(batch_size=16))
    first = result.telemetry.layers[0]
    assert first.near_zero_variance.count == 2 and first.near_zero_variance.first == (0, 1)
    assert first.epsilon_dominated.count == 3 and "dead" in " ".join(first.reasons)
    last = result.telemetry.layers[-1]
    assert last.verdict == "broken" and last.non_finite.stored == 1 and last.applied
    assert result.telemetry.status == "broken"
    assert np.all(np.isfinite(dict(bn_layers(result.model))["bn_fc_sync"].moving_mean.numpy()))
    from test_fold import validate_section
    validate_section("calibration", result.telemetry.to_dict())
    json.dumps(result.telemetry.to_dict(), allow_nan=True)


def test_noisy_verdict_and_the_batch_size_that_would_do():
    import keras
    from keras import layers

    model = keras.Sequential([keras.Input((20,)), layers.Dense(16, name="fc"), layers.BatchNormalization(name="bn")])
    x = random_data(model, 512)
    result = calibrate(model, dataset(x), CalibrateConfig(batch_size=4, stale_mean_shift=10, stale_scale_change=10))
    t = result.telemetry.layers[0]
    # a Dense BN's batch mean wanders by about 1/sqrt(batch) standard deviations
    assert t.verdict == "noisy" and 0.35 < t.batch_noise < 0.65
    assert 12 <= t.acceptable_batch_size <= 30 and t.batches == 128


def test_batch_size_one_warns_that_statistics_are_noisy():
    model = conv_variants()
    warnings = []
    result = calibrate(model, dataset(random_data(model, 6)), CalibrateConfig(batch_size=1), warn=warnings.append)
    assert any("batch size 1" in w and "noisy" in w for w in warnings)
    assert result.telemetry.warnings == tuple(warnings)


def test_nan_and_inf_in_calibration_data_are_refused_with_their_count():
    model = conv_variants()
    x = random_data(model, 40)
    x[3, 0, 0, 0] = np.nan
    x[17, 1, 2, :] = np.inf
    with pytest.raises(DataError) as info:
        calibrate(model, dataset(x))
    assert "4 NaN/Inf values" in str(info.value)


def test_data_that_does_not_fit_the_model_is_a_clear_error(tmp_path):
    from edgeprep.pipelines.run import load_inputs

    conv_variants().save(tmp_path / "m.keras")          # 12x12x3 input; the committed data is 28x28x1
    with pytest.raises(DataError) as info:
        load_inputs(tmp_path / "m.keras", DATA_DIR / "fashion_mnist.toml")
    assert "expects 12x12x3" in str(info.value) and "--resize 12,12 --channels 3" in str(info.value)


def test_mixed_float16_model_is_calibrated_in_float32():
    model = under_mixed_float16(conv_variants)
    x = random_data(model, 64, scale=30000.0)     # conv outputs beyond fp16's 65504: Inf in the fp16 model
    conv_out = np.asarray(model.get_layer("conv_nobias")(x), np.float32)
    assert np.isinf(conv_out).any()
    warnings = []
    result = calibrate(model, dataset(x), warn=warnings.append)
    assert result.telemetry.dtype_policy == "mixed_float16" and any("float32" in w for w in warnings)
    assert all(t.non_finite.total == 0 and t.applied for t in result.telemetry.layers)
    first = bn_layers(result.model)[0][1]
    assert first.moving_variance.dtype == "float32" and np.max(first.moving_variance.numpy()) > 65504.0


@pytest.fixture(scope="module")
def shifted(trained_small, calib_npz, eval_npz, tmp_path_factory):
    """Calibration and evaluation data as a washed-out camera shows them: contrast halved, brightness raised."""
    def shift(x):
        return np.clip(x.astype("float32") / 255.0 * 0.5 + 0.3, 0.0, 1.0)
    root = tmp_path_factory.mktemp("shifted")
    np.savez(root / "calib.npz", x=shift(calib_npz["x"]), y=calib_npz["y"])
    np.savez(root / "eval.npz", x=shift(eval_npz["x"]), y=eval_npz["y"])
    (root / "shifted.toml").write_text('calibration = "calib.npz"\nevaluation = "eval.npz"\n')
    return root / "shifted.toml"


@pytest.mark.slow
def test_recalibration_restores_accuracy_under_a_brightness_contrast_shift(trained_small, shifted, eval_npz):
    from edgeprep.data import load_data
    from edgeprep.models import load_model
    from edgeprep.stages.calibrate import accuracy

    model = load_model(trained_small).obj
    clean = accuracy(model, dataset(eval_npz["x"] / 255.0, eval_npz["y"]))
    data = load_data(shifted)
    result = calibrate(model, data.calibration, evaluation=data.evaluation)
    acc = result.telemetry.accuracy
    assert acc.samples == 2000
    assert clean - acc.before > 0.08, (clean, acc)              # the shift costs accuracy ...
    assert acc.after - acc.before > 0.08 and acc.after > clean - 0.03, (clean, acc)   # ... recalibration restores it
    assert result.telemetry.layers[0].verdict == "stale"


@pytest.mark.slow
def test_calibrate_cli_writes_the_model_the_table_and_the_report(cli, trained_small, shifted, tmp_path):
    proc = cli("calibrate", trained_small, "--data", shifted, "--out", tmp_path / "c.keras", "--samples", "200")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "BatchNorm telemetry" in proc.stdout and "stale → recalibrated" in proc.stdout
    report = json.loads((tmp_path / "c.report.json").read_text())
    from edgeprep.report import validate
    validate(report)
    cal = report["calibration"]
    assert cal["samples"] == 200 and cal["accuracy"]["after"] > cal["accuracy"]["before"]
    assert (tmp_path / "c.keras").stat().st_size > 0
    bad = tmp_path / "bad.npz"
    x = np.load(DATA_DIR / "fashion_mnist_calib.npz")["x"][:50].astype("float32")
    x[0, 0, 0] = np.nan
    np.savez(bad, x=x)
    proc = cli("calibrate", trained_small, "--data", bad, "--out", tmp_path / "d.keras")
    assert proc.returncode == 2 and "1 NaN/Inf values" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "d.keras").exists()


def test_calibrate_table_in_a_target_is_validated_and_round_trips():
    from edgeprep.errors import ConfigError
    from edgeprep.targets import parse_target

    base = 'name = "t"\ndescription = "d"\nformats = ["tflite"]\nprecisions = ["fp32"]\n[calibrate]\n'
    t = parse_target(base + 'enabled = true\nmethod = "ema"\nmomentum = 0.8\nsamples = 500\n', "t.toml")
    assert t.calibrate == CalibrateConfig(enabled=True, method="ema", momentum=0.8, samples=500)
    assert parse_target(t.to_toml(), "again.toml") == t
    with pytest.raises(ConfigError, match="momentum must be in"):
        parse_target(base + "momentum = 1.5\n", "t.toml")
    with pytest.raises(ConfigError, match="unknown key 'batchsize'"):
        parse_target(base + "batchsize = 8\n", "t.toml")
    with pytest.raises(ConfigError, match="'median' is not one of"):
        parse_target(base + 'method = "median"\n', "t.toml")
