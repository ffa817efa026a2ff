"""Devices other than this machine: the qemu-aarch64 emulator, ssh-attached devices (a real sshd on 127.0.0.1
whose "device" is this machine's Python with numpy and LiteRT), the Core ML runner's Linux paths, and fleets."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import sshd
from conftest import MANIFEST, ROOT, require, run_cli

from device_bench.bench import Job
from device_bench.transports import BenchFailed, TransportUnavailable, get_transport
from device_bench.transports.bundle import BUNDLE, payload, zipapp_bytes
from edgeprep.devices import emulator

ODD = "dir with space and 'quote'"          # every path the tests hand to a device contains both


@pytest.fixture(scope="module")
def arts(tmp_path_factory, trained_small, eval_npz):
    """The small CNN as int8 TFLite and fp32 OpenVINO (an .xml with its .bin), under a path with a space and a
    quote; evaluation data with the float outputs."""
    from edgeprep.config.formats import OpenVINOOptions, TFLiteOptions
    from edgeprep.data import load_data
    from edgeprep.models import load_model
    from edgeprep.stages.convert import convert

    d = tmp_path_factory.mktemp("devices") / ODD
    d.mkdir()
    small = load_model(trained_small)
    out = {"int8": convert(small, "tflite", "int8", TFLiteOptions(), d / "small.int8.tflite",
                           calibration=load_data(MANIFEST).calibration, calibration_samples=100),
           "ov": convert(small, "openvino", "fp32", OpenVINOOptions(), d / "small.fp32.xml", workdir=d)}
    x = eval_npz["x"][:100].astype(np.float32) / 255.0
    np.savez(d / "eval.npz", x=x, y=eval_npz["y"][:100], ref=small.predict(x))
    out["dir"], out["data"] = d, d / "eval.npz"
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require(sshd.available(), "OpenSSH server and client (apt-get install openssh-server openssh-client)")
    s = sshd.SSHD(tmp_path_factory.mktemp("sshd") / ODD, ports=3)
    yield s
    s.stop()


def rootfs_ready() -> bool:
    return (emulator.default_rootfs() / emulator.STAMP).is_file()


# -- what goes to a device ------------------------------------------------------------------------------------

def test_payload_renames_files_and_the_zipapp_runs_on_its_own(arts, tmp_path):
    load = payload(Job(str(arts["ov"].path), "openvino", data=str(arts["data"])))
    assert [name for _, name in load.files] == ["model.xml", "model.bin", "data.npz"]
    assert load.argv[0] == "model.xml" and "data.npz" in load.argv and not any(ODD in a for a in load.argv)
    # The zipapp alone (no PYTHONPATH, another directory) benchmarks a real artifact and probes the runtime.
    (tmp_path / BUNDLE).write_bytes(zipapp_bytes())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run([sys.executable, BUNDLE, "--probe", "--runtime", "litert"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True)
    assert json.loads(probe.stdout)["runtime"] == "litert"
    done = subprocess.run([sys.executable, str(tmp_path / BUNDLE), str(arts["int8"].path), "--runs", "3"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    assert result["bench"]["iterations"] == 3 and result["device"]["machine"] == os.uname().machine


def test_device_bench_is_python_3_9_syntax():
    """Devices run their own Python (macOS ships 3.9): the zipapp must parse there."""
    for path in sorted((ROOT / "device_bench").rglob("*.py")):
        ast.parse(path.read_text(), str(path), feature_version=(3, 9))


# -- configuration ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bench, fragment", [
    ('transport = "ssh"\n', 'transport "ssh" needs a [bench.ssh] table'),
    ('[bench.ssh]\nhost = "pi"\n', "[bench.ssh] is set but transport is 'local'"),
    ('transport = "ssh"\n[bench.ssh]\nhost = "pi"\nport = 70000\n', "port must be 1-65535"),
    ('transport = "ssh"\n[bench.ssh]\nhost = "pi"\nhostname = "x"\n', "unknown key 'hostname'"),
    ('transport = "ssh"\n[bench.ssh]\nhost = "-oProxyCommand=x"\n', "host must be a host name"),
    ('runner = "tensorrt"\n', "runner must be one of"),
    ('options = {compute_units = "ALL"}\n', "options are for the runner named by runner"),
    ('transport = "carrier-pigeon"\n', "transport must be one of"),
    ('transport = "qemu-aarch64"\n[bench.qemu]\nisolation = "docker"\n', "isolation must be auto, chroot or prefix"),
    ('transport = "qemu-aarch64"\n[bench.qemu]\npython = "python3"\n', "python must be an absolute path"),
])
def test_device_tables_are_validated_at_load(bench, fragment):
    from edgeprep.errors import ConfigError
    from edgeprep.targets import parse_target

    with pytest.raises(ConfigError) as err:
        parse_target('name = "t"\ndescription = "d"\nformats = ["tflite"]\nprecisions = ["fp32"]\n[bench]\n' + bench,
                     "t.toml")
    assert fragment in str(err.value) and "t.toml" in str(err.value)


# -- Core ML on a Mac ------------------------------------------------------------------------------------------

def test_core_ml_runner_reads_the_package_and_says_it_needs_a_mac(tmp_path, trained_small):
    import coremltools as ct

    from device_bench.runners import RunnerUnavailable, get_runner
    from device_bench.runners.coreml import io_specs
    from edgeprep.config.formats import CoreMLOptions
    from edgeprep.models import load_model
    from edgeprep.stages.convert import convert

    art = convert(load_model(trained_small), "coreml", "fp16", CoreMLOptions(), tmp_path / "m.mlpackage")
    inp, out = io_specs(ct.models.MLModel(str(art.path), skip_model_load=True).get_spec())
    ref = get_runner("coreml-ref")().open(str(art.path))           # our own reader of the same package agrees
    assert (inp.name, inp.shape, inp.dtype) == (ref.input.name, ref.input.shape, ref.input.dtype) == \
        ("image", (1, 28, 28, 1), "float16")
    assert out.name == ref.output.name and out.shape[-1] == 10
    runner = get_runner("coreml")()
    with pytest.raises(ValueError, match="compute_units must be one of"):
        runner.open(str(art.path), options={"compute_units": "TPU"})
    with pytest.raises(RunnerUnavailable, match="Core ML runs only on macOS.*over ssh"):
        runner.open(str(art.path))
    assert len(runner.files(str(art.path))) == len(art.files)


def test_a_linux_host_configured_as_the_mac_is_refused_with_the_reason(server, tmp_path, trained_small):
    """A Core ML target whose ssh device is not a Mac: one line, exit code 2, before anything is benchmarked."""
    from edgeprep.config.formats import CoreMLOptions
    from edgeprep.models import load_model
    from edgeprep.stages.convert import convert

    art = convert(load_model(trained_small), "coreml", "fp16", CoreMLOptions(), tmp_path / "m.fp16.mlpackage")
    shipped = (ROOT / "edgeprep" / "profiles" / "mac-coreml-ssh.toml").read_text()
    profile = shipped.split("\n[bench.ssh]\n")[0] + "\n" + server.toml()
    (tmp_path / "mac.toml").write_text(profile.replace('name = "mac-coreml-ssh"', 'name = "mac"'))
    done = run_cli("-q", "bench", str(art.path), "--target", str(tmp_path / "mac.toml"), "--out", str(tmp_path / "o"))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("edgeprep: error:") and done.stderr.count("\n") == 1
    assert "Core ML runs only on macOS" in done.stderr
    assert not (tmp_path / "o").exists()


# -- ssh ---------------------------------------------------------------------------------------------------------

def test_ssh_benchmark_with_data_matches_this_machine_and_cleans_up(server, arts, tmp_path):
    remote_tmp = tmp_path / ODD
    remote_tmp.mkdir()
    t = get_transport("ssh", **server.settings(remote_tmp=str(remote_tmp)))
    assert t.check("openvino")["device"]["machine"] == os.uname().machine
    local = get_transport("local")
    for key, runtime, options in (("int8", "litert", {}), ("ov", "openvino", {"inference_precision": "f32"})):
        job = Job(str(arts[key].path), runtime, threads=1, options=options, runs=5, warmup=1, data=str(arts["data"]))
        there, here = t.run(job, 120), local.run(job, 120)
        assert there["metrics"] == here["metrics"]            # same machine, same runtime: identical numbers
        assert there["artifact"]["path"] == str(arts[key].path)
        assert there["artifact"]["size_bytes"] == arts[key].size_bytes
        assert there["transport"] == {**there["transport"], "transport": "ssh", "port": server.ports[0]}
        assert there["bench"]["iterations"] == 5 and there["metrics"]["samples"] == 100
    assert list(remote_tmp.iterdir()) == []


@pytest.mark.parametrize("case, fragment, hint", [
    ("unreachable", "cannot reach the device (ssh: connect to host 127.0.0.1 port", "running sshd"),
    ("wrong key", "the device refused the login", "authorized_keys"),
    ("unknown host key", "host key not trusted (Host key verification failed.)", "ssh-keyscan"),
    ("python missing", "cannot run the device's Python '/nonexistent/python3'", "install Python 3.9+"),
    ("runtime missing", "is not installed", "install it for"),
])
def test_ssh_device_problems_are_one_clear_error(server, tmp_path, case, fragment, hint):
    over = {"unreachable": {"port": sshd.free_port(), "backoff": 0.1},
            "wrong key": {"key": str(sshd.keygen(tmp_path / "other"))},
            "unknown host key": {"known_hosts": str(tmp_path / "empty_known_hosts")},
            "python missing": {"python": "/nonexistent/python3"},
            "runtime missing": {"python": _python_without_numpy()}}[case]
    (tmp_path / "empty_known_hosts").write_text("")
    start = time.perf_counter()
    with pytest.raises(TransportUnavailable) as err:
        get_transport("ssh", **server.settings(**over)).check("litert")
    assert fragment in err.value.message and hint in err.value.hint
    assert (" (3 attempts)" in err.value.message) == (case == "unreachable")   # only what retrying can fix
    assert time.perf_counter() - start < 30


def _python_without_numpy() -> str:
    for candidate in ("/usr/bin/python3", os.path.join(sys.base_prefix, "bin", "python3")):
        if os.path.exists(candidate) and subprocess.run([candidate, "-c", "import numpy"],
                                                        capture_output=True).returncode != 0:
            return candidate
    pytest.skip("no Python without numpy here")


@pytest.mark.slow
def test_ssh_timeout_and_a_device_lost_mid_run(arts, tmp_path):
    """A benchmark that hangs is stopped at its timeout; a device that drops off mid-run is reported at once
    (not at the timeout); either way the device's temporary directory and processes are gone."""
    require(sshd.available(), "OpenSSH server and client (apt-get install openssh-server openssh-client)")
    server = sshd.SSHD(tmp_path / "sshd")
    remote_tmp = tmp_path / ODD
    remote_tmp.mkdir()
    try:
        t = get_transport("ssh", **server.settings(remote_tmp=str(remote_tmp), retries=1, backoff=0.1))
        hang = Job(str(arts["int8"].path), "litert", runs=1, min_seconds=600)
        with pytest.raises(BenchFailed) as err:
            t.run(hang, 4)
        assert err.value.kind == "timeout"
        _wait_empty(remote_tmp)
        killer = threading.Timer(3.0, server.kill_server)
        killer.start()
        start = time.perf_counter()
        with pytest.raises(BenchFailed) as err:
            t.run(hang, 120)
        assert err.value.kind == "disconnected" and "disconnected during the benchmark" in str(err.value)
        assert "then" in str(err.value) and "Connection refused" in str(err.value)    # the retry found it gone
        assert time.perf_counter() - start < 30
        _wait_empty(remote_tmp)
        left = subprocess.run(["pgrep", "-f", "device_bench.pyz"], capture_output=True, text=True).stdout.split()
        assert not [p for p in left if str(remote_tmp) in Path(f"/proc/{p}/cwd").resolve().as_posix()]
    finally:
        server.stop()


