"""Quantization: TFLite/NNCF/Core ML PTQ options, per-layer error, keep-float, and Keras-3 QAT (real toolchains)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import MANIFEST, ROOT

from edgeprep.config.formats import CoreMLOptions, IgnoredScope, OpenVINOOptions, TFLiteOptions
from edgeprep.config.quantize import QuantizeConfig
from edgeprep.models import load_model
from edgeprep.stages.convert import convert


@pytest.fixture(scope="module")
def small(trained_small, tmp_path_factory):
    """The model's handle, its SavedModel (what OpenVINO converts from) exported once for the module's
    conversions instead of once per OpenVINO conversion."""
    handle = load_model(trained_small)
    handle.saved_model_dir(tmp_path_factory.mktemp("savedmodel"))
    return handle


def _layernorm_model(path):
    import keras
    from keras import layers

    keras.utils.set_random_seed(1)
    inp = keras.Input((28, 28, 1))
    x = layers.Conv2D(8, 3, strides=2, use_bias=False)(inp)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.LayerNormalization()(x)           # TFLite keeps part of it float; the QAT planner does not handle it
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(10, activation="softmax")(x)
    keras.Model(inp, out).save(path)
    return path


def test_tflite_ptq_range_methods_keep_float_and_float_op_check(tmp_path, small, data):
    from edgeprep.backends import layer_error
    from edgeprep.backends.tflite.layer_error import tflite_errors

    work = tmp_path / "work"        # shared: int8 conversions of the same model reuse one calibration

    def int8(name, opts=TFLiteOptions(), **kw):
        return convert(small, "tflite", "int8", opts, tmp_path / f"{name}.int8.tflite", calibration=data.calibration,
                       calibration_samples=200, workdir=work, **kw)

    mm = int8("a")
    assert mm.inspection["all_int8"] and mm.inspection["float_ops"] == {}
    assert mm.quantization["range_method"] == "minmax" and mm.quantization["calibration_samples"] == 200
    assert len(list(work.glob("calibrated-*.tflite"))) == 1
    pc = int8("b", quantize=QuantizeConfig(range_method="percentile", percentile=99.0))
    assert pc.sha256 != mm.sha256 and len(list(work.glob("calibrated-*.tflite"))) == 2
    fp = convert(small, "tflite", "fp32", TFLiteOptions(), tmp_path / "f.fp32.tflite")
    x, _ = data.evaluation.arrays(64)
    errs = layer_error.ranked(tflite_errors(mm.path, fp.path, x))
    assert len(errs) >= 6 and all(5 < e.sqnr_db < 80 for e in errs), errs
    same = tflite_errors(fp.path, fp.path, x)
    assert all(e.sqnr_db >= 100 for e in same)               # float against itself: (near) exact
    keep = errs[0].node
    kept = int8("k", keep_float=(keep,))
    assert kept.inspection["float_ops"] and not kept.inspection["all_int8"]
    assert kept.quantization["kept_float"] == [keep]
    with pytest.raises(Exception, match="float_fallback"):
        int8("s", TFLiteOptions(float_fallback=False), keep_float=(keep,))
    assert len(list(work.glob("calibrated-*.tflite"))) == 2   # keep-float re-quantized without recalibrating


def test_keep_float_search_keeps_worst_layers_up_to_the_limit(tmp_path, small, data):
    """Unlabelled evaluation data: the drop is top-1 disagreement with the float model, which 2 float layers in an
    otherwise int8 model cannot bring to 0, so the search re-quantizes with 1, then 2 layers and says it failed."""
    from edgeprep.config.gates import Thresholds
    from edgeprep.data import load_dataset
    from edgeprep.stages import keep_float as layers
    from edgeprep.stages.verify import reference, verify

    x, _ = data.evaluation.arrays(300)
    np.savez(tmp_path / "unlabelled.npz", x=x)
    ev = load_dataset(tmp_path / "unlabelled.npz")
    work = tmp_path / "work"

    def int8(keep=()):
        return convert(small, "tflite", "int8", TFLiteOptions(), tmp_path / f"k{len(keep)}.int8.tflite",
                       calibration=data.calibration, calibration_samples=200, workdir=work, keep_float=keep)

    art = int8()
    fp = convert(small, "tflite", "fp32", TFLiteOptions(), tmp_path / "f.fp32.tflite")
    ref = reference(small, ev, 300)
    measure = lambda a: verify(a, ref, ev, Thresholds())  # noqa: E731
    lerr = layers.layer_errors(art, fp.path, ev, 32)
    first = measure(art)
    chosen, result, rec = layers.keep_float_search(art, first, lerr, int8, measure, Thresholds(max_accuracy_drop=0.0),
                                                   max_layers=2)
    assert first["metrics"].get("accuracy_drop") is None and first["metrics"]["agreement"] < 1.0
    assert [t["kept_float"] for t in rec["tried"]] == [[], layers.candidates(lerr)[:1], layers.candidates(lerr)[:2]]
    assert rec["kept_float"] == layers.candidates(lerr)[:2] and not rec["met"] and "agreement" in rec["metric"]
    assert rec["tried"][0]["drop"] == pytest.approx(100 * (1 - first["metrics"]["agreement"]), abs=1e-3)
    assert chosen.inspection["float_ops"] and chosen.quantization["kept_float"] == rec["kept_float"]
    assert result["metrics"]["agreement"] == pytest.approx(1 - rec["tried"][-1]["drop"] / 100, abs=1e-6)


def test_openvino_ignored_scope_and_accuracy_control(tmp_path, small, data):
    from edgeprep.backends import layer_error
    from edgeprep.backends.openvino.layer_error import openvino_errors

    base = convert(small, "openvino", "int8", OpenVINOOptions(), tmp_path / "a.int8.xml",
                   calibration=data.calibration, calibration_samples=100)
    fp = convert(small, "openvino", "fp32", OpenVINOOptions(), tmp_path / "f.fp32.xml")
    x, _ = data.evaluation.arrays(32)
    errs = layer_error.ranked(openvino_errors(base.path, fp.path, x))
    assert errs and errs[0].sqnr_db < 60
    conv_node = next(e.node for e in errs if e.op == "Convolution")
    ign = convert(small, "openvino", "int8", OpenVINOOptions(ignored_scope=IgnoredScope(names=(conv_node,)),
                                                               bias_correction="none"),
                  tmp_path / "i.int8.xml", calibration=data.calibration, calibration_samples=100)
    assert ign.inspection["op_counts"]["FakeQuantize"] < base.inspection["op_counts"]["FakeQuantize"]
    assert ign.quantization["kept_float"] == [conv_node] and "bias correction none" in ign.quantization["method"]
    ac = convert(small, "openvino", "int8", OpenVINOOptions(accuracy_control=True), tmp_path / "c.int8.xml",
                 calibration=data.calibration, calibration_samples=100, max_accuracy_drop=1.0)
    assert "accuracy control" in ac.quantization["method"] and ac.inspection["op_counts"]["FakeQuantize"] >= 1


def test_coreml_palettization_and_activation_mark(tmp_path, small):
    lin = convert(small, "coreml", "int8", CoreMLOptions(weight_threshold=0), tmp_path / "l.mlpackage")
    pal = convert(small, "coreml", "int8", CoreMLOptions(weight_threshold=0, weight_compression="palettize4",
                                                         quantize_activations=True), tmp_path / "p.mlpackage")
    assert "constexpr_lut_to_dense" in pal.inspection["op_counts"]
    assert pal.quantization["weights"].startswith("4-bit palettized")
    assert lin.quantization["weight_sqnr"] and pal.quantization["weight_sqnr"]
    # 4-bit lookup tables are coarser than 8-bit linear weights
    assert min(r["sqnr_db"] for r in pal.quantization["weight_sqnr"]) < \
        min(r["sqnr_db"] for r in lin.quantization["weight_sqnr"])
    if sys.platform != "darwin":
        assert "not applied" in pal.quantization["activations"] and any("macOS" in n for n in pal.notes)


def test_qat_plan_folds_bn_and_lists_unhandled_layers(tmp_path, data):
    import keras

    from edgeprep.qat.graph import plan, summary
    from edgeprep.qat.model import Mode, QATModel
    from edgeprep.qat.ranges import activation_ranges

    m = keras.models.load_model(_layernorm_model(tmp_path / "ln.keras"))
    s = summary(plan(m))
    assert list(s["folded_batchnorm"].values()) == [m.layers[2].name]
    assert [k["type"] for k in s["kept_float"]] == ["LayerNormalization"]
    ranges = activation_ranges(m, data.calibration, 64)
    qat = QATModel(m, ranges)
    x, _ = data.evaluation.arrays(64)
    flt = np.asarray(qat(x, Mode(quantize=False))[0])
    np.testing.assert_allclose(flt, m.predict(x, verbose=0), atol=1e-5)   # folded float graph == the model
    from edgeprep.backends.tflite import qat as export
    from edgeprep.backends.tflite.ptq import float_ops

    flat = export.to_tflite(qat, (28, 28, 1))
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=flat)
    it.allocate_tensors()
    assert float_ops(it), "the unhandled LayerNormalization stays float and is listed"


def test_qat_cli_labelled_exports_all_int8_tflite_and_openvino(cli, tmp_path, trained_small):
    out = tmp_path / "q"
    r = cli("quantize", trained_small, "--method", "qat", "--labels", "--steps", "12", "--data", MANIFEST,
            "--target", _target(tmp_path), "--out", out, "--keep-float", "auto")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((out / "report.json").read_text())
    arts = {a["format"]: a for a in rep["artifacts"]}
    assert arts["tflite"]["inspection"]["all_int8"] and arts["tflite"]["inspection"]["float_ops"] == {}
    assert arts["openvino"]["inspection"]["op_counts"]["FakeQuantize"] >= 4
    for a in arts.values():
        assert a["metrics"]["agreement"] >= 0.9 and a["layer_errors"]["status"] == "measured"
        assert a["layer_errors"]["layers"][0]["sqnr_db"] <= a["layer_errors"]["layers"][-1]["sqnr_db"]
        assert a["keep_float"]["met"]
        # layers are chosen on the calibration data; the reported metrics come from the evaluation data
        assert a["keep_float"]["selected_on"].endswith("fashion_mnist_calib.npz")
        assert a["metrics"]["samples"] == rep["reference"]["samples"]
    q = rep["quantize"]["qat"]
    assert q["objective"] == "labels" and q["steps"] == 12 and q["bn_frozen_at_step"] == 5
    assert set(q["bn_divergence"]) and q["replicas"] == 1
    # fine-tuning started from edgeprep's PTQ (AdaRound kernels, corrected biases, searched ranges held)
    assert q["config"]["start"] == "ptq" and rep["quantize"]["ptq_start"]["algorithms"]["adaround"]
    assert rep["quantize"]["ptq_start"]["notes"] == []
    import keras

    tuned = keras.models.load_model(out / "small_cnn.qat.keras")   # a plain Keras model anyone can load
    assert tuned.count_params() > 0 and (out / "small_cnn.qat-ranges.json").exists()


@pytest.mark.slow
def test_qat_never_leaves_the_artifact_worse_than_its_ptq_start(cli, tmp_path, trained_small):
    """QAT that wrecks the model (a learning rate 10,000 times too large) ends further from the float model than
    the PTQ it started from: the artifacts then carry PTQ's parameters — as close to the float model on the
    evaluation data as `quantize --method ptq` with the same settings (which folds BatchNorm first, so the bytes
    differ) — and the report and the console say so."""
    t = tmp_path / "wild.toml"
    t.write_text('name = "t"\ndescription = "test"\nformats = ["tflite"]\nprecisions = ["int8"]\n'
                 '[quantize]\ncalibration_samples = 200\nlayer_error_samples = 0\n'
                 '[quantize.ptq]\nengine = "edgeprep"\nadaround_iterations = 20\nsamples = 64\n'
                 '[quantize.qat]\nsteps = 6\nlearning_rate = 0.5\n[verify]\nsamples = 300\n')
    qat = cli("quantize", trained_small, "--method", "qat", "--labels", "--data", MANIFEST, "--target", t,
              "--out", tmp_path / "qat")
    assert qat.returncode == 0, qat.stderr[-2000:]
    rep = json.loads((tmp_path / "qat" / "report.json").read_text())
    versus = rep["quantize"]["qat"]["versus_ptq"]
    assert versus["kept"] == "ptq" and versus["qat"]["sqnr_db"] < versus["ptq"]["sqnr_db"], versus
    assert any("the artifacts carry PTQ's parameters" in n for n in rep["quantize"]["notes"])
    [a] = rep["artifacts"]
    assert "QAT did not improve" in a["quantization"]["weights"]
    ptq = cli("quantize", trained_small, "--method", "ptq", "--data", MANIFEST, "--target", t,
              "--out", tmp_path / "ptq")
    assert ptq.returncode == 0, ptq.stderr[-2000:]
    [b] = json.loads((tmp_path / "ptq" / "report.json").read_text())["artifacts"]
    assert a["metrics"]["sqnr_db"] > b["metrics"]["sqnr_db"] - 1.5, (a["metrics"], b["metrics"])
    assert a["metrics"]["agreement"] > b["metrics"]["agreement"] - 0.02, (a["metrics"], b["metrics"])


def _target(tmp_path, extra=""):
    t = tmp_path / "t.toml"
    t.write_text('name = "t"\ndescription = "test"\nformats = ["tflite", "openvino"]\nprecisions = ["int8"]\n'
                 '[quantize]\ncalibration_samples = 200\nlayer_error_samples = 32\n'
                 '[quantize.qat]\nfreeze_bn_steps = 5\nlearning_rate = 1e-4\n'
                 '[gates.int8]\nmax_accuracy_drop = 3.0\n[verify]\nsamples = 300\n' + extra)
    return t


def test_qat_distills_without_labels_and_bad_input(tmp_path, trained_small, calib_npz, eval_npz, capsys,
                                                   monkeypatch):
    from io import StringIO

    from rich.console import Console

    from edgeprep import progress
    from edgeprep.cli import main

    np.savez(tmp_path / "unlabelled.npz", x=calib_npz["x"][:150])
    np.savez(tmp_path / "eval.npz", x=eval_npz["x"][:300], y=eval_npz["y"][:300])
    (tmp_path / "d.toml").write_text('calibration = "unlabelled.npz"\nevaluation = "eval.npz"\n'
                                     '[preprocess]\nscale = 0.00392156862745098\n')
    assert main(["-q", "quantize", str(trained_small), "--method", "qat", "--labels", "--data",
                 str(tmp_path / "d.toml")]) == 2
    err = capsys.readouterr().err
    assert "has no labels" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    shown = StringIO()
    monkeypatch.setattr(progress, "console", Console(file=shown, width=200))
    out = tmp_path / "o"
    t = tmp_path / "t.toml"
    t.write_text('name = "t"\ndescription = "x"\nformats = ["tflite"]\nprecisions = ["int8"]\n'
                 '[quantize]\nlayer_error_samples = 16\n')
    rc = main(["quantize", str(trained_small), "--method", "qat", "--steps", "6", "--data", str(tmp_path / "d.toml"),
               "--target", str(t), "--out", str(out), "--calib-samples", "40"])
    assert rc == 0, capsys.readouterr().err[-2000:]
    assert "only 40 calibration samples" in shown.getvalue()
    rep = json.loads((out / "report.json").read_text())
    assert rep["quantize"]["qat"]["objective"].startswith("distillation")
    assert rep["quantize"]["calibration_samples"] == 40 and "only 40" in rep["quantize"]["notes"][0]
    assert rep["artifacts"][0]["metrics"]["agreement"] >= 0.85


_MIRRORED = r"""
import json, sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np
from edgeprep.config.quantize import QATConfig
from edgeprep.data import load_data
from edgeprep.qat import train as T
from edgeprep.qat.ranges import activation_ranges
import keras
path, manifest = sys.argv[1], sys.argv[2]
data = load_data(manifest)
m = keras.models.load_model(path)
r = activation_ranges(m, data.calibration, 128)
cfg = QATConfig(steps=4, freeze_bn_steps=3, batch_size=32, learning_rate=1e-3)
one = T.train(path, data.calibration, cfg, r, tf.distribute.OneDeviceStrategy("/cpu:0"), False, samples=128)
two = T.train(path, data.calibration, cfg, r, T.make_strategy("mirrored", 2), False, samples=128)
diff = max(float(np.max(np.abs(a - b))) for a, b in zip(one.weights, two.weights))
# relative to each state tensor's scale (activation ranges, BN moving variances): all-reduce sums in another order
sdiff = max(float(np.max(np.abs(one.state[k] - two.state[k])) / max(1.0, float(np.max(np.abs(one.state[k])))))
            for k in one.state)
