"""BatchNorm stages on the example model: folded vs unfolded latency (Keras and TFLite fp32) and size, and the
peak RSS of calibration at 1k vs 20k+ samples (each in its own process, streaming from a memory-mapped .npy).

Latencies are medians of interleaved runs (A, B, A, B, ...) so the shared machine's noise hits both sides alike;
the figures to read are the ratios.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from conftest import EXAMPLE_MODEL, MANIFEST

ROOT = Path(__file__).resolve().parents[2]
LARGE = 24_000


def _median_interleaved(fns: dict, rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return {k: float(np.median(v)) * 1e3 for k, v in times.items()}


def latency_and_size(tmp: Path) -> None:
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from edgeprep._util import quiet
    from edgeprep.data import load_data
    from edgeprep.models import load_model
    from edgeprep.stages.fold import fold_bn

    model = load_model(EXAMPLE_MODEL).obj
    data = load_data(MANIFEST)
    result = fold_bn(model, data=data.calibration)
    eq = result.report.equivalence
    print(f"fold: {len(result.report.folded)} of {result.report.bn_layers} BN layers, max abs error "
          f"{eq.max_abs_error:.2e}, max rel error {eq.max_rel_error:.2e} on {eq.samples} calibration samples")
    models = {"unfolded": model, "folded": result.model}
    x1 = data.calibration.arrays(64)[0]
    for batch in (1, 64):
        xb = x1[:batch]
        fns = {}
        for name, m in models.items():
            f = tf.function(lambda x, m=m: m(x, training=False), reduce_retracing=True)
            f(xb)
            fns[name] = lambda f=f: f(xb).numpy()
        t = _median_interleaved(fns, 200 if batch == 1 else 40)
        print(f"keras (tf.function) batch {batch:>2}: unfolded {t['unfolded']:.3f} ms, folded {t['folded']:.3f} ms, "
              f"folded/unfolded {t['folded'] / t['unfolded']:.3f}x")
    sizes, interps = {}, {}
    for name, m in models.items():
        path = tmp / f"{name}.tflite"
        with quiet():
            path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())
        sizes[name] = path.stat().st_size
        it = Interpreter(model_path=str(path), num_threads=1)
        it.allocate_tensors()
        inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
        it.set_tensor(inp, x1[:1])
        interps[name] = (it, out)
        keras_path = tmp / f"{name}.keras"
        m.save(keras_path)
        sizes[f"{name}.keras"] = keras_path.stat().st_size
    t = _median_interleaved({k: (lambda it=it: it.invoke()) for k, (it, _) in interps.items()}, 500)
    print(f"tflite fp32 (LiteRT, XNNPACK, 1 thread) batch 1: unfolded {t['unfolded']:.3f} ms, folded "
          f"{t['folded']:.3f} ms, folded/unfolded {t['folded'] / t['unfolded']:.3f}x")
    print(f"size: tflite fp32 unfolded {sizes['unfolded']:,} B, folded {sizes['folded']:,} B "
          f"(delta {sizes['folded'] - sizes['unfolded']:+,} B, {sizes['folded'] / sizes['unfolded']:.4f}x); "
          f".keras unfolded {sizes['unfolded.keras']:,} B, folded {sizes['folded.keras']:,} B "
          f"(delta {sizes['folded.keras'] - sizes['unfolded.keras']:+,} B); parameters "
          f"{result.report.parameters_before:,} -> {result.report.parameters_after:,}")


CHILD = textwrap.dedent("""
    import os, sys, time
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edgeprep.config.calibrate import CalibrateConfig
    from edgeprep.data import Preprocess, load_dataset
    from edgeprep.models import load_model
    from edgeprep.stages.calibrate import calibrate
    model = load_model(sys.argv[1]).obj
    data = load_dataset(sys.argv[2], Preprocess(scale=1 / 255))
    start = time.perf_counter()
    result = calibrate(model, data, CalibrateConfig(samples=int(sys.argv[3])))
    seconds = time.perf_counter() - start
    status = {l.split(":")[0]: l.split()[1] for l in open("/proc/self/status") if l.startswith(("VmHWM", "Rss"))}
    print(status["VmHWM"], status["RssAnon"], status["RssFile"], f"{seconds:.1f}", result.telemetry.samples)
""")


def calibration_rss(tmp: Path) -> None:
    calib = np.load(ROOT / "calibration_data" / "fashion_mnist_calib.npz")["x"]
    npy = tmp / "large.npy"
    rng = np.random.default_rng(0)
    big = np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8, shape=(LARGE, *calib.shape[1:]))
    for i in range(0, LARGE, len(calib)):   # the real images, each repeat with a little noise
        n = min(len(calib), LARGE - i)
        big[i:i + n] = np.clip(calib[:n].astype(np.int16) + rng.integers(-8, 9, calib[:n].shape), 0, 255)
    big.flush()
    del big
    rows = []
    for n in (1_000, LARGE):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
        proc = subprocess.run([sys.executable, "-c", CHILD, str(EXAMPLE_MODEL), str(npy), str(n)], env=env,
                              capture_output=True, text=True, timeout=3600)
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        hwm, anon, file, seconds, samples = proc.stdout.split()[-5:]
        rows.append((int(samples), int(hwm) / 1024, float(seconds)))
        print(f"calibration, {int(samples):>6} samples from a memory-mapped .npy ({npy.stat().st_size / 2**20:.0f} "
              f"MiB file): peak RSS {int(hwm) / 1024:.0f} MiB (at the end: {int(anon) / 1024:.0f} MiB anonymous, "
              f"{int(file) / 1024:.0f} MiB file-backed, which includes the mapped data pages), {float(seconds):.1f} s")
    (n1, r1, s1), (n2, r2, s2) = rows
    print(f"peak RSS {n2:,} vs {n1:,} samples: {r2 / r1:.3f}x ({r2 - r1:+.0f} MiB for {n2 / n1:.0f}x the samples; "
          f"the samples alone as float32 would be {n2 * 784 * 4 / 2**20:.0f} MiB); time {s2 / s1:.1f}x")


def main(parts: tuple[str, ...] = ("latency", "rss")) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        if "latency" in parts:
            latency_and_size(Path(tmp))
        if "rss" in parts:
            calibration_rss(Path(tmp))
    return 0
