"""Acceptance: `edgeprep run` on the committed example model for each shipped target, against real toolchains."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import pytest
from conftest import EXAMPLE_MODEL, MANIFEST, run_cli

from edgeprep._util import files_of, sha256_of
from edgeprep.pipelines.run import run
from edgeprep.report import load_report, validate
from edgeprep.targets import load_target

pytestmark = pytest.mark.slow

FORMAT = {"litert-cpu": "tflite", "openvino-cpu": "openvino", "apple-coreml": "coreml"}


def group(name: str):
    """The tests of one target's run share one xdist worker (``--dist loadgroup``): each run is made once, and the
    three runs proceed on different workers."""
    return pytest.mark.xdist_group(f"pipeline-{name}")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def litert_cli(root):
    """litert-cpu through the real CLI in a subprocess. The run the CLI test checks is the litert-cpu run the other
    tests read: one run, not an in-process run and a CLI run of the same model, target and data."""
    out = root / "litert-cpu"
    proc = run_cli("run", str(EXAMPLE_MODEL), "--target", "litert-cpu", "--data", str(MANIFEST), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, SimpleNamespace(report=load_report(out), out_dir=out)


@pytest.fixture(scope="module")
def litert_run(litert_cli):
    return litert_cli[1]


@pytest.fixture(scope="module")
def openvino_run(root):
    return run(EXAMPLE_MODEL, load_target("openvino-cpu"), MANIFEST, root / "openvino-cpu")


@pytest.fixture(scope="module")
def coreml_run(root):
    return run(EXAMPLE_MODEL, load_target("apple-coreml"), MANIFEST, root / "apple-coreml")


RUN_OF = {"litert-cpu": "litert_run", "openvino-cpu": "openvino_run", "apple-coreml": "coreml_run"}


def by_precision(report, fmt):
    return {a["precision"]: a for a in report["artifacts"] if a["format"] == fmt}


@pytest.mark.parametrize("name", [pytest.param(n, marks=group(n)) for n in FORMAT])
def test_all_three_formats_are_produced_and_described(request, name):
    result = request.getfixturevalue(RUN_OF[name])
    report = result.report
    validate(report)
    assert load_report(result.out_dir)["artifacts"] == report["artifacts"]
    assert (result.out_dir / "summary.md").read_text().startswith("# edgeprep report")
    assert load_target(result.out_dir / "target.toml") == load_target(name)
    for a in report["artifacts"]:
        path = result.out_dir / a["path"]
        files = [f for p in [path] + ([path.with_suffix(".bin")] if a["format"] == "openvino" else [])
                 for f in files_of(p)]
        assert sha256_of(files, root=result.out_dir) == a["sha256"]
        assert sum(f.stat().st_size for f in files) == a["size_bytes"]
    assert not [p for p in result.out_dir.iterdir() if p.name.startswith(".")]
    # each target makes its own format only: together, the three formats
    assert {a["format"] for a in report["artifacts"]} == {FORMAT[name]}


@group("litert-cpu")
def test_report_records_model_data_and_toolchain(litert_run):
    report = litert_run.report
    assert report["model"]["sha256"] == hashlib.sha256(EXAMPLE_MODEL.read_bytes()).hexdigest()
    assert report["data"]["evaluation"]["samples"] == 2000 and report["data"]["calibration"]["samples"] == 1000
    tc = report["toolchain"]
    for key in ("python", "tensorflow", "keras", "litert", "coremltools", "openvino", "nncf", "numpy", "os"):
        assert tc[key], key
    assert tc["cpu"]["model"] and tc["cpu"]["arch"]


@group("litert-cpu")
def test_litert_int8_meets_the_size_and_accuracy_goals(litert_run):
    report = litert_run.report
    arts = by_precision(report, "tflite")
    ratio = arts["int8"]["size_bytes"] / arts["fp32"]["size_bytes"]
    assert ratio <= 0.27, f"int8 is {ratio:.3f}x fp32"
    float_acc = report["reference"]["accuracy"]
    assert float_acc > 0.90
    assert float_acc - arts["int8"]["metrics"]["accuracy"] <= 0.010
    assert arts["fp32"]["metrics"]["agreement"] == 1.0 and arts["fp32"]["metrics"]["sqnr_db"] > 90
    assert arts["int8"]["metrics"]["agreement"] >= 0.97
    assert report["summary"]["status"] == "passed" and report["summary"]["verified"] == 3


@group("openvino-cpu")
def test_openvino_verifies_in_f32_and_int8_stays_close(openvino_run):
    report = openvino_run.report
    arts = by_precision(report, "openvino")
    for a in arts.values():
        assert a["verification"]["executed_by"]["execution_precision"] == "float32"
    assert report["reference"]["accuracy"] - arts["int8"]["metrics"]["accuracy"] <= 0.010
    assert arts["fp16"]["metrics"]["sqnr_db"] > 50
    assert report["summary"]["status"] == "passed"


@group("apple-coreml")
def test_coreml_is_verified_by_the_reference_executor(coreml_run):
    report = coreml_run.report
    for a in report["artifacts"]:
        v = a["verification"]
        assert v["status"] == "verified", v
        assert v["executed_by"]["runtime"] == "coreml-ref" and v["executed_by"]["reference_executor"] is True
        assert {c["name"] for c in v["checks"]} >= {"max_accuracy_drop", "min_agreement", "max_size_bytes"}
        assert a["metrics"]["samples"] == 2000 and a["metrics"]["agreement"] >= 0.99
        assert v["layers"]["compared"] >= 20 and v["layers"]["worst"]
        assert a["inspection"]["inputs"][0]["shape"] == [1, 28, 28, 1]
        assert a["inspection"]["op_counts"].get("conv", 0) >= 8
    arts = by_precision(report, "coreml")
    assert arts["fp16"]["metrics"]["sqnr_db"] > 55 and arts["int8"]["metrics"]["sqnr_db"] > 40
    assert arts["int8"]["size_bytes"] < 0.6 * arts["fp16"]["size_bytes"]
    assert report["summary"]["verified"] == 2
    assert "reference executor" in (coreml_run.out_dir / "summary.md").read_text()


@group("litert-cpu")
def test_the_cli_run_prints_the_table_and_writes_the_report(litert_cli):
    proc, result = litert_cli
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tflite int8" in proc.stdout and "verified" in proc.stdout
    report = json.loads((result.out_dir / "report.json").read_text())
    assert report["schema_version"] == 1 and report["command"] == "run"
