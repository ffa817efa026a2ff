"""device_bench's harness and `edgeprep bench` with real runtimes: fresh processes, timeouts, options, reports."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
from conftest import MANIFEST, require

from device_bench import measure
from device_bench.bench import Job
from device_bench.harness import benchmark, count_instructions
from device_bench.transports import BenchFailed, get_transport


def build_wide_cnn(channels: int = 96, seed: int = 1):
    """A deliberately heavy full-resolution CNN: tens of milliseconds per inference, same input/output as small."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((28, 28, 1), name="image")
    x = inp
    for _ in range(3):
        x = layers.Conv2D(channels, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(10, activation="softmax")(x), name="wide_cnn")


@pytest.fixture(scope="module")
def arts(tmp_path_factory, trained_small, eval_npz):
    """Real artifacts: the small CNN as fp32/int8 TFLite and fp32 OpenVINO IR, a heavy CNN, evaluation data."""
    from edgeprep.config.formats import OpenVINOOptions, TFLiteOptions
    from edgeprep.data import load_data
    from edgeprep.models import load_model
    from edgeprep.stages.convert import convert

    d = tmp_path_factory.mktemp("bench_arts")
    small = load_model(trained_small)
    calib = load_data(MANIFEST).calibration
    out = {"fp32": convert(small, "tflite", "fp32", TFLiteOptions(), d / "small.fp32.tflite"),
           "int8": convert(small, "tflite", "int8", TFLiteOptions(), d / "small.int8.tflite", calibration=calib,
                           calibration_samples=100),
           "ov": convert(small, "openvino", "fp32", OpenVINOOptions(), d / "small.fp32.xml", workdir=d)}
    wide_path = d / "wide.keras"
    build_wide_cnn().save(wide_path)
    out["wide"] = convert(load_model(wide_path), "tflite", "fp32", TFLiteOptions(), d / "wide.fp32.tflite")
    x = eval_npz["x"][:300].astype(np.float32) / 255.0
    np.savez(d / "eval.npz", x=x, y=eval_npz["y"][:300], ref=small.predict(x))
    np.savez(d / "bad_shape.npz", x=np.zeros((4, 32, 32, 3), np.float32))
    np.savez(d / "bad_dtype.npz", x=np.array([["a"] * 784] * 2).reshape(2, 28, 28, 1))
    out["dir"] = d
    return out


def test_latency_statistics_and_timing_loop_by_hand():
    stats = measure.latency_stats([1.0, 2.0, 3.0, 4.0, 100.0])
    assert stats["mean"] == 22.0 and stats["min"] == 1.0 and stats["max"] == 100.0 and stats["p50"] == 3.0
    assert stats["std"] == pytest.approx(float(np.std([1, 2, 3, 4, 100], ddof=1)))
    assert stats["p90"] == pytest.approx(4 + 0.6 * 96) and stats["p99"] == pytest.approx(4 + 0.96 * 96)
    calls = []
    t = measure.time_calls(lambda: calls.append(1), runs=7, warmup=3)
    assert len(calls) == 1 + 3 + 7 and t.iterations == 7 and len(t.warmup_ms) == 3
    t = measure.time_calls(lambda: time.sleep(0.002), runs=2, warmup=0, min_seconds=0.05)
    assert t.iterations >= 10 and t.seconds >= 0.05      # min_seconds wins over runs when it is longer


def test_job_argv_round_trips_through_the_device_command_line():
    from device_bench.__main__ import parser

    job = Job("/a/m.tflite", "litert", 3, {"xnnpack": False}, 17, 2, 0.5, "/d/x.npz", 4)
    args = parser().parse_args(job.argv())
    assert (args.artifact, args.runtime, args.threads, args.options, args.runs, args.warmup, args.min_time,
            args.data, args.seed) == ("/a/m.tflite", "litert", 3, {"xnnpack": False}, 17, 2, 0.5, "/d/x.npz", 4)
    with pytest.raises(ValueError, match="runs must be >= 1"):
        Job("m.tflite", "litert", runs=0)


