"""QAT claims of issue 13, on a small real model with squeeze-excite blocks trained on Fashion-MNIST.

The model has what MobileNetV3Small has around its SE blocks: a Rescaling in front (``include_preprocessing``),
hard-swish, and SE blocks GAP -> 1x1 conv -> ReLU -> 1x1 conv -> hard-sigmoid ``ReLU6(x + 3) / 6`` (keras.ops, not
layers) -> Multiply. On MobileNetV3Small the QAT TFLite had the Rescaling's MUL and ADD in float (and the run passed),
and the per-layer error paired the float twin's CONV_2D+RELU6 (the ``+ 3`` folded in its bias) with the int8
graph's bare CONV_2D (the ``+ 3`` and ReLU6 a separate ADD, behind a quantizer): about 0 dB at every SE block.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_DIR, MANIFEST, ROOT

SE_BLOCKS = ("se1", "se2")


def _se(x, filters: int, squeeze: int, prefix: str):
    from keras import layers

    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{prefix}_pool")(x)
    s = layers.Conv2D(squeeze, 1, name=f"{prefix}_reduce")(s)
    s = layers.ReLU(name=f"{prefix}_relu")(s)
    s = layers.Conv2D(filters, 1, name=f"{prefix}_expand")(s)
    s = layers.ReLU(6.0, name=f"{prefix}_relu6")(s + 3.0) * (1.0 / 6.0)    # hard-sigmoid, as in MobileNetV3
    return layers.Multiply(name=f"{prefix}_mul")([x, s])


def se_net():
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28, 1), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inp)      # raw 0..255 pixels in
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem")(x)
    x = layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = layers.Activation("hard_swish", name="stem_hswish")(x)
    x = _se(x, 8, 4, "se1")
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="conv")(x)
    x = layers.BatchNormalization(momentum=0.9, name="conv_bn")(x)
    x = layers.ReLU(name="conv_relu")(x)
    x = _se(x, 16, 8, "se2")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, layers.Dense(10, activation="softmax", name="head")(x), name="se_net")


@pytest.fixture(scope="module")
def se_setup(tmp_path_factory, calib_npz, eval_npz):
    """The SE model trained two epochs on the calibration images, labelled data (raw pixels: the model rescales),
    and a small int8 TFLite target (4 QAT steps)."""
    import keras

    root = tmp_path_factory.mktemp("se")
    model = se_net()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(calib_npz["x"].astype("float32"), calib_npz["y"], epochs=2, batch_size=32, verbose=0)
    model.save(root / "se_net.keras")
    np.savez(root / "calib.npz", x=calib_npz["x"][:256], y=calib_npz["y"][:256])
    np.savez(root / "eval.npz", x=eval_npz["x"][:200], y=eval_npz["y"][:200])
    (root / "data.toml").write_text('calibration = "calib.npz"\nevaluation = "eval.npz"\n')
    (root / "target.toml").write_text(
        'name = "t"\ndescription = "int8 TFLite"\nformats = ["tflite"]\nprecisions = ["int8"]\nthreads = 2\n'
        '[quantize]\ncalibration_samples = 256\nlayer_error_samples = 32\n'
        '[quantize.qat]\nsteps = 4\nbatch_size = 32\nfreeze_bn_steps = 2\nlearning_rate = 1e-4\n'
        '[gates.int8]\nmin_agreement = 0.5\n[verify]\nsamples = 200\n')
    return root


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess, in the environment a user's shell gives it (no --debug from it)."""
    full = {k: v for k, v in os.environ.items() if k != "EDGEPREP_DEBUG"}
    return subprocess.run([sys.executable, "-m", "edgeprep", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**full, **(env or {})})


# TensorFlow's import-time and runtime C++ logging (absl), as it reached the terminal in issue 13
LEAKS = ("absl::InitializeLog", "oneDNN", "cpu_feature_guard", "I0000 ", "W0000 ", "E0000 ")
# a shell that turned TensorFlow's logging on: edgeprep must still keep it off the terminal without --debug
LOUD = {"TF_CPP_MIN_LOG_LEVEL": "0"}


def _quantize(setup: Path, method: str, *extra: str) -> list[str]:
    return ["quantize", str(setup / "se_net.keras"), "--method", method, "--data", str(setup / "data.toml"),
            "--target", str(setup / "target.toml"), "--out", str(setup / f"run-{method}"), *extra]


def _se_rows(layers: list[dict]) -> dict[str, dict]:
    """The per-layer rows of the SE blocks' hard-sigmoid ReLU6, by block."""
    return {b: r for r in layers for b in SE_BLOCKS if r["name"].startswith(f"{b}_relu6")}


