"""Conversion cost and artifact size per format x precision on the example model (one process, side by side)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from conftest import EXAMPLE_MODEL, MANIFEST


def main() -> int:
    from edgeprep.backends import get_backend
    from edgeprep.data import load_data
    from edgeprep.models import load_model
    from edgeprep.stages.convert import convert

    model = load_model(EXAMPLE_MODEL)
    data = load_data(MANIFEST)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("tflite", "openvino", "coreml"):
            backend = get_backend(fmt)
            sizes = {}
            for precision in ("fp32", "fp16", "int8"):
                start = time.perf_counter()
                art = convert(model, fmt, precision, backend.options_type(),
                              Path(tmp) / backend.artifact_name(model.name, precision),
                              calibration=data.calibration, workdir=Path(tmp))
                sizes[precision] = art.size_bytes
                rows.append((fmt, precision, art.size_bytes, art.size_bytes / sizes["fp32"],
                             time.perf_counter() - start))
    print(f"{'format':<10}{'precision':<11}{'bytes':>12}{'vs fp32':>10}{'convert s':>11}")
    for fmt, precision, size, ratio, seconds in rows:
        print(f"{fmt:<10}{precision:<11}{size:>12,}{ratio:>9.3f}x{seconds:>11.1f}")
    return 0