@pytest.mark.parametrize("runtime, key, options, expect", [
    ("litert", "fp32", {"xnnpack": False}, {"delegate": "none (builtin kernels)"}),
    ("litert", "int8", {"xnnpack": True}, {"delegate": "xnnpack"}),
    ("openvino", "ov", {"performance_hint": "THROUGHPUT"}, {"performance_hint": "THROUGHPUT",
                                                             "execution_precision": "float32"}),
])
def test_fresh_process_benchmark_with_runner_options(arts, runtime, key, options, expect):
    result = benchmark(Job(str(arts[key].path), runtime, threads=1, options=options, runs=20, warmup=2,
                           data=str(arts["dir"] / "eval.npz")), timeout=120)
    for k, v in expect.items():
        assert result["runtime"][k] == v
    assert result["runtime"]["threads"] == 1 and result["bench"]["iterations"] == 20
    assert result["artifact"]["size_bytes"] == arts[key].size_bytes     # OpenVINO: .xml + .bin
    m = result["metrics"]
    assert m["samples"] == 300 and m["agreement"] >= (0.95 if key == "int8" else 0.999)
    assert 0.6 < m["accuracy"] < 0.9


def test_heavy_model_is_slower_and_uses_more_memory(arts):
    small = benchmark(Job(str(arts["fp32"].path), "litert", threads=1, runs=20), timeout=120)["bench"]
    wide = benchmark(Job(str(arts["wide"].path), "litert", threads=1, runs=5), timeout=120)["bench"]
    assert wide["latency_ms"]["p50"] > 5 * small["latency_ms"]["p50"]
    assert wide["rss_delta_bytes"] > small["rss_delta_bytes"]


def test_a_benchmark_that_hangs_is_stopped_at_the_timeout(arts):
    start = time.perf_counter()
    with pytest.raises(BenchFailed) as err:
        benchmark(Job(str(arts["fp32"].path), "litert", runs=1, min_seconds=600), timeout=3)
    assert err.value.kind == "timeout" and "did not finish within 3 s" in str(err.value)
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize("what, fragment", [
    ("corrupt", "LiteRT cannot load"),
    ("bad_shape", "input samples have shape (32, 32, 3) but the artifact expects (28, 28, 1)"),
    ("bad_dtype", "could not convert string to float"),
])
def test_bad_input_is_one_clear_error(arts, tmp_path, what, fragment):
    path, data = str(arts["fp32"].path), None
    if what == "corrupt":
        path = str(tmp_path / "broken.tflite")
        (tmp_path / "broken.tflite").write_bytes(arts["fp32"].path.read_bytes()[:5000])
    else:
        data = str(arts["dir"] / f"{what}.npz")
    with pytest.raises(BenchFailed) as err:
        get_transport("local").run(Job(path, "litert", runs=2, data=data), timeout=60)
    assert err.value.kind == "error" and fragment in str(err.value)


@pytest.mark.slow
def test_callgrind_counts_instructions_per_inference(arts):
    require(shutil.which("valgrind") is not None, "valgrind (apt-get install valgrind)")
    small = count_instructions(Job(str(arts["fp32"].path), "litert", threads=1), runs=(2, 12))
    assert small["tool"] == "valgrind --tool=callgrind" and small["threads"] == 1
    # The small CNN does ~0.2 M multiply-adds per image; even vectorised that is well over 10k instructions,
    # and far below the ~700 M of starting Python and LiteRT, which the difference of two runs cancels.
    assert 10_000 < small["instructions_per_inference"] < 20_000_000
    assert small["totals"][1] > small["totals"][0]


@pytest.mark.slow
def test_edgeprep_bench_writes_a_report_and_keeps_results_when_one_hangs(arts, tmp_path, monkeypatch):
    from edgeprep.cli import main
    from edgeprep.report import load_report

    monkeypatch.setenv("EDGEPREP_HISTORY", str(tmp_path / "h.sqlite"))
    out = tmp_path / "b"
    # 20000 runs: about 0.2 s for the small model, about a minute for the heavy one, which is stopped at 8 s.
    code = main(["-q", "bench", str(arts["int8"].path), str(arts["wide"].path), "--data", str(MANIFEST),
                 "--samples", "200", "--runs", "20000", "--repeats", "1", "--warmup", "1", "--threads", "1",
                 "--timeout", "8", "--out", str(out)])
    assert code == 1
    report = load_report(out)
    small, wide = report["artifacts"]
    assert report["command"] == "bench" and report["model"] is None
    assert small["bench"]["status"] == "ok" and small["bench"]["iterations"] == 20000
    assert set(small["bench"]["latency_ms"]) >= {"mean", "std", "min", "p50", "p90", "p99"}
    assert small["bench"]["runner"] == "litert" and small["bench"]["threads"] == 1
    assert small["metrics"]["samples"] == 200 and small["metrics"]["accuracy"] > 0.6
    assert small["verification"]["status"] == "measured"             # accuracy only: no float model given
    assert wide["bench"] == {**wide["bench"], "status": "error", "kind": "timeout"}
    assert wide["verification"]["status"] == "failed"
    assert json.loads((out / "latencies.json").read_text())["artifacts"].keys() == {"small.int8.tflite"}
    assert "p50 ms" in (out / "summary.md").read_text()
    junit = (out / "junit.xml").read_text()
    assert 'errors="1"' in junit and "did not finish within 8 s" in junit
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2
    assert (tmp_path / "h.sqlite").is_file()


