"""Is int8 faster than fp32? (issue 16 section 3): int8 against fp32 latency, per model and runtime, in one run.

Models at 96x96x3, 10 classes: Keras Applications ``MobileNetV2(alpha=0.35)``, ``MobileNetV3Small`` and
``EfficientNetB0`` (``weights=None``: random initialization, nothing is downloaded; speed does not depend on the
weights' values) and the committed trained ``examples/hard/mobilenetv3_small_fmnist.keras`` (MobileNetV3Small,
alpha 0.75). Calibration: the first ``CALIBRATION`` images of calibration_data/fashion_mnist_96rgb.toml (28x28
grey resized to 96x96 RGB by edgeprep's [preprocess]).

Artifacts per model, all from the same float Keras model:
- LiteRT: fp32 and int8 from edgeprep's convert stage (``TFLiteOptions()``, the vendor engine, int8 I/O: HARD_SWISH
  runs in float between int8 tensors, ``[tflite] float_hard_swish``), for models with hard-swish the same with
  ``float_hard_swish = false`` (int8 HARD_SWISH, what edgeprep made before), and the plain
  ``tf.lite.TFLiteConverter`` full-integer PTQ (Optimize.DEFAULT, TFLITE_BUILTINS_INT8, int8 I/O);
- OpenVINO: fp32 IR and int8 IR (NNCF, edgeprep's route with ``OpenVINOOptions()``), both run with
  INFERENCE_PRECISION_HINT f32 (the CPU plugin otherwise runs bf16 on AVX512-BF16 CPUs).

Timing, 1 thread everywhere, ``ROUNDS`` interleaved rounds. Per round: one device_bench process per artifact and
one vendor-tool process per artifact (``litert-benchmark`` or ``benchmark_app``), each timing its artifact alone;
the artifacts' order rotates and the two tools' order alternates from round to round. The ratio int8/fp32 is taken
per round (between that round's processes of the same tool) and printed as min/median/max over the n rounds; the
p50 columns are the medians over rounds of each process's median latency. Iteration counts give about
``TARGET_SECONDS`` of timed inference per artifact and process, from a pilot: one ``device_bench --versus``
process per int8 artifact holding it and the fp32 one, iterations alternating (A B B A). The pilot also reports
LiteRT's delegation (partitions, the ops XNNPACK did not take) and its own int8/fp32 ratio, printed beside the
table ("versus") but not judged: alternating two different models iteration by iteration makes each evict the
other's weights from the caches (MobileNetV3Small: fp32 0.44 ms alone, 0.65 ms alternating), so that ratio is
biased; processes that each run one artifact are not.

Goals (issue 16), judged on the device_bench rows (the vendor rows beside them): int8 p50 <= 0.6 x fp32 on LiteRT
XNNPACK, int8 <= fp32 on OpenVINO CPU, no accuracy change beyond the int8 artifact's own (top-1 of each artifact
on the evaluation images, for the trained model). Then, for the OpenVINO int8 artifacts that miss their goal,
OpenVINO's PERF_COUNT profile of int8 and fp32 side by side (the top op types). LiteRT's Python tools have no
per-op timing (litert-benchmark has no --enable_op_profiling): when MobileNetV3Small misses on LiteRT, the same
network with ReLU in place of hard-swish is converted and timed beside it, which isolates what the 19 int8
HARD_SWISH ops XNNPACK cannot take (and the 20 partitions they cut the graph into) cost.

    python tests/benchmarks/run.py int8_speed
    EDGEPREP_BENCH_INT8_MODELS=mnv3s,effb0 ...      # a subset (keys: mnv2, mnv3s, effb0, fmnist)
    EDGEPREP_BENCH_INT8_ROUNDS=9 ...                # more rounds (default 5)
    EDGEPREP_BENCH_INT8_DIR=/tmp/int8 ...           # keep the artifacts there and reuse them on the next run
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from conftest import DATA_DIR

ROOT = Path(__file__).resolve().parent.parent.parent
RGB96 = DATA_DIR / "fashion_mnist_96rgb.toml"
TRAINED = ROOT / "examples" / "hard" / "mobilenetv3_small_fmnist.keras"
BIN = Path(sys.executable).parent
THREADS = 1
ROUNDS = int(os.environ.get("EDGEPREP_BENCH_INT8_ROUNDS", "5"))
CALIBRATION = 200            # calibration images, the same for every converter
TARGET_SECONDS = 0.3         # timed inference per artifact and process
PILOT_RUNS = 100
WARMUP = 10
EVAL_IMAGES = 1000           # top-1 of the trained model's artifacts
GOALS = {"litert": 0.6, "openvino": 1.0}
MODELS = {                   # key -> (name, Keras Applications builder or None for the committed trained model)
    "mnv2": ("MobileNetV2 a0.35", "MobileNetV2"),
    "mnv3s": ("MobileNetV3Small", "MobileNetV3Small"),
    "effb0": ("EfficientNetB0", "EfficientNetB0"),
    "fmnist": ("mobilenetv3_small_fmnist", None),
}


# ---- artifacts ----------------------------------------------------------------------------------------------

def _keras_file(key: str, d: Path) -> Path:
    if MODELS[key][1] is None:
        return TRAINED
    import keras

    keras.utils.set_random_seed(0)
    build = getattr(keras.applications, MODELS[key][1])
    kwargs = {"alpha": 0.35} if key == "mnv2" else {}
    model = build(input_shape=(96, 96, 3), weights=None, classes=10, **kwargs)
    path = d / f"{key}.keras"
    model.save(path)
    return path


def _plain_int8(keras_model, calib_x: np.ndarray, out: Path) -> None:
    """``tf.lite.TFLiteConverter``'s own full-integer PTQ: what a user gets without edgeprep."""
    import tensorflow as tf

    from edgeprep._util import quiet

    def representative():
        for i in range(len(calib_x)):
            yield [calib_x[i:i + 1]]

    conv = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    with quiet():
        out.write_bytes(conv.convert())


