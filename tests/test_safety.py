"""Never a lost file, never debris: output paths, full and read-only disks, SIGTERM/Ctrl-C and the processes
edgeprep starts. Real files, real signals, a real tmpfs (when the tests run as root, as CI does)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLE_MODEL, MANIFEST, ROOT, build_small_cnn, require

FAST_TARGET = """
name = "fast-tflite"
description = "fp32 TFLite only, no benchmark: the cheapest real run"
formats = ["tflite"]
precisions = ["fp32"]
runtime = "litert"
threads = 1

[verify]
samples = 200

[gates]
max_size_growth_pct = 5.0
"""

SLOW_BENCH_TARGET = FAST_TARGET.replace('name = "fast-tflite"', 'name = "slow-bench"') + """
[bench]
runs = 1000000
repeats = 1
min_seconds = 600.0
timeout_seconds = 900.0
"""


def one_line_error(proc, fragment: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-1500:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("edgeprep: error:")]
    assert len(errors) == 1 and fragment in errors[0], proc.stderr[-3000:]
    return errors[0]


def debris(directory: Path) -> list[str]:
    """Temporary names edgeprep leaves only when something went wrong."""
    return sorted(p.name for p in Path(directory).iterdir() if p.name.endswith(".tmp"))


def snapshot(directory: Path) -> dict:
    return {str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(Path(directory).rglob("*"))}


def user_tree(root: Path) -> Path:
    """An ordinary folder a user might point --out at by mistake: a README and a src/ tree."""
    root.mkdir(parents=True)
    (root / "README.md").write_text("# my project\n")
    (root / "src").mkdir()
    (root / "src" / "main.py").write_text("print('hello')\n")
    return root


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("safety") / "small.keras"
    build_small_cnn().save(p)
    return p


@pytest.fixture(scope="module")
def fast_target(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("targets") / "fast-tflite.toml"
    p.write_text(FAST_TARGET)
    return p


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, small, fast_target) -> Path:
    """A real, complete run directory (the earlier run the later tests must never lose), made by the real CLI
    in this process. The tests that read it share one xdist worker (RUN_DIR), so it is made once."""
    from edgeprep.cli import main

    out = tmp_path_factory.mktemp("runs") / "earlier"
    assert main(["-q", "run", str(small), "--target", str(fast_target), "--data", str(MANIFEST),
                 "--out", str(out)]) == 0
    return out


RUN_DIR = pytest.mark.xdist_group("safety-run-dir")


# ---- --out and report paths -------------------------------------------------------------------------------

def test_convert_into_an_existing_folder_writes_inside_it(cli, small, tmp_path):
    folder = tmp_path / "some_dir"
    folder.mkdir()
    shutil.copy(small, folder / "small.keras")
    (folder / "notes.txt").write_text("mine\n")
    proc = cli("convert", str(folder / "small.keras"), "--to", "tflite", "--precision", "fp32",
                   "--out", str(folder))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "small.fp32.tflite", "small.keras"]
    assert (folder / "notes.txt").read_text() == "mine\n"
    assert (folder / "small.keras").read_bytes() == small.read_bytes()
    assert str(folder / "small.fp32.tflite") in proc.stdout
    # A path ending in '/' that does not exist yet is a folder too.
    proc = cli("convert", str(small), "--to", "tflite", "--precision", "fp32", "--out", str(tmp_path / "new") + "/")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "new" / "small.fp32.tflite").is_file()


@pytest.mark.parametrize("fmt,precision,suffix", [("tflite", "fp32", ".tflite"), ("openvino", "fp32", ".xml"),
                                                  ("coreml", "fp16", ".mlpackage")])
def test_convert_adds_the_format_suffix_and_the_artifact_is_usable(loud_cli, small, tmp_path, fmt, precision, suffix):
    proc = loud_cli("convert", small, "--to", fmt, "--precision", precision, "--out", tmp_path / "model")
    assert proc.returncode == 0, proc.stderr[-2000:]
    final = tmp_path / f"model{suffix}"
    assert final.exists() and f"writing{final}" in "".join(proc.stderr.split())   # rich folds long lines
    assert debris(tmp_path) == []
    from edgeprep.stages.convert import open_artifact

    art = open_artifact(final)
    assert art.format == fmt and art.size_bytes > 0


def test_an_artifact_is_recognised_by_its_content(cli, small, tmp_path):
    from edgeprep.errors import InputError
    from edgeprep.stages.convert import open_artifact

    proc = cli("convert", str(small), "--to", "tflite", "--precision", "fp32", "--out", str(tmp_path / "a.tflite"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    shutil.copy(tmp_path / "a.tflite", tmp_path / "no_suffix")
    assert open_artifact(tmp_path / "no_suffix").format == "tflite"
    (tmp_path / "fake.tflite").write_text("not a model\n")
    with pytest.raises(InputError, match="named like a tflite artifact but is not one"):
        open_artifact(tmp_path / "fake.tflite")
    shutil.copy(tmp_path / "a.tflite", tmp_path / "wrong.xml")
    with pytest.raises(InputError, match="holds a tflite one"):
        open_artifact(tmp_path / "wrong.xml")


def test_convert_never_replaces_a_file_it_did_not_write(cli, small, tmp_path):
    mine = tmp_path / "notes.tflite"
    mine.write_text("my notes, not a model\n")
    start = time.perf_counter()
    proc = cli("convert", str(small), "--to", "tflite", "--precision", "fp32", "--out", str(mine))
    line = one_line_error(proc, "edgeprep did not write")
    assert str(mine) in line and mine.read_text() == "my notes, not a model\n"
    # OpenVINO: a foreign .bin beside the .xml is never overwritten either.
    (tmp_path / "ov.bin").write_bytes(b"someone's weights")
    one_line_error(cli("convert", str(small), "--to", "openvino", "--precision", "fp32",
                           "--out", str(tmp_path / "ov.xml")), "ov.bin")
    assert (tmp_path / "ov.bin").read_bytes() == b"someone's weights" and not (tmp_path / "ov.xml").exists()
    assert time.perf_counter() - start < 120 and debris(tmp_path) == []


def test_convert_replaces_its_own_artifact(cli, small, tmp_path):
    out = tmp_path / "m.xml"
    for _ in range(2):
        proc = cli("convert", str(small), "--to", "openvino", "--precision", "fp32", "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]


@pytest.mark.parametrize("command", ["run", "bench", "quantize"])
def test_a_run_never_replaces_an_ordinary_folder_or_a_file(cli, small, fast_target, tmp_path, command):
    folder = user_tree(tmp_path / "project")
    before = snapshot(folder)
    args = {"run": ["run", str(small), "--target", str(fast_target), "--data", str(MANIFEST)],
            "bench": ["bench", str(small)],       # refused before the artifact is even looked at
            "quantize": ["quantize", str(small), "--target", str(fast_target), "--data", str(MANIFEST)]}[command]
    start = time.perf_counter()
    line = one_line_error(cli(*args, "--out", str(folder)), "not an edgeprep run directory")
    assert str(folder) in line and snapshot(folder) == before
    afile = tmp_path / "results.txt"
    afile.write_text("keep me\n")
    line = one_line_error(cli(*args, "--out", str(afile)), "is a file")
    assert afile.read_text() == "keep me\n"
    assert time.perf_counter() - start < 90, "refused only after doing the work"
    assert debris(tmp_path) == []


@RUN_DIR
def test_a_run_replaces_its_own_run_directory_and_an_empty_one(cli, run_dir, small, fast_target, tmp_path):
    copy = tmp_path / "again"
    shutil.copytree(run_dir, copy)
    stale = json.loads((copy / "report.json").read_text())
    stale["created"] = old = "2000-01-01T00:00:00+00:00"     # two runs can finish within the same second
    (copy / "report.json").write_text(json.dumps(stale))
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (copy, empty):
        proc = cli("run", str(small), "--target", str(fast_target), "--data", str(MANIFEST), "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (out / "report.json").is_file() and (out / "small.fp32.tflite").is_file()
    assert json.loads((copy / "report.json").read_text())["created"] != old
    assert debris(tmp_path) == []


@RUN_DIR
def test_gate_report_paths_that_are_folders_or_foreign_files_are_refused(cli, run_dir, tmp_path):
    folder = user_tree(tmp_path / "docs")
    before = snapshot(folder)
    for option in ("--markdown", "--junit", "--html", "--json"):
        one_line_error(cli("gate", str(run_dir), "--baseline", str(run_dir), option, str(folder)),
                       f"{option} {folder} is a directory")
    readme = folder / "README.md"
    one_line_error(cli("gate", str(run_dir), "--baseline", str(run_dir), "--markdown", str(readme)),
                   "edgeprep did not write")
    assert snapshot(folder) == before
    # --update-baseline must never replace a run directory with a file.
    run_before = snapshot(run_dir)
    one_line_error(cli("gate", str(run_dir), "--baseline", str(run_dir), "--update-baseline"),
                   "is a directory")
    assert snapshot(run_dir) == run_before
    # Its own outputs are replaced on the next gate.
    outs = {o: tmp_path / n for o, n in (("--markdown", "g.md"), ("--junit", "g.xml"), ("--html", "g.html"),
                                         ("--json", "g.json"))}
    for _ in range(2):
        proc = cli("gate", str(run_dir), "--baseline", str(run_dir),
                       *[x for o, p in outs.items() for x in (o, str(p))])
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert all(p.stat().st_size > 0 for p in outs.values())


def test_fold_and_calibrate_outputs_follow_the_same_rules(cli, small, tmp_path):
    mine = tmp_path / "mine.keras"
    shutil.copy(small, mine)
    one_line_error(cli("fold", str(small), "--out", str(mine)), "edgeprep did not write")
    assert mine.read_bytes() == small.read_bytes()
    for _ in range(2):   # its own folded model (the report beside it says so) is replaced
        proc = cli("fold", str(small), "--out", str(tmp_path / "f"))
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.keras", "f.report.json", "mine.keras"]


# ---- full and read-only disks (a real tmpfs) -------------------------------------------------------------

@pytest.fixture
def tmpfs(tmp_path):
    """A real tmpfs of 2 MiB mounted in tmp_path; root only (CI runs as root)."""
    require(os.geteuid() == 0 and shutil.which("mount") is not None, "root, to mount a tmpfs")
    where = tmp_path / "disk"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True,
                          text=True)
    require(done.returncode == 0, f"mount -t tmpfs ({done.stderr.strip()})")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def remount(where: Path, opts: str) -> None:
    done = subprocess.run(["mount", "-o", f"remount,{opts}", str(where)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("fmt", ["tflite", "openvino"])
def test_a_disk_that_fills_up_during_the_write_is_one_line_and_leaves_nothing(cli, tmpfs, fmt):
    # The example model's fp32 artifact (5 MB) does not fit the 2 MiB disk: the write fails after the conversion.
    # TFLite's write raises ENOSPC; OpenVINO says only "iostream error", so the disk's free space decides.
    proc = cli("convert", str(EXAMPLE_MODEL), "--to", fmt, "--precision", "fp32", "--out", str(tmpfs / "m"))
    line = one_line_error(proc, "No space left on device")
    assert "free space" in line and str(tmpfs) in line
    assert list(tmpfs.iterdir()) == []


def test_a_full_disk_is_refused_before_any_work(cli, small, tmpfs, fast_target):
    with open(tmpfs / "ballast", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    start = time.perf_counter()
    for args in (["convert", str(small), "--to", "tflite", "--precision", "fp32", "--out", str(tmpfs / "m")],
                 ["run", str(small), "--target", str(fast_target), "--data", str(MANIFEST),
                  "--out", str(tmpfs / "run")]):
        one_line_error(cli(*args), "No space left on device")
    assert time.perf_counter() - start < 90
    assert [p.name for p in tmpfs.iterdir()] == ["ballast"]


def test_a_read_only_location_is_refused_before_any_work(cli, small, tmpfs, fast_target):
    remount(tmpfs, "ro")
    try:
        start = time.perf_counter()
        for args in (["convert", str(small), "--to", "tflite", "--precision", "fp32", "--out", str(tmpfs / "m")],
                     ["run", str(small), "--target", str(fast_target), "--data", str(MANIFEST),
                      "--out", str(tmpfs / "run")]):
            line = one_line_error(cli(*args), "Read-only file system")
            assert str(tmpfs) in line and "writable" in line
        assert time.perf_counter() - start < 90
    finally:
        remount(tmpfs, "rw")
    assert list(tmpfs.iterdir()) == []


# ---- signals and the processes edgeprep starts ------------------------------------------------------------

def start_cli(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-m", "edgeprep", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(condition, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} first: {proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("timed out waiting")


@RUN_DIR
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_run_cleans_up_and_keeps_the_earlier_run(run_dir, small, fast_target, tmp_path, sig, code):
    out = tmp_path / "earlier"
    shutil.copytree(run_dir, out)
    before = snapshot(out)
    proc = start_cli("run", str(small), "--target", str(fast_target), "--data", str(MANIFEST), "--out", str(out),
                     cwd=tmp_path)
    # The staging directory exists from the first conversion on: interrupt the run while it is being filled.
    wait_for(lambda: any(p.name.startswith(".earlier.") for p in tmp_path.iterdir()), 240, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err and ("stopped by SIGTERM" in err or "interrupted" in err)
    assert debris(tmp_path) == [] and snapshot(out) == before


def test_sigterm_during_convert_leaves_no_temporary(small, tmp_path):
    proc = start_cli("convert", str(small), "--to", "tflite", "--precision", "int8", "--data", str(MANIFEST),
                     "--out", str(tmp_path / "m.int8.tflite"), cwd=tmp_path)
    wait_for(lambda: debris(tmp_path) != [], 240, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert list(tmp_path.iterdir()) == []


def benchmark_children(marker: str) -> list[int]:
    """PIDs of live processes whose command line names ``marker`` (our artifact's unique directory)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = next(ln for ln in (d / "status").read_text().splitlines() if ln.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if marker in cmd and "device_bench" in cmd and "zombie" not in state:
            pids.append(int(d.name))
    return pids


@RUN_DIR
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_bench_stops_the_benchmark_process(run_dir, tmp_path, sig, code):
    target = tmp_path / "slow-bench.toml"
    target.write_text(SLOW_BENCH_TARGET)
    art_dir = tmp_path / f"arts-{sig.name}"
    art_dir.mkdir()
    shutil.copy(run_dir / "small.fp32.tflite", art_dir / "small.fp32.tflite")
    proc = start_cli("bench", str(art_dir / "small.fp32.tflite"), "--target", str(target),
                     "--out", str(tmp_path / "bench"), cwd=tmp_path)
    wait_for(lambda: benchmark_children(str(art_dir)) != [], 240, proc)
    time.sleep(1.0)   # inside the timed loop
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-3000:]
    deadline = time.monotonic() + 10
    while benchmark_children(str(art_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = benchmark_children(str(art_dir))
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], "the benchmark process outlived edgeprep"
    assert debris(tmp_path) == [] and not (tmp_path / "bench").exists()


def test_the_process_registry_stops_what_worker_threads_wait_on():
    """A fleet waits on benchmarks from worker threads, which a signal never reaches: stop_all() must."""
    import threading

    from device_bench.transports import BenchFailed
    from device_bench.transports.base import accept_new, run_process, stop_all

    accept_new()
    results = []
    t = threading.Thread(target=lambda: results.append(run_process([sys.executable, "-c",
                                                                    "import time; time.sleep(120)"], 300)))
    t.start()
    time.sleep(1.0)
    start = time.perf_counter()
    try:
        assert stop_all() == 1
        t.join(30)
        assert not t.is_alive() and time.perf_counter() - start < 10
        assert results[0].returncode == -signal.SIGKILL
        with pytest.raises(BenchFailed, match="interrupted"):     # and the lane's next benchmark never starts
            run_process([sys.executable, "-c", "pass"], 30)
    finally:
        accept_new()
    assert run_process([sys.executable, "-c", "pass"], 30).returncode == 0


def test_output_rules_by_hand(tmp_path):
    """The predicates behind every refusal, on real files."""
    from edgeprep.outputs import REPORT_KINDS, OutputError, atomic_path, is_run_dir, run_dir_out

    assert not is_run_dir(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({"schema_version": 1, "edgeprep_version": "0.1.0"}))
    assert is_run_dir(tmp_path) and run_dir_out(tmp_path) == tmp_path.resolve()
    md = tmp_path / "x.md"
    md.write_text("notes that mention edgeprep report: yes\n")
    assert not REPORT_KINDS["markdown"](md)
    with pytest.raises(OutputError):
        with atomic_path(md, REPORT_KINDS["markdown"]) as tmp:
            tmp.write_text("# edgeprep report: m\n")
    assert md.read_text().startswith("notes")
    md.write_text("")                     # an empty file holds nothing to lose
    with atomic_path(md, REPORT_KINDS["markdown"]) as tmp:
        tmp.write_text("# edgeprep report: m\n")
    assert REPORT_KINDS["markdown"](md)
    with pytest.raises(RuntimeError):     # a failed block leaves the earlier file and no temporary
        with atomic_path(md, REPORT_KINDS["markdown"]) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert md.read_text() == "# edgeprep report: m\n" and debris(tmp_path) == []
    np.save(tmp_path / "x.npy", np.zeros(3))
    with pytest.raises(OutputError, match="is a file"):
        run_dir_out(tmp_path / "x.npy")
    assert ROOT.exists()


# ---- int8 calibrated on too few samples: the same warning everywhere --------------------------------------

def test_every_int8_calibration_warns_when_it_uses_too_few_samples(loud_cli, small, tmp_path):
    warning = "only 5 calibration samples used"
    proc = loud_cli("convert", small, "--to", "tflite", "--precision", "int8", "--data", MANIFEST,
                    "--calib-samples", "5", "--out", tmp_path / "m")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert warning in " ".join(proc.stderr.split())
    target = tmp_path / "int8-few.toml"
    target.write_text(FAST_TARGET.replace('"fp32"]', '"int8"]').replace('name = "fast-tflite"', 'name = "int8-few"')
                      + "\n[quantize]\ncalibration_samples = 5\n")
    proc = loud_cli("run", small, "--target", target, "--data", MANIFEST, "--out", tmp_path / "r")
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    assert warning in " ".join(proc.stderr.split())


def test_an_interrupted_fleet_stops_every_lane_at_once():
    """Ctrl-C reaches only the main thread, which waits on the lanes: it must stop their benchmarks, not wait."""
    import threading
    from types import SimpleNamespace

    from device_bench.transports.base import accept_new, run_process
    from edgeprep.config.bench import BenchConfig
    from edgeprep.config.device import SSHConfig
    from edgeprep.pipelines.fleet import fan_out
    from edgeprep.progress import Reporter

    targets = [SimpleNamespace(name=f"board{i}", bench=BenchConfig(transport="ssh", ssh=SSHConfig(host=f"b{i}")))
               for i in range(2)]
    codes = []

    def work(t):          # each lane: a long benchmark process, then another one
        for _ in range(2):
            codes.append(run_process([sys.executable, "-c", "import time; time.sleep(120)"], 300).returncode)
        return {"summary": {"status": "passed"}}, None, None

    main = threading.main_thread().ident     # a real SIGINT, delivered to the thread that waits, as Ctrl-C is
    threading.Timer(2.0, lambda: signal.pthread_kill(main, signal.SIGINT)).start()
    start = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            fan_out(targets, work, Reporter(quiet=True))
    finally:
        accept_new()
    assert time.perf_counter() - start < 20
    assert codes == [-signal.SIGKILL, -signal.SIGKILL]      # killed, and no lane started its second process


@RUN_DIR
def test_verify_adds_its_report_to_a_folder_but_never_replaces_a_foreign_summary(cli, run_dir, small, tmp_path):
    folder = user_tree(tmp_path / "docs")
    (folder / "summary.md").write_text("# my summary\n")
    before = snapshot(folder)
    art = str(run_dir / "small.fp32.tflite")
    one_line_error(cli("verify", str(small), art, "--data", str(MANIFEST), "--samples", "50", "--out",
                           str(folder)), "summary.md")
    assert snapshot(folder) == before
    (folder / "summary.md").unlink()
    proc = cli("verify", str(small), art, "--data", str(MANIFEST), "--samples", "50", "--out", str(folder))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (folder / "report.json").is_file() and (folder / "README.md").read_text() == "# my project\n"


# ---- results that must not pass -----------------------------------------------------------------------------

def test_an_artifact_computing_nan_or_inf_fails_whatever_the_thresholds(cli, tmp_path):
    """fp16 weights overflow to inf (1e6 > 65504): the fp16 Core ML program (which computes in fp16, as the
    reference executor models) gives inf/NaN where the float model is finite. With no threshold set it must still
    fail, and its SQNR is not the 200 dB of a bit-exact copy."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    w, b = model.layers[-1].get_weights()
    w[:, 0] = 1e6
    model.layers[-1].set_weights([w, b])
    path = tmp_path / "overflow.keras"
    model.save(path)
    proc = cli("convert", str(path), "--to", "coreml", "--precision", "fp16", "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = cli("verify", str(path), str(tmp_path / "o.mlpackage"), "--data", str(MANIFEST), "--samples", "50",
                   "--out", str(tmp_path / "v"))
    assert proc.returncode == 1, (proc.stdout[-2000:], proc.stderr[-2000:])
    art = json.loads((tmp_path / "v" / "report.json").read_text())["artifacts"][0]     # NaN is read as nan
    failed = [c for c in art["verification"]["checks"] if not c["passed"]]
    assert [c["name"] for c in failed] == ["finite_outputs"], art["verification"]
    sqnr = art["metrics"]["sqnr_db"]
    assert sqnr != sqnr or sqnr < 100, sqnr     # NaN, or at least far from "exact"


def test_a_stream_taken_inside_quiet_never_writes_into_a_later_descriptor(tmp_path):
    """A logging handler created inside ``quiet()`` (TensorFlow creates its handler on the first warning) keeps
    the stream it saw. That stream once wrapped the log file's descriptor, whose number the next pipe reuses: a
    later warning then went into the pipe to the QAT child and broke the message there ("got end of file during
    message", exit 3). It must write to descriptor 2 — the terminal once the block is over — and nowhere else."""
    import logging
    import os
    import sys

    from edgeprep._util import quiet

    log = logging.getLogger("edgeprep-test-quiet")
    log.propagate = False
    with quiet() as out:
        handler = logging.StreamHandler(sys.stderr)       # created in the block, as TensorFlow's is
        log.addHandler(handler)
        log.warning("inside")
    try:
        r, w = os.pipe()                                  # takes the lowest free numbers: the log's among them
        saved = os.dup(2)
        err = tmp_path / "stderr.txt"
        with open(err, "wb") as f:
            os.dup2(f.fileno(), 2)
            try:
                log.warning("after")
            finally:
                os.dup2(saved, 2)
                os.close(saved)
        os.close(w)
        assert os.read(r, 100) == b""                     # nothing reached the pipe
        os.close(r)
        assert "inside" in out.text and err.read_text() == "after\n"
    finally:
        log.removeHandler(handler)