@pytest.mark.slow
def test_run_benchmarks_per_the_target_profile(arts, trained_small, tmp_path, monkeypatch):
    from edgeprep.pipelines.run import run
    from edgeprep.report import load_report
    from edgeprep.targets import parse_target

    target = parse_target('name = "b"\ndescription = "d"\nformats = ["tflite"]\nprecisions = ["fp32"]\n'
                          'threads = 1\n[verify]\nsamples = 200\n[bench]\nruns = 30\nrepeats = 2\nwarmup = 2\n',
                          "inline")
    result = run(trained_small, target, MANIFEST, tmp_path / "run")
    entry = load_report(result.out_dir)["artifacts"][0]
    assert entry["bench"]["iterations"] == 60 and entry["bench"]["threads"] == 1 and entry["bench"]["repeats"] == 2
    assert len(entry["bench"]["process_p50_ms"]) == 2
    raw = json.loads((result.out_dir / "latencies.json").read_text())["artifacts"]["small_cnn.fp32.tflite"]
    assert [len(p) for p in raw] == [30, 30]
    assert [s["name"] for s in result.report["stages"]][-3:] == ["convert", "verify", "bench"]
    for name in ("report.json", "latencies.json", "summary.md", "junit.xml", "report.html"):
        assert (result.out_dir / name).is_file(), name


