"""Honest results (issue 13): chance-level float models are diagnosed, BN re-estimation is one flag away and shows
what it did, calibration data that is the evaluation data is called out (and can be split), one int8 artifact
whichever command made it, and keep-float auto works toward every int8 gate.

Real models trained on the committed Fashion-MNIST images, the real converters and runtimes, in-process.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_DIR, build_small_cnn

from edgeprep.progress import Reporter

MANIFEST = DATA_DIR / "fashion_mnist.toml"


class Collect(Reporter):
    """The real reporter, quiet, keeping what it would have said."""

    def __init__(self):
        super().__init__(quiet=True)
        self.warnings: list[str] = []
        self.infos: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def info(self, message: str) -> None:
        self.infos.append(message)


def target(tmp_path: Path, name: str, precisions=("int8",), formats=("tflite",), extra: str = "") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\ndescription = "test"\nformats = {list(formats)!r}\n'
                    f'precisions = {list(precisions)!r}\nruntime = "litert"\n'
                    '[quantize]\ncalibration_samples = 200\nlayer_error_samples = 16\n[verify]\nsamples = 300\n'
                    + extra)
    return path


def stale_bn_cnn():
    """Conv-BN-ReLU x3 with Keras' momentum 0.999 (as MobileNetV3 uses), trained two short epochs: its moving
    statistics are still mostly their initial values, so in inference it predicts nearly one class."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(1)
    inp = keras.Input((28, 28, 1))
    x = inp
    for filters in (8, 16, 32):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization(momentum=0.999)(x))
    out = layers.Dense(10, activation="softmax")(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out, name="stale")
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    with np.load(DATA_DIR / "fashion_mnist_calib.npz") as z:
        model.fit(z["x"].astype("float32") / 255.0, z["y"], epochs=2, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory, calib_npz):
    """A small CNN trained on [0, 1] pixels, a copy whose BatchNorm statistics are wrong (stale), and one trained
    on 0..255 pixels."""
    import keras

    root = tmp_path_factory.mktemp("honest")
    model = build_small_cnn(seed=3)
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    model.fit(calib_npz["x"].astype("float32") / 255.0, calib_npz["y"], epochs=8, batch_size=32, verbose=0)
    good = root / "small.keras"
    model.save(good)
    stale_model = stale_bn_cnn()
    stale = root / "stale.keras"
    stale_model.save(stale)
    keras.utils.set_random_seed(4)
    raw_model = build_small_cnn(seed=3)       # trained on 0..255 pixels (no rescaling inside)
    raw_model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    raw_model.fit(calib_npz["x"].astype("float32"), calib_npz["y"], epochs=8, batch_size=32, verbose=0)
    raw_trained = root / "raw_trained.keras"
    raw_model.save(raw_trained)
    raw = root / "eval_raw.npz"      # the evaluation images as uint8 0..255, no manifest saying "scale 1/255"
    with np.load(DATA_DIR / "fashion_mnist_eval.npz") as z:
        np.savez(raw, x=z["x"][:400], y=z["y"][:400])
    return {"good": good, "stale": stale, "raw": raw, "raw_trained": raw_trained, "root": root}


def load_target_file(path):
    from edgeprep.targets import load_target

    return load_target(path)


# --- chance level ----------------------------------------------------------------------------------------------

def test_chance_level_is_pure_and_honest():
    from edgeprep.stages.sanity import chance_level

    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(5), 60))   # balanced: chance is 1/5
    onehot = np.eye(5)[labels]
    good = chance_level(onehot + 0.01, labels)
    assert good.accuracy == 1.0 and not good.suspicious
    collapsed = chance_level(np.tile(np.eye(5)[3], (300, 1)), labels)
    assert collapsed.collapsed and collapsed.near_chance and collapsed.top_class == 3
    random_guess = chance_level(rng.random((300, 5)), labels)
    assert random_guess.near_chance and not random_guess.collapsed
    assert 0.3 < random_guess.limit < 0.4                      # 5 classes: near chance below about 0.36
    assert chance_level(rng.random((300, 1)), None) is None    # one output: not a classifier
    # no labels: only a collapse can be seen
    assert chance_level(np.tile(np.eye(5)[1], (50, 1)), None).suspicious
    assert not chance_level(onehot, None).suspicious


