"""Quantization accuracy on the example model's evaluation set: int8 PTQ TFLite, labelled QAT, label-free QAT.

Every figure is measured here, in one process, against the float Keras model on the committed 2,000-image
evaluation subset; the MobileNetV2 figures printed beside them are published numbers, not measured here.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

from conftest import EXAMPLE_MODEL, MANIFEST

GOALS = {"ptq": 0.3, "qat-labels": 0.1, "qat-distill": 0.3}
PUBLISHED = "published MobileNetV2 ImageNet top-1 drops (not measured here): TFLite PTQ -8.2, TFMOT QAT -1.0, " \
            "NNCF -0.8, coremltools W8A8 QAT -0.2 points"


def main() -> int:
    from edgeprep.config.formats import TFLiteOptions
    from edgeprep.data import load_data
    from edgeprep.models import load_model
    from edgeprep.stages.convert import convert
    from edgeprep.stages.quantize import quantize
    from edgeprep.targets import load_target

    target = load_target("litert-cpu")
    target = dataclasses.replace(target, formats=("tflite",), precisions=("int8",))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = load_model(EXAMPLE_MODEL)
        fp32 = convert(model, "tflite", "fp32", TFLiteOptions(), tmp / "m.fp32.tflite")
        # label-free QAT: the same data with the labels of the calibration split removed
        data = load_data(MANIFEST)
        import numpy as np

        x_cal, _ = data.calibration.arrays()
        np.savez(tmp / "unlabelled.npz", x=x_cal)
        ev = Path(MANIFEST).parent / "fashion_mnist_eval.npz"
        (tmp / "unlabelled.toml").write_text(f'calibration = "unlabelled.npz"\nevaluation = "{ev}"\n'
                                             f'[preprocess]\nscale = 0.00392156862745098\n')
        runs = [("ptq", "ptq", MANIFEST, {}), ("qat-labels", "qat", MANIFEST, {"labels": True}),
                ("qat-distill", "qat", tmp / "unlabelled.toml", {})]
        for name, method, manifest, kw in runs:
            start = time.perf_counter()
            r = quantize(EXAMPLE_MODEL, target, manifest, tmp / name, method=method, **kw)
            a = r.report["artifacts"][0]
            m = a["metrics"]
            rows.append((name, m["accuracy"], m["accuracy_drop"], m["agreement"], m["sqnr_db"], a["size_bytes"],
                         a["inspection"].get("all_int8"), time.perf_counter() - start,
                         r.report["reference"]["accuracy"]))
    print(f"float top-1 {rows[0][8]:.4f} on the 2,000-image evaluation subset; fp32 TFLite {fp32.size_bytes:,} bytes")
    print(f"{'run':<13}{'top-1':>8}{'drop pts':>10}{'goal':>7}{'agree':>8}{'SQNR dB':>9}{'size':>11}{'vs fp32':>9}"
          f"{'all-int8':>10}{'s':>6}")
    for name, acc, drop, agree, sqnr, size, allint, sec, _ in rows:
        print(f"{name:<13}{acc:>8.4f}{drop:>+10.2f}{GOALS[name]:>7.1f}{agree:>8.4f}{sqnr:>9.1f}{size:>11,}"
              f"{size / fp32.size_bytes:>8.3f}x{str(allint):>10}{sec:>6.0f}")
    print("goals: drop <= goal points; int8 TFLite <= 0.27x fp32 size")
    print(PUBLISHED)
    return 0