def _wait_empty(directory: Path, seconds: float = 10) -> None:
    deadline = time.time() + seconds
    while list(directory.iterdir()) and time.time() < deadline:
        time.sleep(0.1)
    assert list(directory.iterdir()) == []


# -- fleets ------------------------------------------------------------------------------------------------------

def _profile(path: Path, name: str, bench: str, precisions='["int8"]') -> Path:
    path.write_text(f'name = "{name}"\ndescription = "{name}"\nformats = ["tflite"]\nprecisions = {precisions}\n'
                    f'runtime = "litert"\nthreads = 1\n[verify]\nsamples = 100\n[bench]\nruns = 10\nrepeats = 1\n'
                    f'warmup = 1\ntimeout_seconds = 120\n{bench}')
    return path


@pytest.mark.slow
def test_fleet_bench_runs_devices_in_parallel_and_keeps_results_when_one_is_down(server, arts, tmp_path):
    from edgeprep.report import load_report

    names = []
    for i in range(3):
        _profile(tmp_path / f"dev{i}.toml", f"dev{i}", 'transport = "ssh"\n' + server.toml(i))
        names.append(str(tmp_path / f"dev{i}.toml"))
    _profile(tmp_path / "down.toml", "down", 'transport = "ssh"\n' + server.toml(0, port=sshd.free_port(), retries=0))
    names.append(str(tmp_path / "down.toml"))
    out = tmp_path / "fleet"
    done = run_cli("bench", str(arts["int8"].path), "--targets", ",".join(names), "--data", str(MANIFEST),
                   "--samples", "100", "--out", str(out), "--no-history")
    assert done.returncode == 1, done.stderr
    report = load_report(out)
    fleet = report["fleet"]
    # accuracy only (no --model): each device measured, none verified
    assert fleet["lanes"] == 4 and [t["status"] for t in fleet["targets"]] == ["measured"] * 3 + ["error"]
    assert "cannot reach the device" in fleet["targets"][3]["error"]
    by_device = {a["device"]: a for a in report["artifacts"]}
    for i in range(3):
        a = by_device[f"dev{i}"]
        assert a["bench"]["status"] == "ok" and a["metrics"]["accuracy"] == by_device["dev0"]["metrics"]["accuracy"]
        assert load_report(out / f"dev{i}")["artifacts"][0]["bench"]["device"]["port"] == server.ports[i]
    assert by_device["down"]["bench"] == {**by_device["down"]["bench"], "status": "error", "kind": "unreachable"}
    # The lanes overlapped: the fleet took less than its devices one after another.
    assert fleet["wall_seconds"] < fleet["sum_seconds"]
    gate = run_cli("gate", str(out), "--baseline", str(tmp_path / "b.json"))
    assert gate.returncode == 2 and "is a fleet report" in gate.stderr