def _check_layer_report(art: dict, run: Path, method: str) -> None:
    from edgeprep.backends.tflite import layer_error as le

    lerr = art["layer_errors"]
    assert lerr["status"] == "measured", (method, lerr)
    se = _se_rows(lerr["layers"])
    # the hard-sigmoid is one CONV_2D+RELU6 with the + 3 in its bias, as in the float twin; measured, not ~0 dB
    assert set(se) == set(SE_BLOCKS), (method, [r["name"] for r in lerr["layers"]])
    for block, row in se.items():
        assert row["op"] == "CONV_2D" and row["sqnr_db"] >= 25.0, (method, block, row)
    # every pair compares the same tensor: the int8 op at the row's position writes the tensor of the float twin's
    # op of that row (both graphs are named by the Keras layers; the graph output is named by the converter)
    graph = le._TFLiteGraph(run / art["path"])
    names = [(r["name"], le.display_name(graph.details[graph.ops[r["position"]][1]]["name"])) for r in lerr["layers"]]
    assert all(a == b for a, b in names if "StatefulPartitionedCall" not in a), (method, names)
    assert min(r["sqnr_db"] for r in lerr["layers"]) >= 15.0, (method, lerr["layers"][:3])


def test_se_model_qat_and_ptq_per_layer_report_all_int8_and_quiet_toolchains(se_setup):
    """QAT (the real CLI in a subprocess, in a shell with TensorFlow's logging on) and PTQ (in-process) of the SE
    model: per-layer rows of both paired with the same tensors and the SE layers measured; the QAT TFLite all int8
    and its ``all_int8`` check passing; no toolchain log line on the terminal."""
    from edgeprep.cli import main
    from edgeprep.qat.checks import AllInt8
    from edgeprep.stages.convert import open_artifact

    qat = _cli(*_quantize(se_setup, "qat"), env=LOUD)
    assert qat.returncode == 0, qat.stderr[-3000:]
    leaked = [ln for ln in qat.stderr.splitlines() if any(m in ln for m in LEAKS)]
    assert not leaked, leaked
    assert main(["-q", *_quantize(se_setup, "ptq")]) == 0
    reports = {m: json.loads((se_setup / f"run-{m}" / "report.json").read_text()) for m in ("qat", "ptq")}
    for method, rep in reports.items():
        _check_layer_report(rep["artifacts"][0], se_setup / f"run-{method}", method)

    art = reports["qat"]["artifacts"][0]
    # Rescaling (MUL, ADD), the SE's + 3, * 1/6 and Multiply: all int8; the hard-swish runs in float between its
    # int8 tensors ([tflite] float_hard_swish: XNNPACK has no int8 HARD_SWISH), listed as kept float on purpose
    assert art["inspection"]["float_ops"] == {"HARD_SWISH": 1}, art["inspection"]["float_ops"]
    assert art["quantization"]["kept_float"] == ["stem_hswish"] and art["quantization"]["float_hard_swish"] == 1
    plan = reports["qat"]["quantize"]["qat"]["plan"]
    assert plan["kept_float"] == []
    in_report = [c for c in art["verification"]["checks"] if c["name"] == "all_int8"]
    assert len(in_report) == 1 and in_report[0]["passed"] and in_report[0]["value"] == 0   # wired into quantize
    a = dataclasses.replace(open_artifact(se_setup / "run-qat" / art["path"]), precision="int8",
                            quantization=art["quantization"])
    (check,) = AllInt8(tuple(k["layer"] for k in plan["kept_float"]))(a, None, None)
    assert check["name"] == "all_int8" and check["passed"] and check["value"] == 0 and check["threshold"] == 0
    ptq = reports["ptq"]["artifacts"][0]
    assert AllInt8()(dataclasses.replace(a, quantization=ptq["quantization"]), None, None) == []   # QAT only


def _export(tmp_path: Path, model, name: str, keep=frozenset(), method: str = "qat"):
    """A QAT TFLite export of ``model`` (ranges from 32 calibration images, no training) as an Artifact."""
    from edgeprep.backends.tflite import qat as export
    from edgeprep.data import Dataset
    from edgeprep.qat.model import QATModel
    from edgeprep.qat.ranges import activation_ranges
    from edgeprep.stages.convert import open_artifact

    x = np.load(DATA_DIR / "fashion_mnist_calib.npz")["x"][:32].astype(np.float32)
    ranges = activation_ranges(model, Dataset("calib", len(x), lambda i: x[i]), 32)
    qat = QATModel(model, ranges)
    path = tmp_path / f"{name}.int8.tflite"
    path.write_bytes(export.to_tflite(qat, (28, 28, 1), keep=frozenset(keep)))
    quant = {"method": method, **({"kept_float": sorted(keep)} if keep else {})}
    return qat, dataclasses.replace(open_artifact(path), precision="int8", quantization=quant)