def test_misscaled_inputs_are_diagnosed_as_preprocessing(models, tmp_path, cli):
    from edgeprep.pipelines.run import run

    fp32 = load_target_file(target(tmp_path, "fp32", precisions=("fp32",)))
    # a model trained on 0..255 pixels, given the manifest's [0, 1] pixels: it predicts one class
    rep = Collect()
    result = run(models["raw_trained"], fp32, MANIFEST, tmp_path / "run", reporter=rep)
    warning = next(w for w in rep.warnings if "chance level" in w)
    assert "predicts class" in warning and "preprocessing" in warning and "range 0 … 1" in warning
    assert "scaled differently from training" in warning and "drop the scale" in warning
    assert "fix the scaling first" in warning          # re-estimating BN would only hide the mismatch
    sanity = result.report["reference"]["sanity"]
    assert sanity["first_bn"]["scaling_suspect"] and sanity["first_bn"]["spread_vs_expected"] < 0.25
    assert sanity["check"]["collapsed"] and sanity["check"]["classes"] == 10
    # edgeprep verify makes the same check of its float reference
    proc = cli("verify", models["raw_trained"], tmp_path / "run" / "raw_trained.fp32.tflite", "--data", MANIFEST,
               "--out", tmp_path / "v")
    assert proc.returncode == 0, proc.stderr[-2000:]
    verified = json.loads((tmp_path / "v" / "report.json").read_text())
    assert verified["reference"]["sanity"]["first_bn"]["scaling_suspect"]
    # the [0, 1] model on 0..255 pixels is robust enough (top-1 about 0.7): a low figure, not chance, no warning
    rep2 = Collect()
    fine = run(models["good"], fp32, models["raw"], tmp_path / "run2", reporter=rep2)
    assert not [w for w in rep2.warnings if "chance" in w] and "sanity" not in fine.report["reference"]
    assert fine.report["reference"]["accuracy"] > 0.5