def test_fan_out_keeps_one_lane_per_device(tmp_path):
    """Targets reaching the same hardware take turns; different devices overlap; a failure stays in its lane."""
    from edgeprep.errors import InputError
    from edgeprep.pipelines.fleet import fan_out
    from edgeprep.progress import Reporter
    from edgeprep.targets import load_target

    ssh = 'transport = "ssh"\n[bench.ssh]\nhost = "127.0.0.1"\nport = {}\n'
    targets = [load_target(_profile(tmp_path / f"{n}.toml", n, b)) for n, b in (
        ("a", ""), ("b", 'transport = "qemu-aarch64"\n'), ("c", ssh.format(2201)), ("d", ssh.format(2202)))]
    spans = {}

    def work(t):
        start = time.perf_counter()
        time.sleep(0.5)
        spans[t.name] = (start, time.perf_counter())
        if t.name == "d":
            raise InputError("d is broken", "fix d")
        return {"summary": {"status": "passed"}}, {"machine": "x"}, None

    runs, timing = fan_out(targets, work, Reporter(quiet=True))
    assert timing["lanes"] == 3 and [r.status for r in runs] == ["verified", "verified", "verified", "error"]
    assert runs[3].error == "d is broken: fix d"
    a, b, c = spans["a"], spans["b"], spans["c"]
    assert b[0] >= a[1] or a[0] >= b[1]                   # this machine and its emulator: one at a time
    assert c[0] < a[1] and a[0] < c[1]                    # an ssh device runs alongside


