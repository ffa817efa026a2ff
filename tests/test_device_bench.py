"""device_bench on its own: importable without TensorFlow, metrics by hand, int8 I/O arithmetic."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import MANIFEST, ROOT

from device_bench import metrics
from device_bench.registry import LazyRegistry
from device_bench.runners import get_runner, names
from device_bench.runners.base import RunnerUnavailable, TensorSpec, dequantize, quantize


def test_device_bench_never_imports_tensorflow_or_edgeprep():
    code = ("import sys, device_bench, device_bench.metrics, device_bench.__main__, device_bench.bench\n"
            "import device_bench.measure, device_bench.harness, device_bench.transports.local\n"
            "import device_bench.device, device_bench.transports.bundle, device_bench.runners.coreml\n"
            "from device_bench.runners import open_model, get_runner\n"
            "from device_bench.transports import get_transport\n"
            "for n in ('litert', 'openvino', 'onnxruntime', 'coreml-ref'): get_runner(n)().load_runtime()\n"
            "get_transport('local'); get_transport('qemu-aarch64', rootfs='/nonexistent')\n"
            "get_transport('ssh', host='device')\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'edgeprep', 'coremltools')]\n"
            "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_metrics_by_hand():
    ref = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], np.float32)
    out = np.array([[0.2, 0.8], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4]], np.float32)
    labels = np.array([1, 0, 0, 0])
    assert metrics.accuracy(out, labels) == 0.5        # predicts 1, 1, 1, 0
    assert metrics.agreement(out, ref) == 0.75         # differs on sample 1
    noise = 0.1 ** 2 * 2 + 0.4 ** 2 * 2
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    assert metrics.sqnr_db(ref, out) == pytest.approx(10 * np.log10(signal / noise), rel=1e-6)
    assert metrics.sqnr_db(ref, ref) == metrics.SQNR_EXACT_DB
    assert metrics.max_abs_error(ref, out) == pytest.approx(0.4, rel=1e-6)


def test_quantize_rounds_half_away_from_zero_and_clamps():
    spec = TensorSpec("t", (1, 4), "int8", scale=0.5, zero_point=-10)
    q = quantize(np.array([0.25, -0.25, 100.0, -100.0], np.float32), spec)
    assert q.tolist() == [-9, -11, 127, -128]   # 0.5 -> 1, -0.5 -> -1, then clamped
    assert dequantize(np.array([-10, 0], np.int8), spec).tolist() == [0.0, 5.0]


def test_registry_is_explicit_and_rejects_duplicates():
    reg = LazyRegistry("thing", {"a": "json"}, RunnerUnavailable)

    @reg.register("a")
    class A:
        pass

    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(type("B", (), {}))
    with pytest.raises(ValueError, match="not listed"):
        reg.register("zzz")(A)
    assert reg.get("a") is A and json  # the lazily named module is importable
    with pytest.raises(RunnerUnavailable, match="unknown thing 'b'"):
        reg.get("b")


def test_known_runtimes():
    assert names() == ["coreml", "coreml-ref", "litert", "onnxruntime", "openvino"]
    with pytest.raises(RunnerUnavailable, match="unknown runtime"):
        get_runner("tensorrt")


def test_command_line_runs_an_artifact(tmp_path, trained_small, eval_npz):
    from edgeprep.config.formats import TFLiteOptions
    from edgeprep.models import load_model
    from edgeprep.stages.convert import convert

    model = load_model(trained_small)
    art = convert(model, "tflite", "fp32", TFLiteOptions(), tmp_path / "m.tflite")
    x = eval_npz["x"][:64].astype(np.float32) / 255.0
    np.savez(tmp_path / "d.npz", x=x, y=eval_npz["y"][:64], ref=model.predict(x))
    out = subprocess.run([sys.executable, "-m", "device_bench", str(art.path), "--runtime", "litert",
                          "--data", str(tmp_path / "d.npz")], cwd=ROOT, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["runtime"]["runtime"] == "litert"
    assert result["metrics"]["agreement"] == 1.0 and result["metrics"]["sqnr_db"] > 60
    bench = result["bench"]
    assert bench["iterations"] == 50 == len(result["latencies_ms"]) and bench["warmup"] == 5
    assert bench["latency_ms"]["min"] <= bench["latency_ms"]["p50"] <= bench["latency_ms"]["p99"]
    # latencies_ms are rounded to 1e-5 ms: on a 4 us model that is 0.1 % of them
    assert bench["latency_ms"]["p50"] == pytest.approx(float(np.median(result["latencies_ms"])), rel=1e-3, abs=1e-5)
    assert result["artifact"]["size_bytes"] == art.size_bytes
    assert bench["peak_rss_bytes"] == bench["runtime_rss_bytes"] + bench["rss_delta_bytes"]
    assert bench["rss_delta_bytes"] > 0 and bench["runtime_rss_bytes"] > 10 * 2**20
    bad = subprocess.run([sys.executable, "-m", "device_bench", str(tmp_path / "d.npz"), "--runtime", "litert"],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("device_bench: error: LiteRT cannot load")


def test_time_pair_alternates_blocks_a_b_b_a_and_gives_each_its_runs():
    from device_bench.measure import time_pair

    order = []
    a, b = (lambda: order.append("a"), None), (lambda: order.append("b"), None)
    ta, tb = time_pair(a, b, runs=6, warmup=1, block=3, settle=1)
    assert order[:4] == ["a", "b", "a", "b"]                         # first inferences, then the warm-up
    assert "".join(order[4:]) == "aaaa" "bbbb" "bbbb" "aaaa"         # blocks A B B A, each one untimed call first
    assert ta.iterations == tb.iterations == 6 and ta.first_ms >= 0 and len(ta.warmup_ms) == 1


def test_versus_times_two_artifacts_in_one_process(tmp_path, trained_small):
    """A model and one with a far heavier convolution stack, in one device_bench process: both timed, the heavier
    one slower in the same loop; the payload an ssh or qemu device receives carries both."""
    from test_bench import build_wide_cnn

    from device_bench.bench import Job
    from device_bench.transports.bundle import payload
    from edgeprep.config.formats import TFLiteOptions
    from edgeprep.models import load_model
    from edgeprep.stages.convert import convert

    small = convert(load_model(trained_small), "tflite", "fp32", TFLiteOptions(), tmp_path / "small.tflite")
    build_wide_cnn().save(tmp_path / "wide.keras")
    wide = convert(load_model(tmp_path / "wide.keras"), "tflite", "fp32", TFLiteOptions(), tmp_path / "wide.tflite")
    out = subprocess.run([sys.executable, "-m", "device_bench", str(small.path), "--versus", str(wide.path),
                          "--runs", "40", "--threads", "1"], cwd=ROOT, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    mine, theirs = result["latencies_ms"], result["versus"]["latencies_ms"]
    assert len(mine) >= 40 and len(theirs) >= 40 and result["versus"]["artifact"] == str(wide.path)
    assert np.median(theirs) > 3 * np.median(mine)
    load = payload(Job(str(small.path), "litert", versus=str(wide.path)))
    assert [name for _, name in load.files] == ["model.tflite", "versus.tflite"]
    assert load.argv[load.argv.index("--versus") + 1] == "versus.tflite"


def test_litert_compiled_model_api_computes_what_the_interpreter_does(tmp_path, trained_small, eval_npz):
    """``api = "compiled"``: LiteRT's CompiledModel API (what litert-benchmark runs) on the same artifacts gives the
    Interpreter's outputs exactly, fp32 and int8 (int8 I/O quantized from the Interpreter's specs), over the device
    command line with --data too; it says which API ran, and bad option combinations are refused in one line."""
    from device_bench.runners import open_model
    from edgeprep.config.formats import TFLiteOptions
    from edgeprep.data import load_data
    from edgeprep.models import load_model
    from edgeprep.stages.convert import convert

    model = load_model(trained_small)
    calib = load_data(MANIFEST).calibration
    arts = [convert(model, "tflite", "fp32", TFLiteOptions(), tmp_path / "m.fp32.tflite"),
            convert(model, "tflite", "int8", TFLiteOptions(), tmp_path / "m.int8.tflite", calibration=calib,
                    calibration_samples=100)]
    x = eval_npz["x"][:64].astype(np.float32) / 255.0
    for art in arts:
        plain = open_model("litert", str(art.path), threads=1).run(x)
        compiled = open_model("litert", str(art.path), threads=1, options={"api": "compiled"})
        assert np.array_equal(compiled.run(x), plain), art.path.name
        d = compiled.describe()
        assert d["api"] == "compiled" and d["delegation"]["partitions"] >= 1 and "fully_accelerated" in d
    np.savez(tmp_path / "d.npz", x=x, y=eval_npz["y"][:64], ref=model.predict(x))
    out = subprocess.run([sys.executable, "-m", "device_bench", str(arts[-1].path), "--options", '{"api": "compiled"}',
                          "--data", str(tmp_path / "d.npz"), "--runs", "20"], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    result = json.loads(out.stdout)
    assert result["runtime"]["api"] == "compiled" and result["metrics"]["samples"] == 64
    assert "Creating LiteRT environment" not in out.stderr          # its native log is kept off the console
    for bad, words in (({"api": "x"}, "api must be"), ({"api": "compiled", "xnnpack": False}, "CPU accelerator")):
        with pytest.raises(ValueError, match=words):
            open_model("litert", str(arts[0].path), options=bad)
    with pytest.raises(ValueError, match="CPU accelerator"):
        TFLiteOptions(litert_api="compiled", xnnpack=False)
    from edgeprep.backends import get_backend

    assert get_backend("tflite").runtime(TFLiteOptions(litert_api="compiled"))[1] == {"xnnpack": True,
                                                                                     "api": "compiled"}
    assert get_backend("tflite").runtime(TFLiteOptions())[1] == {"xnnpack": True}
