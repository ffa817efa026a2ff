"""The run directory: every file names the command that wrote it, and the float model is run over the evaluation
set once per model state (not once per step that needs its outputs).

Real model trained on the committed Fashion-MNIST data, real converter and runtime, the real CLI in-process.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from conftest import DATA_DIR

MANIFEST = DATA_DIR / "fashion_mnist.toml"


def target(tmp_path: Path, name: str, precisions=("fp32", "int8"), extra: str = "") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\ndescription = "test"\nformats = ["tflite"]\n'
                    f'precisions = {list(precisions)!r}\nruntime = "litert"\n'
                    '[quantize]\ncalibration_samples = 100\nlayer_error_samples = 0\n[verify]\nsamples = 200\n'
                    + extra)
    return path


def test_quantize_files_name_the_quantize_command(trained_small, tmp_path, cli):
    t = target(tmp_path, "named", precisions=("int8",))
    out = tmp_path / "q"
    proc = cli("quantize", trained_small, "--target", t, "--data", MANIFEST, "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["command"] == "quantize"
    assert "command quantize" in (out / "report.html").read_text()
    assert "command run" not in (out / "report.html").read_text()
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert suite.get("name") == "edgeprep.quantize.named"


def test_float_model_runs_over_the_evaluation_set_once_per_state(trained_small, tmp_path, cli, monkeypatch):
    """With BatchNorm re-estimation on, the evaluation set goes through the float model twice — with the stored
    statistics (the stale outputs and the 'before' accuracy) and recalibrated (the 'after' accuracy and the float
    reference every artifact is verified against) — and without it once."""
    from edgeprep.pipelines import run as run_pipeline
    from edgeprep.stages import calibrate as calibrate_stage
    from edgeprep.stages import prepare as prepare_stage
    from edgeprep.stages import verify as verify_stage

    passes: list[str] = []
    real_reference, real_accuracy = verify_stage.reference, calibrate_stage.accuracy

    def counted_reference(model, data, *args, **kw):
        passes.append(f"reference on {data.source}")
        return real_reference(model, data, *args, **kw)

    def counted_accuracy(model, data, *args, **kw):
        passes.append(f"accuracy on {data.source}")
        return real_accuracy(model, data, *args, **kw)

    for module in (verify_stage, run_pipeline, prepare_stage):
        monkeypatch.setattr(module, "reference", counted_reference)
    monkeypatch.setattr(calibrate_stage, "accuracy", counted_accuracy)

    t = target(tmp_path, "once")
    proc = cli("run", trained_small, "--target", t, "--data", MANIFEST, "--calibrate", "--out", tmp_path / "cal")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    evaluation = [p for p in passes if "eval" in p]
    assert len(evaluation) == 2, passes
    report = json.loads((tmp_path / "cal" / "report.json").read_text())
    # the reference verification used is the recalibrated model's: its accuracy is calibration's "after"
    assert report["reference"]["accuracy"] == report["calibration"]["accuracy"]["after"]
    assert report["reference"]["samples"] == report["calibration"]["accuracy"]["samples"] == 200
    for a in report["artifacts"]:
        assert a["verification"]["status"] in ("verified", "measured"), a["verification"]

    passes.clear()
    proc = cli("run", trained_small, "--target", t, "--data", MANIFEST, "--out", tmp_path / "plain")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len([p for p in passes if "eval" in p]) == 1, passes


def test_prepare_passes_on_the_outputs_it_computed(trained_small):
    """The outputs calibration computed are the ones a separate pass would give: the stale outputs are the
    stored-statistics model's, the evaluated reference is the recalibrated model's."""
    import numpy as np

    from edgeprep.config.calibrate import CalibrateConfig
    from edgeprep.data import load_data
    from edgeprep.models import load_model
    from edgeprep.stages.prepare import prepare
    from edgeprep.stages.verify import reference

    model = load_model(trained_small)
    data = load_data(MANIFEST)
    prepared = prepare(model, CalibrateConfig(enabled=True, samples=200), data, verify_samples=150)
    assert prepared.recalibrated and prepared.evaluated.samples == 150
    again = reference(prepared.reference, data.evaluation, 150)
    np.testing.assert_array_equal(prepared.evaluated.outputs, again.outputs)
    np.testing.assert_array_equal(prepared.evaluated.labels, again.labels)
    stale = reference(model, data.evaluation, 150)
    np.testing.assert_allclose(prepared.stale_outputs, stale.outputs, rtol=1e-5, atol=1e-6)
    # recalibration changed something, so the two are not the same array by accident
    assert not np.array_equal(prepared.stale_outputs, prepared.evaluated.outputs)
    assert prepared.telemetry.accuracy.after == round(again.accuracy, 6)