# -- the emulated ARM64 board -------------------------------------------------------------------------------------

def test_missing_emulator_says_run_make_emulator(arts, tmp_path):
    t = get_transport("qemu-aarch64", rootfs=str(tmp_path / "nothing"))
    with pytest.raises(TransportUnavailable) as err:
        t.check("litert")
    assert "emulator is not built" in err.value.message and "make emulator" in err.value.hint
    done = run_cli("-q", "bench", str(arts["int8"].path), "--target", "raspberry-pi-4-emulated", "--out",
                   str(tmp_path / "o"), env={"EDGEPREP_EMULATOR": str(tmp_path / "none")})
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "ARM64 emulator is not built" in done.stderr and "run 'make emulator'" in done.stderr


@pytest.mark.slow
def test_a_profile_on_the_emulated_board_says_what_xnnpack_took(arts):
    """--profile on the ARM64 board: its LiteRT has no per-op timer in Python either, and says so; the delegation
    is read on the board itself (the aarch64 interpreter's own DELEGATE nodes)."""
    require(rootfs_ready(), "the ARM64 emulator (make emulator)")
    t = get_transport("qemu-aarch64", rootfs=str(emulator.default_rootfs()))
    result = t.run(Job(str(arts["int8"].path), "litert", threads=1, runs=3, warmup=1, profile=True), 600)
    assert result["device"]["machine"] == "aarch64"
    assert result["profile"]["available"] is False and "delegation" in result["profile"]["reason"]
    d = result["runtime"]["delegation"]
    assert d["partitions"] >= 1 and d["ops"] > 0 and isinstance(d["not_delegated"], dict)
    x86 = get_transport("local").run(Job(str(arts["int8"].path), "litert", threads=1, runs=3, warmup=1), 600)
    assert d == x86["runtime"]["delegation"]          # the same artifact, the same XNNPACK partitioning