worst = max(one.state, key=lambda k: float(np.max(np.abs(one.state[k] - two.state[k]))))
print(json.dumps({"diff": diff, "state_diff": sdiff, "worst": [worst, float(np.max(np.abs(one.state[worst])))],
                  "replicas": two.replicas, "div": two.bn_divergence,
                  "spread": two.moving_stats_replica_spread}))
"""


@pytest.mark.slow
def test_mirrored_syncbn_matches_one_device(tmp_path, trained_small):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run([sys.executable, "-c", _MIRRORED, str(trained_small), str(MANIFEST)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["replicas"] == 2 and res["spread"] == 0.0
    # synchronized BN: two replicas on half batches compute what one device computes on the whole batch (to
    # float32 round-off of the all-reduce: state compared relative to its scale)
    assert res["diff"] < 1e-4 and res["state_diff"] < 1e-4, res
    assert all(v["max_mean_shift"] > 0 for v in res["div"].values())   # local statistics really differ


@pytest.mark.slow
def test_multiworker_two_processes(tmp_path, trained_small):
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    workers = [f"127.0.0.1:{p}" for p in ports]
    t = tmp_path / "t.toml"
    t.write_text('name = "t"\ndescription = "x"\nformats = ["tflite"]\nprecisions = ["int8"]\n'
                 '[quantize]\ncalibration_samples = 128\nlayer_error_samples = 0\n'
                 '[quantize.qat]\nfreeze_bn_steps = 2\n[verify]\nsamples = 100\n')
    procs = []
    for i in range(2):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3",
               "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "edgeprep", "-q", "quantize", str(trained_small), "--method", "qat", "--steps",
             "4", "--data", str(MANIFEST), "--target", str(t), "--out", str(tmp_path / f"w{i}")], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path))
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=300))
        finally:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
    rep = json.loads((tmp_path / "w0" / "report.json").read_text())["quantize"]["qat"]
    assert rep["workers"] == 2 and rep["replicas"] == 2 and rep["strategy"] == "MultiWorkerMirroredStrategy"
    assert not (tmp_path / "w1").exists()                       # only the chief writes
    worker_sum = float(outs[1][0].split("checksum")[-1].strip())
    assert abs(worker_sum - rep["weights_checksum"]) < 1e-3     # both workers ended with the same weights