def test_edgeprep_bench_refuses_a_corrupt_artifact_and_data_that_does_not_fit(arts, tmp_path, capsys):
    from edgeprep.cli import main

    broken = tmp_path / "broken.tflite"
    broken.write_bytes(arts["fp32"].path.read_bytes()[:3000])
    assert main(["bench", str(broken), str(arts["fp32"].path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgeprep: error: broken.tflite: cannot read the tflite artifact") and err.count("\n") == 1
    assert main(["bench", str(arts["fp32"].path), "--data", str(arts["dir"] / "bad_shape.npz"), "--out",
                 str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "samples are 32x32x3 after preprocessing but small.fp32.tflite expects 28x28x1" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_core_ml_on_the_reference_executor_is_verified_but_not_timed(tmp_path, trained_small):
    """The reference executor's speed says nothing about Core ML on a device: no latency may be reported for it."""
    from edgeprep.config.bench import BenchConfig
    from edgeprep.config.formats import CoreMLOptions
    from edgeprep.models import load_model
    from edgeprep.stages.bench import bench_artifact
    from edgeprep.stages.convert import convert

    art = convert(load_model(trained_small), "coreml", "fp16", CoreMLOptions(), tmp_path / "m.mlpackage")
    assert art.runtime == "coreml-ref"
    outcome = bench_artifact(art, BenchConfig(runs=5, repeats=1))
    assert not outcome.ok
    assert outcome.bench["status"] == "unavailable" and "reference executor" in outcome.bench["error"]
    assert "latency_ms" not in outcome.bench


class _Recorder:
    """A reporter that records the progress steps and warnings it is given."""

    def __init__(self):
        self.steps, self.warnings = [], []

    def step(self, description, total=None):
        import contextlib

        self.steps.append(description)
        return contextlib.nullcontext(lambda n=1: None)

    def warn(self, message):
        self.warnings.append(message)


def test_device_data_file_holds_float32_inputs_labels_and_reference_outputs(tmp_path):
    from edgeprep.stages.bench import write_device_data

    x, y, ref = np.arange(8, dtype=np.float64).reshape(2, 4), np.array([1, 0]), np.eye(2, dtype=np.float32)
    with np.load(write_device_data(tmp_path / "d.npz", (x, y), ref)) as saved:
        assert set(saved.files) == {"x", "y", "ref"} and saved["x"].dtype == np.float32
        assert np.array_equal(saved["x"], x) and np.array_equal(saved["y"], y) and np.array_equal(saved["ref"], ref)
    with np.load(write_device_data(tmp_path / "e.npz", (x, None))) as saved:
        assert saved.files == ["x"]


def test_the_bench_loop_on_an_unreachable_device_records_it_for_each_artifact(arts, tmp_path):
    from edgeprep.config.bench import BenchConfig
    from edgeprep.report import artifact_entry
    from edgeprep.stages.bench import BenchRequest, bench_each, bench_entries

    config, reporter = BenchConfig(runs=2, repeats=1), _Recorder()
    results = bench_each([arts["fp32"], arts["int8"]], BenchRequest(config, unavailable="cannot reach it"), reporter,
                         by_file_name=True)
    assert [o.bench for o in results.outcomes] == [{"status": "error", "error": "cannot reach it",
                                                    "kind": "unreachable", "transport": "local"}] * 2
    assert results.latencies == {} and reporter.steps == []
    assert reporter.warnings == ["small.fp32.tflite: benchmark error: cannot reach it",
                                 "small.int8.tflite: benchmark error: cannot reach it"]
    entries = [artifact_entry(arts["fp32"], {"status": "unmeasured"}, arts["dir"])]
    bench_entries([arts["fp32"]], entries, BenchRequest(config, unavailable="down"), _Recorder(), tmp_path)
    assert entries[0]["verification"]["status"] == "failed" and entries[0]["bench"]["kind"] == "unreachable"
    assert json.loads((tmp_path / "latencies.json").read_text())["artifacts"] == {}


def test_the_bench_loop_puts_device_metrics_in_the_bench_object_only_with_a_reference(arts):
    from types import SimpleNamespace

    from edgeprep.config.bench import BenchConfig
    from edgeprep.stages.bench import BenchRequest, bench_each

    config, data = BenchConfig(runs=3, repeats=1, warmup=0), arts["dir"] / "eval.npz"
    reporter = _Recorder()
    with_ref = bench_each([arts["fp32"]], BenchRequest(config, 1, data, SimpleNamespace(accuracy=0.5)), reporter)
    outcome = with_ref.outcomes[0]
    assert outcome.ok and outcome.bench["metrics"]["samples"] == 300
    drop = outcome.bench["metrics"]["accuracy_drop"]
    assert drop == pytest.approx(100 * (0.5 - outcome.metrics["accuracy"]), abs=1e-4)
    assert reporter.steps == ["Benchmarking tflite-fp32 (1 processes x 3 runs, local)"] and not reporter.warnings
    assert [len(p) for p in with_ref.latencies["small.fp32.tflite"]] == [3]
    without = bench_each([arts["fp32"]], BenchRequest(config, 1, data), _Recorder()).outcomes[0]
    assert without.ok and "metrics" not in without.bench and without.metrics["samples"] == 300


def test_an_int8_slower_than_its_fp32_sibling_is_flagged_by_hand():
    from edgeprep.stages.bench import flag_slower_int8

    def entry(fmt, precision, p50, processes, device=None):
        return {"format": fmt, "precision": precision, "device": device,
                "bench": {"status": "ok", "latency_ms": {"p50": p50}, "process_p50_ms": processes}}
    entries = [entry("tflite", "fp32", 0.10, [0.09, 0.11]), entry("tflite", "int8", 0.23, [0.2, 0.25]),
               entry("openvino", "fp32", 0.30, [0.3]), entry("openvino", "int8", 0.31, [0.29, 0.33]),
               entry("tflite", "fp32", 0.5, [0.5], device="pi"), entry("tflite", "int8", 0.2, [0.2], device="pi")]
    marks = flag_slower_int8(entries)
    assert marks == [{"ratio": 2.3, "fp32_p50_ms": 0.10, "int8_p50_ms": 0.23, "every_process": True}]
    assert entries[1]["bench"]["slower_than_fp32"] is marks[0]
    assert "slower_than_fp32" not in entries[3]["bench"]       # +3 %: within the margin
    assert "slower_than_fp32" not in entries[5]["bench"]       # the device's own fp32 is the sibling: faster
    assert "cause" not in marks[0]                              # the runtime said nothing
    same = {"partitions": 1, "not_delegated": {"SOFTMAX": 1}}
    entries[0]["bench"]["executed_by"] = {"delegation": same}
    entries[1]["bench"]["executed_by"] = {"delegation": same}
    assert "took the same ops in both" in flag_slower_int8(entries)[0]["cause"]
    assert "AMX" not in flag_slower_int8(entries)[0]["cause"]
    entries[1]["bench"]["device"] = {"machine": "x86_64", "matrix_units": ["amx_bf16", "amx_int8"]}
    assert "it has AMX" in flag_slower_int8(entries)[0]["cause"]
    prof = [{"type": "Convolution", "ms": 0.1, "share": 0.5, "count": 2}, {"type": "MVN", "ms": 0.1, "share": 0.5,
                                                                            "count": 1}]
    entries[2]["bench"]["profile"] = {"available": True, "by_type": prof}
    entries[3]["bench"]["latency_ms"]["p50"] = 0.5
    entries[3]["bench"]["profile"] = {"available": True, "by_type": [{**prof[0], "ms": 0.35}, prof[1]]}
    cause = [m for m in flag_slower_int8(entries) if m["int8_p50_ms"] == 0.5][0]["cause"]
    assert cause == "per-op counters, int8 against fp32: Convolution +0.25 ms"
    entries[0]["bench"]["status"] = "error"                     # no fp32 measurement: nothing to compare with
    assert flag_slower_int8([entries[0], entry("tflite", "int8", 9.0, [9.0])]) == []


def _blocks_give_the_ratio_the_models_have_alone(fp32, int8):
    """device_bench --versus (and gate's side-by-side rounds) time two models in one process, in blocks of 20 calls
    alternating A B B A, each block settling first. Their ratio must be the one the two have when each is timed in
    its own loop: on one machine, alternating call by call let each evict the other's weights and pulled
    MobileNetV3Small's int8/fp32 ratio from 2.4-2.9 to 1.9-2.1; on another (and under a second core's load) call by
    call already gave the ratio alone (3.2). What must hold everywhere is that blocks give the ratio alone, within
    what the machines show: here (also under a second core's load) blocks 2.33-2.49 against 2.44-2.47 alone; one CI
    runner gave 2.94-3.03 in blocks against 3.31-3.33 alone (0.90), so the bound is 15 %, where the eviction it
    guards against moved the ratio by 20-30 %."""
    from device_bench.measure import time_calls, time_pair
    from device_bench.runners import open_model

    sessions = [open_model("litert", str(a), threads=1) for a in (fp32, int8)]
    calls = [(lambda s=s, v=np.zeros((1, *s.input.shape[1:]), np.float32): s.run(v), None) for s in sessions]
    alone, paired = [], []
    for _ in range(2):             # alternating, so a drift of the machine falls on both
        a, b = (time_calls(call, runs=300, warmup=10) for call, _own in calls)
        alone.append(float(np.median(b.samples_ms) / np.median(a.samples_ms)))
        a, b = time_pair(*calls, runs=300, warmup=10)
        paired.append(float(np.median(b.samples_ms) / np.median(a.samples_ms)))
    assert min(paired) > 1.3, paired                    # the int8 is slower: the labels are not crossed
    assert abs(np.log(np.median(paired) / np.median(alone))) < np.log(1.15), (alone, paired)


@pytest.mark.slow
def test_edgeprep_bench_says_when_int8_is_slower_than_fp32(tmp_path, loud_cli):
    """MobileNetV3Small (committed, trained on Fashion-MNIST) under LiteRT's XNNPACK: its int8 with int8 HARD_SWISH
    ops is slower than its fp32 on x86 (issue 16 measured 2.3x with the vendor's tool); the report and the console
    say so. (edgeprep's default, [tflite] float_hard_swish, runs those in float and is faster than fp32:
    tests/test_hard_swish.py; the int8 HARD_SWISH artifact is made here on purpose.)"""
    from conftest import DATA_DIR, ROOT

    from edgeprep.config.formats import TFLiteOptions
    from edgeprep.data import load_data
    from edgeprep.models import load_model
    from edgeprep.stages.convert import convert

    model = load_model(ROOT / "examples" / "hard" / "mobilenetv3_small_fmnist.keras")
    convert(model, "tflite", "fp32", TFLiteOptions(), tmp_path / "mnv3.fp32.tflite")
    convert(model, "tflite", "int8", TFLiteOptions(float_hard_swish=False), tmp_path / "mnv3.int8.tflite",
            calibration=load_data(DATA_DIR / "fashion_mnist_96rgb.toml").calibration, calibration_samples=32)
    _blocks_give_the_ratio_the_models_have_alone(tmp_path / "mnv3.fp32.tflite", tmp_path / "mnv3.int8.tflite")
    proc = loud_cli("bench", str(tmp_path / "mnv3.fp32.tflite"), str(tmp_path / "mnv3.int8.tflite"),
                    "--threads", "1", "--runs", "60", "--out", str(tmp_path / "out"), "--no-history")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    by = {a["precision"]: a for a in report["artifacts"]}
    mark = by["int8"]["bench"]["slower_than_fp32"]
    assert mark["ratio"] > 1.05 and mark["int8_p50_ms"] > mark["fp32_p50_ms"]
    assert "slower_than_fp32" not in by["fp32"]["bench"]
    assert "tflite int8 is slower than its fp32 sibling" in " ".join(proc.stderr.split())
    # why, from the interpreter: XNNPACK has no int8 HARD_SWISH, so each splits the graph into another partition
    assert "the delegate did not take HARD_SWISH x19" in mark["cause"]
    int8, fp32 = (by[p]["bench"]["executed_by"]["delegation"] for p in ("int8", "fp32"))
    assert int8["not_delegated"]["HARD_SWISH"] == 19 and "HARD_SWISH" not in fp32["not_delegated"]
    # fp32: one partition, the whole graph (its Flatten's RESHAPE gets a constant target: static_shape.py)
    assert int8["partitions"] == 20 and fp32["partitions"] == 1 and fp32["fully_delegated"]


def test_delegation_walks_back_from_the_partitions_inputs_by_hand():
    from device_bench.runners.litert import delegation

    # x(0) -> A -> 1 -> [DELEGATE: B, C] -> 3 -> D -> 4 -> [DELEGATE: E] -> 5 (the output)
    ops = [{"index": 0, "op_name": "A", "inputs": [0], "outputs": [1]},
           {"index": 1, "op_name": "B", "inputs": [1], "outputs": [2]},
           {"index": 2, "op_name": "C", "inputs": [2], "outputs": [3]},
           {"index": 3, "op_name": "D", "inputs": [3], "outputs": [4]},
           {"index": 4, "op_name": "E", "inputs": [4], "outputs": [5]},
           {"index": 5, "op_name": "DELEGATE", "inputs": [1], "outputs": [3]},
           {"index": 6, "op_name": "DELEGATE", "inputs": [4], "outputs": [5]}]
    assert delegation(ops, 5) == {"partitions": 2, "ops": 5, "not_delegated": {"A": 1, "D": 1},
                                  "fully_delegated": False}
    whole = ops[:5] + [{"index": 5, "op_name": "DELEGATE", "inputs": [0], "outputs": [5]}]
    assert delegation(whole, 5)["fully_delegated"] and delegation(ops[:5], 5)["not_delegated"] == {
        "A": 1, "B": 1, "C": 1, "D": 1, "E": 1}


def test_edgeprep_bench_profile_says_where_the_time_goes(arts, tmp_path, loud_cli):
    """--profile: OpenVINO's per-node counters summed per op type (the convolutions and the dense layers of the
    small CNN are nearly all of it); LiteRT says it has none and why; the report validates against the schema."""
    proc = loud_cli("bench", arts["ov"].path, arts["int8"].path, "--profile", "--threads", "1", "--runs", "30",
                    "--repeats", "2", "--out", tmp_path / "out", "--no-history")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    by = {a["format"]: a["bench"] for a in report["artifacts"]}
    ov = by["openvino"]["profile"]
    assert ov["available"] and ov["runs"] == 30 and ov["total_ms"] > 0
    assert sum(t["share"] for t in ov["by_type"]) == pytest.approx(1.0, abs=0.01)
    assert sum(t["ms"] for t in ov["by_type"]) == pytest.approx(ov["total_ms"], rel=1e-3)
    heavy = {t["type"] for t in ov["by_type"] if t["share"] > 0.05}
    assert heavy & {"Convolution", "FullyConnected", "GroupConvolution"}, ov["by_type"]
    assert ov["slowest"][0]["ms"] == max(n["ms"] for n in ov["slowest"])
    assert "time by op type" in proc.stderr
    lite = by["tflite"]["profile"]
    assert lite["available"] is False and "delegation" in lite["reason"]
    assert by["tflite"]["executed_by"]["delegation"]["partitions"] >= 1