def test_emulated_arm_matches_x86_numerics(arts, tmp_path):
    """Same int8 artifact, real ARM kernels: the x86 outputs as the reference, top-1 agrees on every sample and
    outputs differ by at most one output quantization step."""
    require(rootfs_ready(), "the ARM64 emulator (make emulator)")
    from device_bench.runners import open_model

    with np.load(arts["data"]) as z:
        x, y = z["x"], z["y"]
    x86 = open_model("litert", str(arts["int8"].path), threads=1)
    np.savez(tmp_path / "x86.npz", x=x, y=y, ref=x86.run(x))
    t = get_transport("qemu-aarch64", rootfs=str(emulator.default_rootfs()))
    assert t.isolation == ("chroot" if os.geteuid() == 0 else "prefix")
    assert t.check("litert")["device"]["machine"] == "aarch64"
    job = Job(str(arts["int8"].path), "litert", threads=1, runs=3, warmup=1, data=str(tmp_path / "x86.npz"))
    result = t.run(job, 600)
    assert result["device"]["machine"] == "aarch64" and result["transport"]["emulated"] is True
    assert result["device"]["matrix_units"] == []          # the host's AMX is not the emulated board's
    # Without root, qemu -L enters the rootfs instead of a chroot: the same kernels, the same outputs.
    rootless = get_transport("qemu-aarch64", rootfs=str(emulator.default_rootfs()), isolation="prefix").run(job, 600)
    assert rootless["transport"]["isolation"] == "prefix" and rootless["device"]["machine"] == "aarch64"
    assert rootless["runtime"]["delegate"] == "xnnpack" and rootless["metrics"] == result["metrics"]
    assert rootless["device"]["cpu_model"] == result["device"]["cpu_model"]
    assert result["runtime"]["delegate"] == "xnnpack"
    # This test process holds TensorFlow (over a GB); the emulated benchmark's peak RSS must be its own.
    assert 30 << 20 < result["bench"]["runtime_rss_bytes"] < result["bench"]["peak_rss_bytes"] < 400 << 20
    m = result["metrics"]
    assert m["agreement"] == 1.0 and m["max_abs_error"] <= x86.output.scale + 1e-9
    assert m["accuracy"] == pytest.approx(float(np.mean(np.argmax(x86.run(x), 1) == y)))
    assert not list((emulator.default_rootfs() / "tmp").glob("device-bench-*"))
    assert emulator.build(say=lambda *_: None) == emulator.default_rootfs()   # cached: returns at once


