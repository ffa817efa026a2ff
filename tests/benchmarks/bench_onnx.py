"""ONNX input vs the Keras route, format by format, on one MobileNetV3-style classifier.

A tiny MobileNetV3-style net (hard-swish, depthwise inverted residuals, squeeze-excite with hard-sigmoid, BatchNorm
after every conv) is trained for about a minute on the committed Fashion-MNIST calibration images (grey copied to
RGB), then given to edgeprep twice: as the ``.keras`` file, and exported as a PyTorch export looks (NCHW, input
``[N, 3, H, W]`` with dynamic H/W, BatchNormalization nodes unfused; ``tests/onnx_models.export_unfused``). Each route
folds BatchNorm and converts to every format and precision; each artifact is verified against its route's float
reference (Keras for the .keras file, ONNX Runtime on the .onnx for the ONNX route) on the committed evaluation
images. Printed: agreement (top-1 equal to the reference), SQNR, size and the median latency of 50 batch-1 runs in
this process (2 threads).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from conftest import MANIFEST

EPOCHS = 12
SAMPLES = 1000          # evaluation samples verified per artifact


def train(data):
    import keras
    import onnx_models as om

    model = om.mobilenet_v3_style(channels=3)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    x, y = data.calibration.arrays()
    start = time.perf_counter()
    model.fit(x, y, epochs=EPOCHS, batch_size=32, verbose=0)
    return model, time.perf_counter() - start


def latency_ms(art, x) -> float:
    from device_bench.runners import open_model

    session = open_model(art.runtime, str(art.path), 2, art.runtime_options)
    for _ in range(5):
        session.run(x[:1])
    times = []
    for _ in range(50):
        t = time.perf_counter()
        session.run(x[:1])
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def route(model_path: Path, tmp: Path, label: str) -> list[tuple]:
    from edgeprep.backends import get_backend
    from edgeprep.config.calibrate import CalibrateConfig
    from edgeprep.config.gates import Thresholds
    from edgeprep.errors import EdgeprepError
    from edgeprep.pipelines.run import load_inputs
    from edgeprep.stages.convert import convert
    from edgeprep.stages.prepare import prepare
    from edgeprep.stages.verify import reference, verify

    model, data = load_inputs(model_path, MANIFEST, cli_preprocess={"channels": 3})
    prepared = prepare(model, CalibrateConfig(enabled=False), data)
    ref = reference(prepared.reference, data.evaluation, SAMPLES)
    x = data.evaluation.arrays(8)[0]
    rows = []
    for fmt in ("tflite", "openvino", "coreml"):
        backend = get_backend(fmt)
        for precision in ("fp32", "fp16", "int8"):
            out = tmp / label / backend.artifact_name(model.name, precision)
            out.parent.mkdir(exist_ok=True)
            try:
                art = convert(prepared.to_convert, fmt, precision, backend.options_type(), out,
                              calibration=data.calibration, workdir=tmp)
            except EdgeprepError as exc:
                rows.append((label, fmt, precision, None, None, None, None, str(exc)[:90]))
                continue
            m = verify(art, ref, data.evaluation, Thresholds())["metrics"] or {}
            ms = latency_ms(art, x) if art.runtime else None
            rows.append((label, fmt, precision, m.get("agreement"), m.get("sqnr_db"), art.size_bytes, ms, ""))
    return rows, ref.accuracy, model


def main() -> int:
    try:
        import onnx_models as om
    except ImportError as exc:
        print(f"cannot run: {exc}")
        return 1
    from edgeprep.data import load_data

    data = load_data(MANIFEST, cli_preprocess={"channels": 3})
    model, seconds = train(data)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model.save(tmp / "mnv3.keras")
        onnx_path = om.export_unfused(model, tmp / "mnv3.onnx")
        om.assert_same(model, onnx_path, data.evaluation.arrays(64)[0])
        keras_rows, keras_acc, _ = route(tmp / "mnv3.keras", tmp, "keras")
        start = time.perf_counter()
        onnx_rows, onnx_acc, handle = route(onnx_path, tmp, "onnx")
        onnx_seconds = time.perf_counter() - start
    agreement = handle.onnx.agreement
    print(f"MobileNetV3-style, {model.count_params():,} parameters, trained {EPOCHS} epochs in {seconds:.0f} s; "
          f"float top-1 on {SAMPLES} evaluation images: Keras {keras_acc:.4f}, ONNX Runtime {onnx_acc:.4f}")
    print(f"ONNX graph: {sum(n for _, n in handle.onnx.ops)} nodes, {len(handle.onnx.bn)} unfused BatchNorm; "
          f"converted Keras graph vs ONNX Runtime at load: max |error| {agreement.max_abs:.2e} "
          f"({agreement.max_rel:.2e} relative); ONNX route total {onnx_seconds:.0f} s")
    print(f"{'route':<7}{'format':<10}{'prec':<6}{'agreement':>10}{'SQNR dB':>9}{'bytes':>10}{'ms':>8}  note")
    for label, fmt, precision, agr, sqnr, size, ms, note in keras_rows + onnx_rows:
        def f(v, spec):
            return format(v, spec) if v is not None else "-"
        print(f"{label:<7}{fmt:<10}{precision:<6}{f(agr, '.4f'):>10}{f(sqnr, '.1f'):>9}{f(size, ','):>10}"
              f"{f(ms, '.3f'):>8}  {note}")
    return 0
