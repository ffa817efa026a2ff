"""Quantization accuracy on the example model's evaluation set: int8 PTQ TFLite, labelled QAT, label-free QAT.

Every figure is measured here, in one process, against the float Keras model on the committed 2,000-image
evaluation subset. Calibration and QAT fine-tuning use only the committed 1,000 calibration images (training
split); the label-free run gets the same images with the labels removed. The MobileNetV2 figures printed below the
table are published numbers, not measured here.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
from conftest import DATA_DIR, EXAMPLE_MODEL, MANIFEST

MAX_SIZE_RATIO = 0.27
MAX_DROP = {"ptq": 0.3, "qat-labels": 0.1, "qat-distill": 0.3}
PUBLISHED = "published MobileNetV2 ImageNet top-1 drops (not measured here): TFLite PTQ -8.2, TFMOT QAT -1.0, " \
            "NNCF -0.8, coremltools W8A8 QAT -0.2 points"


def _unlabelled_manifest(tmp: Path) -> Path:
    """The calibration images without their labels (raw uint8, preprocessed by the manifest as the original)."""
    with np.load(DATA_DIR / "fashion_mnist_calib.npz") as z:
        np.savez(tmp / "unlabelled.npz", x=z["x"])
    ev = DATA_DIR / "fashion_mnist_eval.npz"
    (tmp / "unlabelled.toml").write_text(f'calibration = "unlabelled.npz"\nevaluation = "{ev}"\n'
                                         f'[preprocess]\nscale = 0.00392156862745098\n')
    return tmp / "unlabelled.toml"


def main() -> int:
    from edgeprep.config.formats import TFLiteOptions
    from edgeprep.models import load_model
    from edgeprep.pipelines.quantize import quantize
    from edgeprep.stages.convert import convert
    from edgeprep.targets import load_target

    target = load_target("litert-cpu")
    target = dataclasses.replace(target, formats=("tflite",), precisions=("int8",))
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fp32 = convert(load_model(EXAMPLE_MODEL), "tflite", "fp32", TFLiteOptions(), tmp / "m.fp32.tflite")
        plan = [("ptq", "ptq", MANIFEST, {}), ("qat-labels", "qat", MANIFEST, {"labels": True}),
                ("qat-distill", "qat", _unlabelled_manifest(tmp), {})]
        for name, method, manifest, kw in plan:
            start = time.perf_counter()
            r = quantize(EXAMPLE_MODEL, target, manifest, tmp / name, method=method, **kw)
            a = r.report["artifacts"][0]
            qat = r.report["quantize"].get("qat", {})
            runs[name] = {**a["metrics"], "size": a["size_bytes"], "ratio": a["size_bytes"] / fp32.size_bytes,
                          "all_int8": a["inspection"].get("all_int8"), "seconds": time.perf_counter() - start,
                          "float": r.report["reference"]["accuracy"], "objective": qat.get("objective", "-"),
                          "steps": qat.get("steps", 0)}
    ref = runs["ptq"]["float"]
    print(f"float top-1 {ref:.4f} on the 2,000-image evaluation subset; fp32 TFLite {fp32.size_bytes:,} bytes; "
          f"calibration/fine-tuning on the 1,000 calibration images only")
    print(f"\n{'run':<13}{'objective':<26}{'steps':>6}{'top-1':>8}{'drop pts':>10}{'agree':>8}{'SQNR dB':>9}"
          f"{'size':>11}{'vs fp32':>9}{'all-int8':>10}{'s':>6}")
    for name, m in runs.items():
        print(f"{name:<13}{m['objective'][:25]:<26}{m['steps']:>6}{m['accuracy']:>8.4f}{m['accuracy_drop']:>+10.2f}"
              f"{m['agreement']:>8.4f}{m['sqnr_db']:>9.1f}{m['size']:>11,}{m['ratio']:>8.3f}x"
              f"{str(m['all_int8']):>10}{m['seconds']:>6.0f}")
    goals = []
    for name, m in runs.items():
        goals.append((f"{name}: top-1 drop (points)", f"{m['accuracy_drop']:+.2f}", f"<= {MAX_DROP[name]}",
                      m["accuracy_drop"] <= MAX_DROP[name] + 1e-9))
        goals.append((f"{name}: int8 TFLite size vs fp32", f"{m['ratio']:.3f}x", f"<= {MAX_SIZE_RATIO}x",
                      m["ratio"] <= MAX_SIZE_RATIO))
        if name.startswith("qat"):
            goals.append((f"{name}: every compute op int8", str(m["all_int8"]), "True", bool(m["all_int8"])))
    d = runs["qat-distill"]
    goals.append(("qat-distill (no labels): top-1 agreement", f"{d['agreement']:.4f}", "reported", None))
    goals.append(("qat-distill (no labels): output SQNR (dB)", f"{d['sqnr_db']:.1f}", "reported", None))
    print(f"\n{'goal':<44}{'measured':>10}  {'goal':<10}{'met':>6}")
    for what, value, goal, met in goals:
        print(f"{what:<44}{value:>10}  {goal:<10}{'-' if met is None else ('yes' if met else 'MISSED'):>6}")
    missed = [g[0] for g in goals if g[3] is False]
    print(f"\n{'goals missed: ' + '; '.join(missed) if missed else 'every goal met'}")
    print(PUBLISHED)
    return 0
