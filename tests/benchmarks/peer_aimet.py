"""AIMET-ONNX post-training quantization of an ONNX classifier, run by ``ptq_peers.py`` in its own interpreter.

AIMET-ONNX (``aimet-onnx`` on PyPI) brings PyTorch (with its CUDA libraries) and its own ONNX Runtime custom ops,
so it lives in a separate virtual environment (``.venv-peers``); this script runs there, on files only:

    .venv-peers/bin/python tests/benchmarks/peer_aimet.py --model m.onnx --calib calib.npy --eval eval.npy \\
        --out DIR [--modes w8a8,w8a16] [--iterations 1000] [--batch 32]

For each mode: Cross-Layer Equalization (``equalize_model``: batch-norm folding, cross-layer scaling, high-bias
fold) on the float model, a ``QuantizationSimModel`` (per-channel int8 weights, int8 or int16 activations, AIMET's
default configuration and min-max scheme), AdaRound on the weights (``apply_adaround``), activation encodings from
the calibration samples (``compute_encodings``), then:

- ``DIR/<mode>.onnx``: the sim as a plain ONNX QDQ model (``to_onnx_qdq``, weights pre-quantized), which the
  parent measures in ONNX Runtime like every other ONNX artifact;
- ``DIR/<mode>.sim.npy``: the sim session's own outputs on the evaluation samples (AIMET's evaluation route), so
  the parent can report how far the QDQ export is from what AIMET simulated.

``DIR/results.json`` holds, per mode, the wall times (CLE, AdaRound, encodings, export, total) or the error.
Nothing here imports TensorFlow or edgeprep.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

MODES = {"w8a8": 8, "w8a16": 16}


def _batches(x: np.ndarray, size: int, name: str) -> list[dict[str, np.ndarray]]:
    return [{name: np.ascontiguousarray(x[i:i + size])} for i in range(0, len(x), size)]


def run_mode(mode: str, model_path: Path, calib: np.ndarray, evalx: np.ndarray | None, out: Path,
             iterations: int, batch: int) -> dict:
    import aimet_onnx
    import onnx
    from aimet_onnx.cross_layer_equalization import equalize_model

    timings: dict = {}
    start = time.perf_counter()
    model = onnx.load(str(model_path))
    name = model.graph.input[0].name
    t = time.perf_counter()
    equalize_model(model)                      # in place: folds BN, scales layer pairs, folds high biases
    timings["cle_seconds"] = time.perf_counter() - t
    act = aimet_onnx.int8 if MODES[mode] == 8 else aimet_onnx.int16
    sim = aimet_onnx.QuantizationSimModel(model, param_type=aimet_onnx.int8, activation_type=act,
                                          config_file="default", path=str(out / f"{mode}.tmp"))
    inputs = _batches(calib, batch, name)
    t = time.perf_counter()
    aimet_onnx.apply_adaround(sim, inputs, num_iterations=iterations)
    timings["adaround_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    sim.compute_encodings(inputs)
    timings["encodings_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    qdq = sim.to_onnx_qdq(prequantize_constants=True)
    onnx.save(qdq, str(out / f"{mode}.onnx"))
    timings["export_seconds"] = time.perf_counter() - t
    timings["seconds"] = time.perf_counter() - start
    if evalx is not None:
        outs = [sim.session.run(None, b)[0] for b in _batches(evalx, 64, name)]
        np.save(out / f"{mode}.sim.npy", np.concatenate(outs).astype(np.float32))
    import aimet_onnx as _a
    return {**timings, "path": str(out / f"{mode}.onnx"), "aimet_onnx": _a.__version__,
            "activation_bits": MODES[mode], "iterations": iterations, "batch": batch,
            "calibration_samples": int(len(calib))}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--calib", type=Path, required=True)
    ap.add_argument("--eval", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--modes", default="w8a8,w8a16")
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    calib = np.load(args.calib).astype(np.float32)
    evalx = np.load(args.eval).astype(np.float32) if args.eval else None
    results: dict = {}
    for mode in args.modes.split(","):
        if mode not in MODES:
            results[mode] = {"error": f"unknown mode {mode!r} (known: {', '.join(MODES)})"}
            continue
        print(f"aimet {mode}: CLE + AdaRound ({args.iterations} iterations) ...", file=sys.stderr, flush=True)
        try:
            results[mode] = run_mode(mode, args.model, calib, evalx, args.out, args.iterations, args.batch)
        except Exception as exc:        # one mode failing must not hide the other: report it and go on
            traceback.print_exc()
            first = (str(exc).strip().splitlines() or [""])[0]
            results[mode] = {"error": f"{type(exc).__name__}: {first}"[:300]}
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")   # CPU only: no GPU here, and none wanted for a benchmark
    sys.exit(main(sys.argv[1:]))