def artifacts(key: str, d: Path, calib) -> tuple[dict[str, Path], dict[str, float]]:
    """kind -> artifact path for one model (reused when all exist in ``d``), and the seconds each conversion took."""
    from edgeprep.config.formats import OpenVINOOptions, TFLiteOptions
    from edgeprep.models import load_model
    from edgeprep.stages.convert import convert

    paths = {"tflite fp32": d / f"{key}.fp32.tflite", "tflite int8": d / f"{key}.int8.tflite",
             "tflite int8 hswish": d / f"{key}.hswish.int8.tflite",
             "tflite plain int8": d / f"{key}.plain.int8.tflite", "openvino fp32": d / f"{key}.fp32.xml",
             "openvino int8": d / f"{key}.int8.xml"}
    if all(p.exists() for k, p in paths.items() if k != "tflite int8 hswish"):
        return {k: p for k, p in paths.items() if p.exists()}, {}
    seconds = {}
    handle = load_model(_keras_file(key, d))
    work = d / f"work-{key}"
    work.mkdir(exist_ok=True)
    floated = True
    for kind, path in list(paths.items()):
        start = time.perf_counter()
        if kind == "tflite plain int8":
            _plain_int8(handle.obj, calib.arrays(limit=CALIBRATION)[0], path)
        elif kind == "tflite int8 hswish":
            if not floated:         # no hard-swish: the same artifact as "tflite int8"
                del paths[kind]
                continue
            convert(handle, "tflite", "int8", TFLiteOptions(float_hard_swish=False), path, calibration=calib,
                    calibration_samples=CALIBRATION, workdir=work)
        else:
            fmt, precision = kind.split()
            opts = TFLiteOptions() if fmt == "tflite" else OpenVINOOptions()
            art = convert(handle, fmt, precision, opts, path, calibration=calib, calibration_samples=CALIBRATION,
                          workdir=work)
            if kind == "tflite int8":
                floated = bool(art.quantization.get("float_hard_swish"))
        seconds[kind] = time.perf_counter() - start
    return paths, seconds


