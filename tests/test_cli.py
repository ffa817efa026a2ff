"""The command line as users meet it: help, one-line errors with exit code 2, and nothing half-written."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import EXAMPLE_MODEL, MANIFEST, build_small_cnn, run_cli


def one_line_error(proc, fragment: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("edgeprep: error:")]
    assert len(errors) == 1 and fragment in errors[0], lines
    assert lines[-1] == errors[0], f"output after the error line: {lines}"
    return errors[0]


@pytest.fixture(scope="module")
def small_keras(tmp_path_factory):
    p = tmp_path_factory.mktemp("cli") / "small.keras"
    build_small_cnn().save(p)
    return p


def test_every_command_has_help():
    for cmd in ([], ["run"], ["convert"], ["verify"], ["targets"]):
        proc = run_cli(*cmd, "--help")
        assert proc.returncode == 0 and "Usage:" in proc.stdout, cmd


def test_targets_lists_profiles_with_descriptions():
    proc = run_cli("targets")
    assert proc.returncode == 0
    assert "litert-cpu" in proc.stdout and "openvino-cpu" in proc.stdout and "apple-coreml" in proc.stdout


def test_missing_model(tmp_path):
    one_line_error(run_cli("run", str(tmp_path / "nope.keras"), "--target", "litert-cpu", "--data", str(MANIFEST)),
                   "model not found")


def test_unsupported_model_format(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"torch")
    one_line_error(run_cli("convert", str(tmp_path / "m.pt"), "--to", "tflite", "--precision", "fp32"),
                   "unsupported model format '.pt'")


def test_corrupt_keras_file(tmp_path):
    (tmp_path / "m.keras").write_bytes(EXAMPLE_MODEL.read_bytes()[:5000])
    one_line_error(run_cli("convert", str(tmp_path / "m.keras"), "--to", "tflite", "--precision", "fp32"),
                   "m.keras")


def test_unknown_target_lists_known(small_keras):
    line = one_line_error(run_cli("run", str(small_keras), "--target", "pixel-11", "--data", str(MANIFEST)),
                          "unknown target 'pixel-11'")
    assert "litert-cpu" in line


def test_invalid_target_toml_names_the_problem(tmp_path, small_keras):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\ndescription = "x"\nformats = ["tflite"]\nprecisions = ["fp32"]\n'
                   '[tflite]\nxnnpak = 1\n')
    one_line_error(run_cli("run", str(small_keras), "--target", str(bad), "--data", str(MANIFEST)),
                   "unknown key 'xnnpak'")
    bad.write_text("name = [\n")
    one_line_error(run_cli("run", str(small_keras), "--target", str(bad), "--data", str(MANIFEST)), "invalid TOML")


def test_data_that_does_not_fit_the_model(tmp_path, small_keras):
    np.savez(tmp_path / "rgb.npz", x=np.zeros((4, 32, 32, 3), np.uint8))
    line = one_line_error(run_cli("run", str(small_keras), "--target", "litert-cpu", "--data",
                                  str(tmp_path / "rgb.npz")), "32x32x3")
    assert "--resize 28,28" in line and "--channels 1" in line


def test_empty_and_unreadable_data(tmp_path, small_keras):
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 28, 28, 1), np.uint8))
    one_line_error(run_cli("run", str(small_keras), "--target", "litert-cpu", "--data", str(tmp_path / "empty.npz")),
                   "empty")
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    one_line_error(run_cli("run", str(small_keras), "--target", "litert-cpu", "--data", str(tmp_path / "junk.npy")),
                   "cannot read the .npy")


def test_int8_without_data_is_refused_before_any_work(tmp_path, small_keras):
    one_line_error(run_cli("convert", str(small_keras), "--to", "tflite", "--precision", "int8",
                           "--out", str(tmp_path / "m.tflite")), "needs calibration data")
    assert not list(tmp_path.iterdir())


def test_debug_shows_the_traceback(tmp_path):
    proc = run_cli("--debug", "run", str(tmp_path / "nope.keras"), "--target", "litert-cpu")
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "model not found" in proc.stderr


def test_failed_run_leaves_no_partial_directory_and_keeps_the_previous_run(tmp_path, small_keras):
    out = tmp_path / "run"
    ok = run_cli("run", str(small_keras), "--target", "litert-cpu", "--data", str(MANIFEST), "--out", str(out))
    assert ok.returncode in (0, 1), ok.stderr[-2000:]   # untrained model: checks may fail, the run completes
    before = sorted(p.name for p in out.iterdir())
    assert "report.json" in before and "small.int8.tflite" in before
    x = np.random.default_rng(0).random((50, 28, 28, 1)).astype(np.float32)
    x[30] = np.nan
    np.savez(tmp_path / "nan.npz", x=x)
    proc = run_cli("run", str(small_keras), "--target", "litert-cpu", "--data", str(tmp_path / "nan.npz"),
                   "--out", str(out))
    one_line_error(proc, "NaN/Inf")
    assert sorted(p.name for p in out.iterdir()) == before, "the earlier run must survive a failed one"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "temporary directory left behind"


def test_convert_writes_one_artifact(tmp_path, small_keras):
    out = tmp_path / "m.fp16.xml"
    proc = run_cli("convert", str(small_keras), "--to", "openvino", "--precision", "fp16", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.exists() and out.with_suffix(".bin").exists()
    assert str(out) in proc.stdout and "weights fp16" in proc.stdout