def test_stale_bn_is_diagnosed_and_calibrate_fixes_it(models, tmp_path, cli):
    from edgeprep.pipelines.run import run

    rep = Collect()
    t = target(tmp_path, "fp32", precisions=("fp32",))
    stale = run(models["stale"], load_target_file(t), MANIFEST, tmp_path / "stale", reporter=rep)
    before = stale.report["reference"]["accuracy"]
    warning = next(w for w in rep.warnings if "chance level" in w or "predicts class" in w)
    assert "stale BatchNorm statistics" in warning and "pass --calibrate" in warning
    telemetry = stale.report["reference"]["sanity"]["bn_telemetry"]
    assert telemetry["summary"]["stale"] >= 1 and telemetry["accuracy"]["after"] > before + 0.2
    first_bn = stale.report["reference"]["sanity"]["first_bn"]
    assert first_bn["statistics_look_initial"] and not first_bn["scaling_suspect"]
    assert not any(p.name.endswith(".calibrated.keras") for p in (tmp_path / "stale").iterdir())

    out = tmp_path / "calibrated"
    proc = cli("run", models["stale"], "--target", t, "--data", MANIFEST, "--calibrate", "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    cal = report["calibration"]
    assert cal["status"] == "recalibrated" and cal["model"] == "stale.calibrated.keras"
    assert f"float top-1 {cal['accuracy']['before']:.4f} → {cal['accuracy']['after']:.4f} after BN re-estimation" \
        in cal["console"]
    assert report["reference"]["accuracy"] == pytest.approx(cal["accuracy"]["after"], abs=1e-6)
    assert report["reference"]["accuracy"] > before + 0.2 and "sanity" not in report["reference"]
    resolved = (out / "target.toml").read_text()            # the resolved profile says it was enabled
    assert "[calibrate]" in resolved and "enabled = true" in resolved
    import keras

    saved = keras.models.load_model(out / "stale.calibrated.keras")
    x = np.load(DATA_DIR / "fashion_mnist_eval.npz")["x"][:300].astype("float32") / 255.0
    top1 = float(np.mean(np.argmax(saved.predict(x, verbose=0), 1) == np.load(DATA_DIR / "fashion_mnist_eval.npz")
                         ["y"][:300]))
    assert top1 == pytest.approx(report["reference"]["accuracy"], abs=1e-6)   # it is the float reference
    # edgeprep calibrate splits one source too: statistics from 75 %, top-1 before/after on the other 25 %
    proc = cli("calibrate", models["stale"], "--data", models["raw"], "--scale", "0.00392156862745098", "--split",
               "0.25", "--out", tmp_path / "split.keras")
    assert proc.returncode == 0, proc.stderr[-2000:]
    split = json.loads((tmp_path / "split.report.json").read_text())
    assert split["data"]["evaluation"]["samples"] == 100 and split["data"]["calibration"]["samples"] == 300
    assert split["calibration"]["samples"] == 300 and split["calibration"]["accuracy"]["samples"] == 100


# --- calibration data that is the evaluation data -------------------------------------------------------------

def test_shared_data_is_called_out_and_split_separates(models, tmp_path):
    from edgeprep.data import load_data
    from edgeprep.pipelines.run import load_inputs

    rep = Collect()
    load_inputs(models["good"], models["raw"], calibration_use="int8 calibration", reporter=rep)
    assert any("int8 calibration uses the evaluation data itself" in w and "--split" in w for w in rep.warnings)
    # a copy under another name is found by content
    copy = tmp_path / "copy.npz"
    shutil.copy(models["raw"], copy)
    rep = Collect()
    load_inputs(models["good"], models["raw"], calibration_path=copy, calibration_use="QAT fine-tuning",
                reporter=rep)
    assert any("400 of the 400 evaluation samples" in w and "QAT fine-tuning" in w for w in rep.warnings)
    # --split: disjoint, stratified, the same every time, and no warning
    rep = Collect()
    _, spec = load_inputs(models["good"], models["raw"], split=0.25, calibration_use="int8 calibration",
                          reporter=rep)
    assert not rep.warnings
    assert spec.evaluation.count == 100 and spec.calibration.count == 300 and spec.overlap() == 0
    assert "evaluation split" in spec.evaluation.source
    y = np.load(models["raw"])["y"]
    counts = np.bincount(y, minlength=10)
    assert np.all(np.abs(np.bincount(spec.evaluation.labels, minlength=10) - 0.25 * counts) <= 1)
    again = load_data(models["raw"], split=0.25)
    assert np.array_equal(again.evaluation.labels, spec.evaluation.labels)
    assert np.array_equal(again.evaluation.arrays()[0], spec.evaluation.arrays()[0])
    # the manifest already separates its sets: --split is refused with the fix
    from edgeprep.errors import InputError

    with pytest.raises(InputError, match="separate calibration and evaluation"):
        load_data(MANIFEST, split=0.3)


# --- one int8 whatever the route -----------------------------------------------------------------------------

def test_run_quantize_and_convert_give_the_same_int8(models, tmp_path, cli):
    t = target(tmp_path, "one", precisions=("fp32", "int8"))
    assert cli("run", models["good"], "--target", t, "--data", MANIFEST, "--out", tmp_path / "r").returncode == 0
    assert cli("quantize", models["good"], "--target", t, "--data", MANIFEST, "--out", tmp_path / "q").returncode == 0
    assert cli("convert", models["good"], "--to", "tflite", "--precision", "int8", "--target", t, "--data",
               MANIFEST, "--out", tmp_path / "c.int8.tflite").returncode == 0
    files = [tmp_path / "r" / "small.int8.tflite", tmp_path / "q" / "small.int8.tflite", tmp_path / "c.int8.tflite"]
    blobs = [f.read_bytes() for f in files]
    assert blobs[0] == blobs[1] == blobs[2]
    for d in ("r", "q"):
        report = json.loads((tmp_path / d / "report.json").read_text())
        assert report["fold"]["status"] == "folded"
        int8 = next(a for a in report["artifacts"] if a["precision"] == "int8")
        assert "no_foldable_bn_ops" in [c["name"] for c in int8["verification"]["checks"]]
        assert int8["layer_errors"]["status"] == "measured"
    assert json.loads((tmp_path / "q" / "report.json").read_text())["command"] == "quantize"
    # with --calibrate the three routes still agree (and differ from the uncalibrated artifact)
    cli("run", models["good"], "--target", t, "--data", MANIFEST, "--calibrate", "--out", tmp_path / "rc")
    cli("convert", models["good"], "--to", "tflite", "--precision", "int8", "--target", t, "--data", MANIFEST,
        "--calibrate", "--out", tmp_path / "cc.int8.tflite")
    calibrated = (tmp_path / "rc" / "small.int8.tflite").read_bytes()
    assert calibrated == (tmp_path / "cc.int8.tflite").read_bytes() and calibrated != blobs[0]


def test_edgeprep_ptq_gives_the_same_int8_from_run_quantize_and_convert(models, tmp_path, cli):
    """``[quantize.ptq] engine = "edgeprep"``: convert computes the same parameters as run and quantize and writes the
    same bytes, and says which PTQ made them."""
    t = target(tmp_path, "own", extra='[quantize.ptq]\nengine = "edgeprep"\nadaround_iterations = 20\nsamples = 32\n')
    assert cli("run", models["good"], "--target", t, "--data", MANIFEST, "--out", tmp_path / "r").returncode == 0
    assert cli("quantize", models["good"], "--target", t, "--data", MANIFEST, "--out", tmp_path / "q").returncode == 0
    done = cli("convert", models["good"], "--to", "tflite", "--precision", "int8", "--target", t, "--data",
               MANIFEST, "--out", tmp_path / "c.int8.tflite")
    assert done.returncode == 0 and "edgeprep PTQ" in done.stdout + done.stderr
    blobs = [(tmp_path / d / "small.int8.tflite").read_bytes() for d in ("r", "q")]
    assert blobs[0] == blobs[1] == (tmp_path / "c.int8.tflite").read_bytes()
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    int8 = next(a for a in report["artifacts"] if a["precision"] == "int8")
    assert int8["quantization"]["algorithms"].startswith("edgeprep PTQ")
    # and they differ from the converter's own PTQ of the same model
    vendor = target(tmp_path, "vendor")
    cli("convert", models["good"], "--to", "tflite", "--precision", "int8", "--target", vendor, "--data", MANIFEST,
        "--out", tmp_path / "v.int8.tflite")
    assert (tmp_path / "v.int8.tflite").read_bytes() != blobs[0]


# --- keep-float toward every gate ------------------------------------------------------------------------------

def test_failing_gates_and_summary_are_pure():
    from edgeprep.config.gates import Thresholds
    from edgeprep.errors import ConfigError
    from edgeprep.stages.keep_float import failing, keep_float_search, summary

    result = {"metrics": {"accuracy_drop": 0.3, "agreement": 0.95, "sqnr_db": 25.0}}
    assert failing(result, Thresholds(max_accuracy_drop=1.0)) == []
    assert failing(result, Thresholds(max_accuracy_drop=1.0, min_agreement=0.97, min_sqnr_db=30)) == \
        ["min_agreement 0.95 < 0.97", "min_sqnr_db 25 < 30"]
    # no labels: the drop is judged on disagreement (5 points here)
    assert failing({"metrics": {"agreement": 0.95, "accuracy_drop": None}}, Thresholds(max_accuracy_drop=1.0)) == \
        ["max_accuracy_drop 5 > 1"]
    keep = {"gates": {"min_agreement": 0.97}, "kept_float": ["a"], "met": True, "driven_by": ["min_agreement 0.95 "
            "< 0.97"], "failing": []}
    assert summary(keep) == "kept float: a (driven by min_agreement 0.95 < 0.97; now meets min_agreement 0.97)"
    with pytest.raises(ConfigError, match="needs an int8 gate"):
        keep_float_search(None, result, {"layers": []}, None, None, Thresholds(max_size_bytes=10), 4)


def test_keep_float_auto_works_toward_agreement(models, tmp_path, cli):
    # the drop limit is met at once; only the agreement gate can drive the search
    t = target(tmp_path, "kf", extra='[gates.int8]\nmax_accuracy_drop = 50.0\nmin_agreement = 0.9999\n')
    out = tmp_path / "kf"
    proc = cli("quantize", models["good"], "--target", t, "--data", MANIFEST, "--keep-float", "auto", "--out", out)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    keep = report["artifacts"][0]["keep_float"]
    assert keep["gates"] == {"max_accuracy_drop": 50.0, "min_agreement": 0.9999}
    assert keep["driven_by"] and all(d.startswith("min_agreement") for d in keep["driven_by"])
    assert keep["kept_float"] and len(keep["tried"]) >= 2
    assert keep["tried"][0]["failing"] == keep["driven_by"]
    assert report["artifacts"][0]["quantization"]["kept_float"] == keep["kept_float"]
    # the run pipeline does the same search (one int8 whatever the route)
    t.write_text(t.read_text().replace("[quantize]\n", '[quantize]\nkeep_float = ["auto"]\n'))
    proc = cli("run", models["good"], "--target", t, "--data", MANIFEST, "--out", tmp_path / "kfr")
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    run_keep = json.loads((tmp_path / "kfr" / "report.json").read_text())["artifacts"][0]["keep_float"]
    assert run_keep["kept_float"] == keep["kept_float"]
    assert (tmp_path / "kfr" / "small.int8.tflite").read_bytes() == (out / "small.int8.tflite").read_bytes()