# ---- timing -------------------------------------------------------------------------------------------------

def device_bench(path: Path, runs: int, runtime: str) -> float:
    """The median latency of one device_bench process timing ``path`` alone."""
    from device_bench.bench import Job
    from device_bench.harness import benchmark

    result = benchmark(Job(str(path), runtime, THREADS, runs=runs, warmup=WARMUP), timeout=900)
    return result["bench"]["latency_ms"]["p50"]


def vendor_litert(path: Path, runs: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "litert.json"
        subprocess.run([str(BIN / "litert-benchmark"), "--model", str(path), "--num_threads", str(THREADS),
                        "--num_runs", str(runs), "--warmup_runs", str(WARMUP), "--result_json", str(out)],
                       capture_output=True, text=True, check=True, timeout=900)
        return float(json.loads(out.read_text())["latency"]["median_ms"])


def vendor_openvino(path: Path, runs: int) -> float:
    # -nthreads needs -hint none: one stream, synchronous requests, f32 like device_bench's runner.
    done = subprocess.run([str(BIN / "benchmark_app"), "-m", str(path), "-d", "CPU", "-hint", "none", "-nstreams",
                           "1", "-api", "sync", "-nthreads", str(THREADS), "-niter", str(runs), "-infer_precision",
                           "f32"], capture_output=True, text=True, check=True, timeout=900)
    value, unit = re.search(r"Median:\s+([\d.]+) (ms|us)", done.stdout + done.stderr).groups()
    return float(value) / (1000.0 if unit == "us" else 1.0)


VENDOR = {"litert": ("litert-benchmark", vendor_litert), "openvino": ("benchmark_app", vendor_openvino)}


def pilot(int8: Path, fp32: Path, runtime: str) -> tuple[int, dict, float]:
    """One device_bench process holding both, iterations alternating (``--versus``, ``PILOT_RUNS`` each): the
    iterations for ``TARGET_SECONDS`` of the slower one, the int8 artifact's runtime description, and the ratio
    int8/fp32 measured that way (shown beside the table: per-iteration alternation makes the two models evict each
    other's weights from the caches, which does not happen when each runs alone)."""
    from device_bench.bench import Job
    from device_bench.harness import benchmark

    r = benchmark(Job(str(int8), runtime, THREADS, runs=PILOT_RUNS, warmup=WARMUP, versus=str(fp32)), timeout=900)
    mine, other = r["bench"]["latency_ms"]["p50"], r["versus"]["latency_ms"]["p50"]
    runs = int(min(3000, max(30, TARGET_SECONDS * 1e3 / max(mine, other))))
    return runs, r["runtime"], mine / other


def spread(values: list[float]) -> str:
    return f"{min(values):.3f}/{statistics.median(values):.3f}/{max(values):.3f}"


def time_model(name: str, paths: dict[str, Path]) -> list[dict]:
    """Every int8 artifact of one model against its runtime's fp32 artifact, both tools, ``ROUNDS`` rounds: per
    round one process per artifact and tool, each timing its artifact alone; the artifacts' order rotates and the
    tools' order alternates from round to round."""
    lite = {"edgeprep int8": paths["tflite int8"], "plain TFLiteConverter int8": paths["tflite plain int8"]}
    if "tflite int8 hswish" in paths:
        lite["edgeprep int8, int8 HARD_SWISH"] = paths["tflite int8 hswish"]
    groups = {"litert": (paths["tflite fp32"], lite),
              "openvino": (paths["openvino fp32"], {"edgeprep int8 (NNCF)": paths["openvino int8"]})}
    rows = []
    for runtime, (fp32, int8s) in groups.items():
        runs, versus = {}, {}
        for label, int8 in int8s.items():
            runs[label], described, versus[label] = pilot(int8, fp32, runtime)
            if runtime == "litert":
                d = described.get("delegation", {})
                print(f"  {name} {label}: XNNPACK partitions {d.get('partitions')}, {d.get('ops')} ops, "
                      f"not delegated {d.get('not_delegated') or 'none'}", flush=True)
            else:
                print(f"  {name} {label}: execution precision {described.get('execution_precision')}, node "
                      f"precisions {described.get('node_precisions')}", flush=True)
        n = max(runs.values())
        tool, vendor = VENDOR[runtime]
        tools = {"device_bench": lambda path, k: device_bench(path, k, runtime), tool: vendor}
        pairs = {(t, label): [] for t in tools for label in int8s}
        start = time.perf_counter()
        for rnd in range(ROUNDS):
            order = [("fp32", fp32)] + list(int8s.items())
            order = order[rnd % len(order):] + order[:rnd % len(order)]
            for t in (list(tools) if rnd % 2 == 0 else list(tools)[::-1]):
                medians = {label: tools[t](path, n) for label, path in order}
                for label in int8s:
                    pairs[t, label].append((medians[label], medians["fp32"]))
        print(f"  {name} {runtime}: {ROUNDS} rounds of {n} runs in {time.perf_counter() - start:.0f} s", flush=True)
        for label, path in int8s.items():
            for t in tools:
                p = pairs[t, label]
                rows.append({"model": name, "runtime": runtime, "tool": t, "int8": label, "runs": n,
                             "int8_ms": statistics.median(a for a, _ in p),
                             "fp32_ms": statistics.median(b for _, b in p),
                             "ratios": [a / b for a, b in p], "path": path, "fp32_path": fp32,
                             "versus": versus[label]})
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\nint8 vs fp32 median latency, {THREADS} thread, {ROUNDS} interleaved rounds (ratio: per round, "
          "min/median/max; p50: median over rounds)")
    print(f"{'model':<25}{'runtime':<9}{'int8 artifact':<32}{'tool':<17}{'runs':>5}{'int8 ms':>9}{'fp32 ms':>9}"
          f"{'int8/fp32 min/med/max':>23}  {'goal':<7}{'met':>6}{'versus':>8}")
    for r in rows:
        goal = GOALS[r["runtime"]]
        met = statistics.median(r["ratios"]) <= goal
        print(f"{r['model']:<25}{r['runtime']:<9}{r['int8']:<32}{r['tool']:<17}{r['runs']:>5}{r['int8_ms']:>9.3f}"
              f"{r['fp32_ms']:>9.3f}{spread(r['ratios']):>23}  {'<= ' + format(goal, 'g'):<7}"
              f"{'yes' if met else 'MISSED':>6}{format(r['versus'], '.3f') if r['tool'] == 'device_bench' else '':>8}")
    print(f"   n = {ROUNDS} rounds per row. versus: int8/fp32 of the pilot, one device_bench --versus process "
          f"({PILOT_RUNS} iterations each, alternating A B B A in one loop), for comparison only")


# ---- accuracy and where the time goes --------------------------------------------------------------------------

def accuracy(paths: dict[str, Path], handle_path: Path) -> None:
    """Top-1 of the trained model's float Keras model and of each artifact on ``EVAL_IMAGES`` evaluation images,
    and each int8 artifact's top-1 agreement with its runtime's fp32 artifact."""
    from device_bench.runners import get_runner
    from edgeprep.data import load_data
    from edgeprep.models import load_model

    x, y = load_data(RGB96).evaluation.arrays(limit=EVAL_IMAGES)
    keras_top1 = np.argmax(load_model(handle_path).predict(x), axis=1)
    print(f"\naccuracy of the trained model's artifacts ({len(x)} evaluation images; Keras float top-1 "
          f"{np.mean(keras_top1 == y):.4f})")
    print(f"{'artifact':<26}{'top-1':>8}{'vs Keras':>10}{'agree w/ fp32':>15}")
    preds = {}
    for kind, path in paths.items():
        runtime = "litert" if path.suffix == ".tflite" else "openvino"
        session = get_runner(runtime)().open(str(path), threads=2)
        preds[kind] = np.argmax(session.run(x), axis=1)
        fp32 = preds.get(f"{kind.split()[0]} fp32")
        top1 = np.mean(preds[kind] == y)
        print(f"{kind:<26}{top1:>8.4f}{(top1 - np.mean(keras_top1 == y)) * 100:>+9.2f}p"
              f"{np.mean(preds[kind] == fp32):>15.4f}")


def profile_openvino(row: dict) -> None:
    from device_bench.bench import Job
    from device_bench.harness import benchmark

    prof = {}
    for precision, path in (("int8", row["path"]), ("fp32", row["fp32_path"])):
        r = benchmark(Job(str(path), "openvino", THREADS, runs=50, warmup=WARMUP, profile=True), timeout=900)
        prof[precision] = r["profile"]
    print(f"\n{row['model']} OpenVINO: where one inference goes (PERF_COUNT real time, {prof['int8']['runs']} runs, "
          f"1 thread): int8 {prof['int8']['total_ms']:.3f} ms, fp32 {prof['fp32']['total_ms']:.3f} ms")
    fp32 = {t["type"]: t for t in prof["fp32"]["by_type"]}
    print(f"   {'op type (int8 graph)':<26}{'nodes':>6}{'int8 ms':>9}{'share':>7}   {'fp32 ms':>9}{'nodes':>6}")
    for t in prof["int8"]["by_type"][:8]:
        f = fp32.get(t["type"], {})
        print(f"   {t['type']:<26}{t['count']:>6}{t['ms']:>9.3f}{t['share']:>7.1%}   {f.get('ms', 0.0):>9.3f}"
              f"{f.get('count', 0):>6}")
    print("   slowest int8 nodes: " + "; ".join(f"{n['node'][:40]} ({n['type']}/{n['exec_type']}) {n['ms']:.3f} ms"
                                               for n in prof["int8"]["slowest"][:5]))


def hard_swish_share(d: Path, calib, paths: dict[str, Path], runs: int) -> None:
    """What MobileNetV3Small's int8 HARD_SWISH costs on XNNPACK, which has no int8 HARD_SWISH: the same network with
    ReLU in place of hard-swish (the private ``keras.src.applications.mobilenet_v3.hard_swish`` patched while it is
    built; hard-swish written out as ``x * relu6(x + 3) / 6`` does not help, the converter fuses it back into
    HARD_SWISH), int8 by the plain converter, timed alone beside the stock fp32 and int8 artifacts and edgeprep's
    int8 with HARD_SWISH in float, interleaved."""
    import keras

    from device_bench.runners import get_runner

    try:
        import keras.src.applications.mobilenet_v3 as mv3
        stock = mv3.hard_swish
    except (ImportError, AttributeError) as exc:
        print(f"   hard-swish attribution skipped: {exc}")
        return
    out = d / "mnv3s-relu.plain.int8.tflite"
    if not out.exists():
        mv3.hard_swish = lambda x: keras.layers.ReLU()(x)
        try:
            keras.utils.set_random_seed(0)
            model = keras.applications.MobileNetV3Small(input_shape=(96, 96, 3), weights=None, classes=10)
        finally:
            mv3.hard_swish = stock
        _plain_int8(model, calib.arrays(limit=CALIBRATION)[0], out)
    session = get_runner("litert")().open(str(out), threads=THREADS)
    parts = session.describe()["delegation"]["partitions"]
    arts = {"fp32": paths["tflite fp32"], "int8, HARD_SWISH (stock)": paths["tflite plain int8"],
            "int8, HARD_SWISH in float": paths["tflite int8"], "int8, ReLU instead": out}
    p50 = {k: [] for k in arts}
    order = list(arts)
    for rnd in range(ROUNDS):
        for k in order[rnd % len(order):] + order[:rnd % len(order)]:
            p50[k].append(device_bench(arts[k], runs, "litert"))
    print(f"\nMobileNetV3Small on LiteRT: the int8 HARD_SWISH ops (device_bench, {ROUNDS} interleaved rounds, "
          f"{runs} runs, each artifact alone)")
    for k in arts:
        ratios = [a / b for a, b in zip(p50[k], p50["fp32"])]
        print(f"   {k:<26}{statistics.median(p50[k]):>8.3f} ms   /fp32 {spread(ratios)}")
    hs, relu = statistics.median(p50["int8, HARD_SWISH (stock)"]), statistics.median(p50["int8, ReLU instead"])
    print(f"   the ReLU variant is fully delegated ({parts} partition(s) instead of 20): HARD_SWISH and its partition "
          f"boundaries take {hs - relu:.3f} ms of {hs:.3f} ms ({(hs - relu) / hs:.0%}) of the int8 inference")


# ---- main ---------------------------------------------------------------------------------------------------

def main() -> int:
    missing = [t for t in ("litert-benchmark", "benchmark_app") if not (BIN / t).exists()]
    if missing:
        print(f"missing vendor tools: {', '.join(missing)} (pip install ai-edge-litert openvino)")
        return 1
    keys = [k.strip() for k in os.environ.get("EDGEPREP_BENCH_INT8_MODELS", ",".join(MODELS)).split(",") if k]
    unknown = [k for k in keys if k not in MODELS]
    if unknown:
        print(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
        return 2
    if "fmnist" in keys and not TRAINED.exists():
        print(f"{TRAINED} is missing (python examples/train_hard_models.py --all)")
        return 1
    os.environ.setdefault("EDGEPREP_HISTORY", os.devnull)
    from edgeprep.data import load_data

    calib = load_data(RGB96).calibration
    keep = os.environ.get("EDGEPREP_BENCH_INT8_DIR")
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as scratch:
        d = Path(keep) if keep else Path(scratch)
        d.mkdir(parents=True, exist_ok=True)
        rows, all_paths = [], {}
        for key in keys:
            start = time.perf_counter()
            paths, seconds = artifacts(key, d, calib)
            all_paths[key] = paths
            made = ", ".join(f"{k} {s:.0f} s" for k, s in seconds.items()) or f"reused from {d}"
            print(f"{MODELS[key][0]}: artifacts in {time.perf_counter() - start:.0f} s ({made})", flush=True)
            rows += time_model(MODELS[key][0], paths)
        print_table(rows)
        if "fmnist" in keys:
            accuracy(all_paths["fmnist"], TRAINED)
        judged = [r for r in rows if r["tool"] == "device_bench" and "int8 HARD_SWISH" not in r["int8"]]
        missed = [r for r in judged if statistics.median(r["ratios"]) > GOALS[r["runtime"]]]
        print(f"\ngoals missed (device_bench rows, the int8 HARD_SWISH comparison rows not judged): {len(missed)} of "
              f"{len(judged)}")
        if missed:
            print("\nwhere the int8 time goes, for the artifacts that miss the goal")
        for r in missed:
            if r["runtime"] == "openvino":
                profile_openvino(r)
        mnv3 = [r for r in rows if r["model"] == MODELS["mnv3s"][0] and r["runtime"] == "litert"
                and r["tool"] == "device_bench" and statistics.median(r["ratios"]) > GOALS["litert"]]
        if mnv3:
            hard_swish_share(d, calib, all_paths["mnv3s"], mnv3[0]["runs"])
    return 0
