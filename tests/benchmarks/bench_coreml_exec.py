"""Core ML reference executor on the example model: speed per inference and agreement/SQNR per precision.

Side by side in one process, as ``edgeprep run`` builds them (BatchNorm folded first): fp32, fp16, int8 weights
(W8A16, the backend's configuration) and 6-bit palettized (k-means, coremltools.optimize on the fp16 ML Program)
executed by device_bench's coreml-ref runner on the full evaluation set against the Keras float model; latency is
the median of single inferences after warm-up, with LiteRT fp32 (XNNPACK, 2 threads) on the same samples as a
yardstick.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from conftest import EXAMPLE_MODEL, MANIFEST

RUNS, WARMUP = 200, 20


def _latency_ms(session, x: np.ndarray) -> tuple[float, float]:
    for i in range(WARMUP):
        session.run(x[i:i + 1])
    times = []
    for i in range(RUNS):
        start = time.perf_counter()
        session.run(x[i % len(x):i % len(x) + 1])
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.9 * len(times))]


def main() -> int:
    import coremltools as ct
    import coremltools.optimize as cto

    from device_bench import metrics
    from device_bench.runners import open_model
    from edgeprep.config.formats import CoreMLOptions, TFLiteOptions
    from edgeprep.data import load_data
    from edgeprep.models import load_model
    from edgeprep.stages.convert import convert
    from edgeprep.stages.fold import fold_bn
    from edgeprep.stages.verify import reference

    model = load_model(EXAMPLE_MODEL)
    data = load_data(MANIFEST)
    ref = reference(model, data.evaluation)
    model = replace(model, obj=fold_bn(model.obj, data=data.calibration).model, _saved_model_dir=None)
    x = np.concatenate([b for b, _ in data.evaluation.batches(256)])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = {p: convert(model, "coreml", p, CoreMLOptions(), tmp / f"m.{p}.mlpackage").path
                 for p in ("fp32", "fp16", "int8")}
        c = cto.coreml
        pal = c.palettize_weights(ct.models.MLModel(str(paths["fp16"]), skip_model_load=True),
                                  c.OptimizationConfig(c.OpPalettizerConfig(nbits=6, mode="kmeans",
                                                                            weight_threshold=2048)))
        paths["pal6"] = tmp / "m.pal6.mlpackage"
        pal.save(str(paths["pal6"]))
        tfl = convert(model, "tflite", "fp32", TFLiteOptions(), tmp / "m.fp32.tflite")
        litert = open_model("litert", str(tfl.path), threads=2)
        lit_ms, _ = _latency_ms(litert, x)
        for precision, path in paths.items():
            start = time.perf_counter()
            session = open_model("coreml-ref", str(path), threads=2)
            load_ms = (time.perf_counter() - start) * 1000
            p50, p90 = _latency_ms(session, x)
            start = time.perf_counter()
            out = session.run(x)
            per = (time.perf_counter() - start) * 1000 / len(x)
            m = metrics.compare(out, ref.outputs, ref.labels)
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            rows.append((precision, size, load_ms, p50, p90, per, m))
    print(f"example model, {ref.samples} evaluation images, float top-1 {ref.accuracy:.4f}; "
          f"LiteRT fp32 median {lit_ms:.2f} ms per inference")
    print(f"{'precision':<10}{'MiB':>6}{'load ms':>9}{'p50 ms':>8}{'p90 ms':>8}{'eval ms':>9}{'vs LiteRT':>10}"
          f"{'top-1':>8}{'agree':>8}{'SQNR dB':>9}{'max|err|':>10}")
    for precision, size, load_ms, p50, p90, per, m in rows:
        print(f"{precision:<10}{size / 2 ** 20:>6.2f}{load_ms:>9.0f}{p50:>8.2f}{p90:>8.2f}{per:>9.2f}"
              f"{p50 / lit_ms:>9.1f}x{m['accuracy']:>8.4f}{m['agreement']:>8.4f}{m['sqnr_db']:>9.1f}"
              f"{m['max_abs_error']:>10.2e}")
    return 0