def test_all_int8_fails_on_float_ops_not_kept_on_purpose(tmp_path):
    """A float op the QAT plan did not keep float fails ``all_int8`` (value = the number of such ops); ops of a layer
    kept float on purpose (keep-float, or the plan's kept_float when [tflite] float_fallback) are listed, accepted."""
    import keras
    from keras import layers

    from edgeprep.qat.checks import AllInt8

    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28, 1), name="image")
    x = layers.Rescaling(1 / 255.0, name="rescale")(inp)
    x = layers.Conv2D(4, 3, name="conv")(x)
    x = layers.Activation("elu", name="elu")(x)         # TFLite has no int8 ELU kernel
    x = layers.Conv2D(4, 3, name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inp, layers.Dense(3, activation="softmax", name="head")(x))

    qat, art = _export(tmp_path, model, "elu")
    check = AllInt8.from_plan(qat.steps)
    assert check.kept_float == ("elu",)                 # the plan lists it, with the reason
    (ok,) = check(art, None, None)
    assert ok["passed"] and ok["value"] == 0 and "ELU x1" in ok["detail"] and "elu" in ok["detail"], ok
    (refused,) = AllInt8(check.kept_float, float_fallback=False)(art, None, None)
    assert not refused["passed"] and refused["value"] == 1 and "float_fallback" in refused["detail"], refused
    (unplanned,) = AllInt8()(art, None, None)       # the same float ELU, unexplained: an export defect
    assert not unplanned["passed"] and unplanned["value"] == 1 and "ELU" in unplanned["detail"], unplanned

    # keep-float: conv2 and the op it feeds (GAP reads its float output) run in float, both accepted
    _, kept = _export(tmp_path, model, "kept", keep={"conv2"})
    (k,) = AllInt8(check.kept_float)(kept, None, None)
    assert k["passed"] and "CONV_2D" in k["detail"] and "conv2" in k["detail"], k
    no_record = dataclasses.replace(kept, quantization={"method": "qat"})   # the same file, keep not recorded
    (bad,) = AllInt8(check.kept_float)(no_record, None, None)
    assert not bad["passed"] and bad["value"] >= 2 and "CONV_2D" in bad["detail"], bad


def test_qat_plan_quantizes_every_tensor_of_rescaling_average_and_activations(tmp_path):
    """The tensors inside one Keras layer get quantizers: Rescaling's x * scale, Average's running sums, a conv's
    pre-activation output under swish/hard-swish/leaky ReLU; and MobileNetV3's x + 3 folds into the conv's bias."""
    import keras
    from keras import layers

    from edgeprep.backends.tflite.graph import float_ops
    from edgeprep.qat.graph import plan
    from edgeprep.qat.model import inner_points

    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28, 1), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inp)
    a = layers.Conv2D(4, 3, activation="swish", name="a")(x)
    b = layers.Conv2D(4, 3, activation="hard_swish", name="b")(x)
    c = layers.Conv2D(4, 3, activation="leaky_relu", name="c")(x)
    x = layers.Average(name="avg")([a, b, c])
    x = layers.Conv2D(4, 1, name="d")(x)
    x = layers.ReLU(6.0, name="d_relu6")(x + 3.0) * (1.0 / 6.0)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inp, layers.Dense(3, activation="softmax", name="head")(x))

    steps = {s.name: s for s in plan(model)}
    assert inner_points(steps["rescale"]) == ["rescale/scale"]
    assert inner_points(steps["avg"]) == ["avg/sum1", "avg/sum2"]
    assert [inner_points(steps[n]) for n in "abc"] == [["a/preact"], ["b/preact"], ["c/preact"]]
    bias = [s for s in steps.values() if s.kind == "bias"]
    assert len(bias) == 1 and not steps["d"].quantize_output and not bias[0].quantize_output
    _, art = _export(tmp_path, model, "inner")
    assert float_ops(art.path) == []


def test_debug_shows_toolchain_output_of_the_qat_child(tmp_path):
    """--debug: the training child's output reaches the terminal, with the environment's log levels."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(4, 3, strides=2, activation="relu", name="conv")(inp)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    keras.Model(inp, layers.Dense(10, activation="softmax", name="head")(x)).save(tmp_path / "m.keras")
    (tmp_path / "t.toml").write_text(
        'name = "t"\ndescription = "int8 TFLite"\nformats = ["tflite"]\nprecisions = ["int8"]\n'
        '[quantize]\ncalibration_samples = 32\nlayer_error_samples = 0\n[quantize.qat]\nsteps = 1\n'
        'batch_size = 16\nfreeze_bn_steps = 0\n[verify]\nsamples = 32\n')
    debug = _cli("--debug", "quantize", str(tmp_path / "m.keras"), "--method", "qat", "--data", str(MANIFEST),
                 "--target", str(tmp_path / "t.toml"), "--out", str(tmp_path / "run"), env=LOUD)
    assert debug.returncode == 0, debug.stderr[-3000:]
    assert any(m in debug.stderr for m in LEAKS), debug.stderr[-3000:]