@pytest.mark.slow
def test_run_on_the_emulated_board_and_a_fleet(cli, trained_small, tmp_path, server):
    """edgeprep run with the emulated target (device accuracy in the report, emulated latency marked), then
    the same model on a fleet of the emulator, an ssh device and this machine."""
    require(rootfs_ready(), "the ARM64 emulator (make emulator)")
    from edgeprep.report import load_report

    emu = _profile(tmp_path / "emu.toml", "emu", 'transport = "qemu-aarch64"\n')
    done = cli("run", trained_small, "--target", emu, "--data", MANIFEST, "--out", tmp_path / "one")
    assert done.returncode == 0, done.stderr
    entry = load_report(tmp_path / "one")["artifacts"][0]
    b = entry["bench"]
    assert b["device"]["machine"] == "aarch64" and b["device"]["emulated"] is True
    assert b["device"]["latency_representative"] is False and b["metrics"]["samples"] == 100
    assert abs(b["metrics"]["agreement"] - entry["metrics"]["agreement"]) <= 0.01    # ARM vs x86 verification
    assert "measured under emulation" in done.stdout.replace("\n", " ")
    assert "on the device (aarch64, emulated" in (tmp_path / "one" / "summary.md").read_text()

    local = _profile(tmp_path / "here.toml", "here", "")
    remote = _profile(tmp_path / "board.toml", "board", 'transport = "ssh"\n' + server.toml(1))
    done = cli("run", trained_small, "--targets", f"{emu},{remote},{local}", "--data", MANIFEST,
               "--out", tmp_path / "fleet")
    assert done.returncode == 0, done.stderr
    report = load_report(tmp_path / "fleet")
    # these profiles set no [gates]: measured, not verified (the export-integrity checks passed)
    assert [t["status"] for t in report["fleet"]["targets"]] == ["measured", "measured", "measured"]
    assert report["fleet"]["lanes"] == 2
    machines = {a["device"]: a["bench"]["device"]["machine"] for a in report["artifacts"]}
    assert machines == {"emu": "aarch64", "board": os.uname().machine, "here": os.uname().machine}
    for name in ("emu", "board", "here"):
        sub = load_report(tmp_path / "fleet" / name)
        assert sub["target"]["name"] == name and sub["artifacts"][0]["bench"]["status"] == "ok"
        assert (tmp_path / "fleet" / name / "latencies.json").is_file()
