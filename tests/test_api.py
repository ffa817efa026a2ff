"""The Python API (``edgeprep.run``, ``edgeprep.convert``): keras.Model objects or paths in, typed values out, the
CLI's rules and history record, edgeprep's own errors for bad arguments, and a cheap ``import edgeprep``.

Real models and toolchains throughout: the session's trained small CNN (conftest ``trained_small``) loaded as a
keras.Model object, converted by TensorFlow and run by LiteRT.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import typing
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_DIR, MANIFEST, ROOT

import edgeprep
from edgeprep.errors import ConfigError, EdgeprepError, InputError, RuntimeUnavailable

# One format, two precisions, no benchmark: what the API adds is tested, not the pipeline's every stage again.
FAST_TARGET = """\
name = "api-test"
description = "tflite fp32 + int8, no benchmark: the API tests"
formats = ["tflite"]
precisions = ["fp32", "int8"]
runtime = "litert"
threads = 1
[quantize]
calibration_samples = 200
[quantize.ptq]
engine = "vendor"
[tflite]
int8_io = "float32"
[verify]
samples = 500
"""
TOOLCHAINS = ("tensorflow", "keras", "ai_edge_litert", "openvino", "nncf", "coremltools", "onnx", "onnxruntime")


@pytest.fixture(scope="module")
def model(trained_small):
    """The trained small CNN as a keras.Model object, as a training script holds it."""
    import keras

    return keras.models.load_model(trained_small, compile=False)


@pytest.fixture
def target_file(tmp_path) -> Path:
    path = tmp_path / "api-test.toml"
    path.write_text(FAST_TARGET)
    return path


def _model_dirs() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("edgeprep-model-")}


def test_import_is_cheap_and_loads_no_toolchain():
    code = ("import sys, time, json; t = time.perf_counter(); import edgeprep; edgeprep.run; edgeprep.convert; "
            f"print(json.dumps([time.perf_counter() - t, [m for m in {TOOLCHAINS!r} if m in sys.modules]]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    seconds, loaded = json.loads(done.stdout)
    assert loaded == [], f"import edgeprep (and its API) imported {loaded}"
    assert seconds < 3.0, f"import edgeprep and its API took {seconds:.2f} s"


def test_api_is_typed():
    from edgeprep.api import RunOutcome
    from edgeprep.artifact import Artifact
    from edgeprep.targets import TargetProfile

    run_hints, convert_hints = typing.get_type_hints(edgeprep.run), typing.get_type_hints(edgeprep.convert)
    assert run_hints["return"] is RunOutcome and convert_hints["return"] is Artifact
    assert TargetProfile in typing.get_args(run_hints["target"])
    assert set(typing.get_args(convert_hints["to"])) == {"tflite", "openvino", "coreml"}
    assert set(typing.get_args(convert_hints["precision"])) == {"fp32", "fp16", "int8"}
    assert typing.get_type_hints(RunOutcome)["artifacts"] == dict[str, Path]
    assert (Path(edgeprep.__file__).parent / "py.typed").is_file()
    assert {"run", "convert", "RunOutcome"} <= set(dir(edgeprep)) and {"run", "convert"} <= set(edgeprep.__all__)


def test_run_on_a_keras_model_object(model, target_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)              # nothing may land in the working directory but the run directory
    history = tmp_path / "history.sqlite"
    weights = [w.copy() for w in model.get_weights()]
    before = _model_dirs()

    result = edgeprep.run(model, target=target_file, data=MANIFEST, history=history)

    assert isinstance(result, edgeprep.RunOutcome)
    assert result.out_dir == (tmp_path / "runs" / "small_cnn-api-test").resolve()      # the CLI's default
    assert result.report_path.is_file() and json.loads(result.report_path.read_text()) == result.report
    assert set(result.artifacts) == {"tflite-fp32", "tflite-int8"}
    for label, path in result.artifacts.items():
        assert path.is_file() and path.parent == result.out_dir and path.read_bytes()[4:8] == b"TFL3", label
    assert result.passed and result.status in ("passed", "measured"), result.report["summary"]
    entries = {f"{a['format']}-{a['precision']}": a for a in result.report["artifacts"]}
    assert entries["tflite-int8"]["metrics"]["agreement"] >= 0.97
    assert entries["tflite-fp32"]["metrics"]["agreement"] == 1.0
    # the object has no file: the report names it, and its temporary .keras is gone
    assert result.report["model"]["path"] == "keras.Model 'small_cnn'"
    assert result.report["model"]["parameters"] == model.count_params()
    assert _model_dirs() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api-test.toml", "history.sqlite", "runs"]
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights())), "the caller's model changed"

    # recorded as `edgeprep run` records it
    assert result.history == history
    con = sqlite3.connect(history)
    rows = con.execute("SELECT command, target, model, model_sha256, status, report_path FROM runs").fetchall()
    names = sorted(r[0] for r in con.execute("SELECT name FROM artifacts"))
    con.close()
    assert rows == [("run", "api-test", "keras.Model 'small_cnn'", result.report["model"]["sha256"],
                     result.status, str(result.report_path))]
    assert names == sorted(p.name for p in result.artifacts.values())


def test_run_takes_a_path_and_a_profile_object(trained_small, target_file, tmp_path):
    from edgeprep.targets import load_target

    profile = load_target(target_file)
    result = edgeprep.run(str(trained_small), target=profile, data=DATA_DIR / "fashion_mnist_eval.npz",
                          out=tmp_path / "out", record=False, split=0.3,
                          preprocess={"scale": 1 / 255})
    assert result.out_dir == (tmp_path / "out").resolve() and result.history is None
    assert result.report["model"]["path"] == str(trained_small)
    assert set(result.artifacts) == {"tflite-fp32", "tflite-int8"}


def test_convert_a_keras_model_object_to_tflite(model, tmp_path, cli):
    from ai_edge_litert.interpreter import Interpreter

    before = _model_dirs()
    fp32 = edgeprep.convert(model, to="tflite", precision="fp32", out=tmp_path / "m")
    assert isinstance(fp32, edgeprep.Artifact)
    assert fp32.path == (tmp_path / "m.tflite").resolve() and fp32.path.read_bytes()[4:8] == b"TFL3"
    assert fp32.quantization["weights"] == "fp32" and fp32.size_bytes == fp32.path.stat().st_size

    calib = DATA_DIR / "fashion_mnist_calib.npz"
    int8 = edgeprep.convert(model, to="tflite", precision="int8", data=calib, out=f"{tmp_path / 'int8'}/",
                            preprocess={"scale": 1 / 255}, calibration_samples=100)
    assert int8.path == (tmp_path / "int8" / "small_cnn.int8.tflite").resolve()
    assert int8.quantization["weights"] == "int8 per-channel" and int8.quantization["calibration_samples"] == 100
    assert int8.size_bytes < fp32.size_bytes and int8.inspection["all_int8"], int8.inspection
    assert _model_dirs() == before

    # the int8 artifact computes what the model computes (LiteRT against Keras, on real images)
    with np.load(DATA_DIR / "fashion_mnist_eval.npz") as z:
        x = z["x"][:200].astype(np.float32) / 255.0
    it = Interpreter(model_path=str(int8.path))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    got = []
    (in_scale, in_zero), (out_scale, out_zero) = inp["quantization"], out["quantization"]
    for sample in x:
        if inp["dtype"] != np.float32:           # int8 I/O: quantize the input, dequantize the output
            sample = np.clip(np.round(sample / in_scale + in_zero), -128, 127).astype(inp["dtype"])
        it.set_tensor(inp["index"], sample[None])
        it.invoke()
        y = it.get_tensor(out["index"])[0]
        got.append((y.astype(np.float32) - out_zero) * out_scale if out["dtype"] != np.float32 else y)
    agreement = float(np.mean(np.argmax(got, 1) == np.argmax(model.predict(x, verbose=0), 1)))
    assert agreement >= 0.95, agreement

    # the same bytes as `edgeprep convert` from the saved model file with the same options
    model.save(tmp_path / "small_cnn.keras")
    done = cli("convert", tmp_path / "small_cnn.keras", "--to", "tflite", "--precision", "int8", "--data", calib,
               "--scale", 1 / 255, "--calib-samples", 100, "--out", tmp_path / "cli.tflite")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cli.tflite").read_bytes() == int8.path.read_bytes()


def test_quantize_a_keras_model_object(model, target_file, tmp_path):
    """``edgeprep.quantize``: the int8 artifact of the target's format, verified and ranked by layer, in a run
    directory whose report says the command was quantize; the int8 bytes are ``edgeprep.convert``'s with the same
    target and data (one PTQ whichever entry point made it)."""
    before = _model_dirs()
    q = edgeprep.quantize(model, target_file, MANIFEST, out=tmp_path / "q")
    assert isinstance(q, edgeprep.RunOutcome) and q.out_dir == (tmp_path / "q").resolve()
    assert q.report["command"] == "quantize" and set(q.artifacts) == {"tflite-int8"}
    [a] = q.report["artifacts"]
    assert a["layer_errors"]["status"] == "measured" and a["layer_errors"]["layers"], a["layer_errors"]
    assert q.passed == (q.status in ("passed", "measured", "verified")) and q.history is None
    art = edgeprep.convert(model, to="tflite", precision="int8", data=MANIFEST, target=target_file,
                           out=tmp_path / "c.tflite")
    assert art.path.read_bytes() == q.artifacts["tflite-int8"].read_bytes()
    assert _model_dirs() == before


def test_verify_and_bench_as_functions_give_the_commands_reports(model, trained_small, target_file, tmp_path, cli):
    """``edgeprep.verify`` on a keras.Model object and its int8 artifact gives the metrics ``edgeprep verify`` gives
    for the saved model (same evaluation, same runtime: equal figures); ``edgeprep.bench`` benchmarks it in fresh
    processes into its report directory, with accuracy from ``data`` and agreement from ``model``, recorded in the
    history file it is given."""
    art = edgeprep.convert(model, to="tflite", precision="int8", data=MANIFEST, target=target_file,
                           out=tmp_path / "m.int8.tflite")
    before = _model_dirs()
    v = edgeprep.verify(model, art.path, MANIFEST, target="litert-cpu", samples=300)     # its [gates.int8]
    assert isinstance(v, edgeprep.VerifyOutcome) and v.report_path is None and v.report["command"] == "verify"
    m = v.metrics["m.int8.tflite"]
    assert m["samples"] == 300 and m["agreement"] >= 0.97 and m["sqnr_db"] > 20, m
    assert v.passed and v.status == "passed" and v.report["summary"]["verified"] == 1, v.report["summary"]
    assert _model_dirs() == before
    r = cli("verify", trained_small, art.path, "-d", MANIFEST, "-t", "litert-cpu", "--samples", "300",
            "-o", tmp_path / "cli-verify")
    assert r.returncode == 0, r.stdout + r.stderr
    (entry,) = json.loads((tmp_path / "cli-verify" / "report.json").read_text())["artifacts"]
    assert {k: entry["metrics"][k] for k in ("accuracy", "agreement", "sqnr_db")} == \
        {k: m[k] for k in ("accuracy", "agreement", "sqnr_db")}
    written = edgeprep.verify(trained_small, [art.path], MANIFEST, samples=100, out=tmp_path / "api-verify")
    assert written.report_path == tmp_path / "api-verify" / "report.json" and written.report_path.is_file()
    assert written.status == "measured"            # no target: no thresholds to verify against

    history = tmp_path / "history.sqlite"
    b = edgeprep.bench([art.path], target_file, data=MANIFEST, model=trained_small, runs=20, repeats=2,
                       samples=200, out=tmp_path / "bench", history=history)
    assert isinstance(b, edgeprep.RunOutcome) and b.out_dir == (tmp_path / "bench").resolve()
    (entry,) = b.report["artifacts"]
    bench = entry["bench"]
    assert bench["status"] == "ok" and len(bench["process_p50_ms"]) == 2 and bench["latency_ms"]["p50"] > 0
    assert entry["metrics"]["agreement"] >= 0.97 and b.history == history and b.report_path.is_file()
    con = sqlite3.connect(history)
    assert [r[0] for r in con.execute("SELECT command FROM runs")] == ["bench"]
    con.close()


@pytest.mark.parametrize("call, error, words", [
    (lambda m, t: edgeprep.run(42, target=t), InputError, "model= must be a keras.Model or a path"),
    (lambda m, t: edgeprep.run(m, target=3.5), InputError, "target= must be a profile name"),
    (lambda m, t: edgeprep.run(m, target="no-such-profile"), InputError, "no-such-profile"),
    (lambda m, t: edgeprep.run(m, target=t, data=np.zeros((4, 28, 28))), InputError, "numpy.savez"),
    (lambda m, t: edgeprep.run(m, target=t, data=MANIFEST, split=1.5), InputError, "split= must be a fraction"),
    (lambda m, t: edgeprep.run(m, target=t, preprocess={"sclae": 0.5}), ConfigError, "sclae"),
    (lambda m, t: edgeprep.run(m, target=t, preprocess=[("scale", 1)]), InputError, "preprocess= must be a mapping"),
    (lambda m, t: edgeprep.run(m, target=t, calibrate="yes"), InputError, "calibrate= must be True, False or None"),
    (lambda m, t: edgeprep.convert(m, to="onnx"), InputError, "unknown format 'onnx'"),
    (lambda m, t: edgeprep.convert(m, to="tflite", precision="int4"), InputError, "unknown precision 'int4'"),
    (lambda m, t: edgeprep.convert(m, to="tflite", precision="int8"), InputError, "needs calibration data"),
    (lambda m, t: edgeprep.convert(m, to="tflite", calibration_samples=0), InputError, "calibration_samples"),
    (lambda m, t: edgeprep.convert("missing.keras", to="tflite"), InputError, "model not found: missing.keras"),
    (lambda m, t: edgeprep.quantize(m, t, MANIFEST, method="int4"), InputError, "unknown method 'int4'"),
    (lambda m, t: edgeprep.quantize(m, t, MANIFEST, keep_float=3), InputError, "keep_float= must be"),
    (lambda m, t: edgeprep.quantize(m, t, None), InputError, "quantize needs data="),
    (lambda m, t: edgeprep.quantize(m, t, MANIFEST, labels=True, distill=True), InputError, "exclude each other"),
    (lambda m, t: edgeprep.quantize(m, t, MANIFEST, steps=0), InputError, "steps must be a positive integer"),
    (lambda m, t: edgeprep.verify(m, [], MANIFEST), InputError, "artifacts= must be a path or a non-empty list"),
    (lambda m, t: edgeprep.verify(m, "m.tflite", None), InputError, "verify needs data="),
    (lambda m, t: edgeprep.bench(["m.tflite"], t, runs=0), InputError, "runs must be a positive integer"),
    (lambda m, t: edgeprep.bench(["m.tflite"], t, model="m.keras"), InputError, "--model needs --data"),
], ids=["model-type", "target-type", "target-name", "data-array", "split", "preprocess-key", "preprocess-type",
        "calibrate", "format", "precision", "int8-without-data", "calibration-samples", "model-missing",
        "quantize-method", "quantize-keep-float", "quantize-no-data", "quantize-labels-distill", "quantize-steps",
        "verify-no-artifacts", "verify-no-data", "bench-runs", "bench-model-without-data"])
def test_bad_arguments_raise_edgeprep_errors(model, target_file, tmp_path, monkeypatch, call, error, words):
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(error) as raised:
        call(model, target_file)
    assert words in str(raised.value), str(raised.value)
    assert raised.value.hint, "every refusal says what to do"
    assert sorted(tmp_path.iterdir()) == before, "a refused call wrote something"


def test_load_model_takes_a_keras_model_and_refuses_other_objects(model):
    from edgeprep.models import load_model

    handle = load_model(model)
    assert handle.name == "small_cnn" and handle.describe()["path"] == "keras.Model 'small_cnn'"
    assert handle.obj is not model and handle.obj.count_params() == model.count_params()
    with pytest.raises(InputError, match="got a builtins.dict"):
        load_model({"model": "small_cnn.keras"})


def test_missing_toolchain_names_the_extra(monkeypatch):
    """The message a missing toolchain gives (the real absence is tested on an installed wheel in
    tests/test_packaging.py); here the requirement table points the openvino fields at a module that does not
    exist, which is what an environment without OpenVINO looks like to edgeprep."""
    from edgeprep import backends, toolchain

    monkeypatch.setitem(toolchain.REQUIREMENTS, "openvino", ("edgeprep_absent_openvino", "OpenVINO", "openvino"))
    monkeypatch.setitem(toolchain.REQUIREMENTS, "nncf", ("edgeprep_absent_nncf", "NNCF", "openvino"))
    with pytest.raises(RuntimeUnavailable) as raised:
        backends.require(["tflite", "openvino"])
    assert str(raised.value) == "the openvino format needs OpenVINO and NNCF: pip install 'edgeprep[openvino]'"
    assert raised.value.exit_code == 2 and isinstance(raised.value, EdgeprepError)
    backends.require(["tflite", "coreml"])           # installed here: no error
    monkeypatch.setitem(toolchain.REQUIREMENTS, "tensorflow", ("edgeprep_absent_tf", "TensorFlow", "tflite"))
    with pytest.raises(RuntimeUnavailable, match=r"needs TensorFlow: pip install 'edgeprep\[tflite\]', or a "
                                                 r"TensorFlow of your own: pip install tensorflow-cpu"):
        toolchain.require_tensorflow("loading a Keras model")


def test_extras_install_what_the_requirement_table_names():
    """pyproject's extras and edgeprep.toolchain.REQUIREMENTS agree: the extra an error names installs that
    toolchain; [all] is every format, [test] includes [all]; the base install has no TensorFlow and no format's
    toolchain."""
    import tomllib
    from importlib import metadata

    from edgeprep.toolchain import REQUIREMENTS

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    dist_of = {m: d for m, ds in metadata.packages_distributions().items() for d in ds}

    def names(reqs):
        return {r.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()
                for r in reqs}
    for module, _label, extra in REQUIREMENTS.values():
        assert dist_of[module].lower().replace("_", "-") in names(extras[extra]), (module, extra)
    assert extras["all"] == ["edgeprep[tflite,openvino,coreml,onnx]"] and "edgeprep[all]" in extras["test"]
    base = names(project["dependencies"])
    assert not base & names(extras["tflite"] + extras["openvino"] + extras["coreml"] + extras["onnx"]), base
    assert "keras" in base and "numpy" in base
