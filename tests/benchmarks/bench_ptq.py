"""int8 quality side by side with the peers: edgeprep's own PTQ against every other tool, on three models, one run.

For the example CNN and the two hard CNNs ``examples/train_hard_models.py`` trains on Fashion-MNIST (a
MobileNetV3Small and an Xception-style separable residual network), every tool quantizes the same float Keras model
from the same 500 calibration images and every artifact is measured the same way on the same 2,000 evaluation
images against the float Keras model's outputs (``ptq_peers``: agreement, SQNR, top-1 drop, size, one-thread
latency). The peers are the plain ``TFLiteConverter`` (int8, 16x8), ``litert-quantizer`` (static_wi8_ai8,
static_wi8_ai16), NNCF (default, ``fast_bias_correction=False``), ONNX Runtime ``quantize_static`` (QDQ per-channel,
percentile and min/max) of a tf2onnx export and AIMET-ONNX (CLE + AdaRound, W8A8 and W8A16, in ``.venv-peers``:
``make peers``). edgeprep's rows are ``edgeprep quantize --method ptq`` with ``[quantize.ptq] engine = "edgeprep"``
(its defaults), int8 and ``activations = "int16"``, one run each making the TFLite and the OpenVINO artifact, and
``engine = "auto"`` (the candidate chosen per format on the calibration images).

    python tests/benchmarks/run.py ptq                       # all three models (make bench ONLY=ptq)
    EDGEPREP_BENCH_PTQ_MODELS=sepres python tests/benchmarks/run.py ptq
    EDGEPREP_BENCH_AIMET_ITERATIONS=1000 ...                  # AdaRound steps per layer for AIMET (default 500)
    EDGEPREP_BENCH_PTQ_QAT=0 ...                              # without the QAT rows (from PTQ, from float)
    EDGEPREP_BENCH_PTQ_AUTO=0 ...                             # without the engine = "auto" rows

Below each table: edgeprep's margin over the best peer, the goals of issue 15 and whether each is met.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import ptq_peers
from conftest import DATA_DIR, EXAMPLE_MODEL, MANIFEST

ROOT = Path(__file__).resolve().parent.parent.parent
HARD = ROOT / "examples" / "hard"
RGB96 = DATA_DIR / "fashion_mnist_96rgb.toml"
MODELS = {
    "example": (EXAMPLE_MODEL, MANIFEST, False),
    "sepres": (HARD / "sepres_fmnist.keras", RGB96, True),
    "mobilenetv3": (HARD / "mobilenetv3_small_fmnist.keras", RGB96, True),
}
PEERS = ["TFLiteConverter", "litert-quantizer", "NNCF", "ONNX Runtime", "AIMET"]
INT16_MODES = ("16x8", "ai16", "w8a16")
MARGIN_DB = 3.0          # edgeprep int8 over every peer's int8, on the hard models
MAX_DROP = 0.3           # top-1 points, int8, TFLite and OpenVINO
MAX_FORMAT_GAP = 0.1     # top-1 points between edgeprep's TFLite and OpenVINO int8
MAX_SECONDS = 300        # edgeprep's quantization wall time per model


def _target(activations: str):
    """litert-cpu's int8 options with OpenVINO as a second format, edgeprep's PTQ with the given activations."""
    from edgeprep.targets import load_target

    t = load_target("litert-cpu")
    ptq = dataclasses.replace(t.quantize.ptq, engine="edgeprep", activations=activations)
    return dataclasses.replace(t, formats=("tflite", "openvino"), precisions=("int8",), runtime="auto",
                               quantize=dataclasses.replace(t.quantize, ptq=ptq))


def edgeprep_rows(ctx: ptq_peers.Context, model: Path, manifest: Path, workdir: Path) -> list[ptq_peers.Row]:
    """``quantize --method ptq`` with edgeprep's engine (int8, then int16 activations), each artifact measured
    like the peers'; 'quant s' is the PTQ's own time from report.json (statistics, CLE, AdaRound, bias correction)
    plus each artifact's conversion."""
    from edgeprep.pipelines.quantize import quantize

    rows = []
    ref = ctx.ref_out
    float_top1 = ptq_peers._top1(ref, ctx.eval_y)
    for activations in ("int8", "int16"):
        start = time.perf_counter()
        try:
            result = quantize(model, _target(activations), manifest, workdir / f"edgeprep-{activations}",
                              method="ptq")
        except Exception as exc:     # a row that says why, as the peers' rows do, never a lost table
            for fmt in ("tflite", "openvino"):
                rows.append(ptq_peers.skipped("edgeprep", activations, fmt, ptq_peers._first_line(exc)))
            continue
        wall = time.perf_counter() - start
        report = result.report
        account = report.get("ptq", {}).get(activations)
        ptq_seconds = sum(account["seconds"].values()) if account else float("nan")
        for art in report["artifacts"]:
            fmt = art["format"]
            path = Path(result.out_dir) / art["path"]
            agreement, sqnr, top1, latency = ptq_peers.MEASURE[fmt](path, ctx.eval_x, ref, ctx.eval_y)
            mode = "int8 (defaults)" if activations == "int8" else (
                "int16 act (16x8)" if fmt == "tflite" else "int16: weights-only (no int16 on CPU)")
            algos = art.get("quantization", {}).get("algorithms") or art.get("quantization", {}).get("method", "")
            note = (f"{algos}; PTQ {ptq_seconds:.0f} s (once for both formats), whole quantize run {wall:.0f} s"
                    if account else f"fell back: {report.get('ptq', {}).get('fallback', 'no ptq section')}")
            rows.append(ptq_peers.Row("edgeprep", mode, fmt, agreement, sqnr, top1, (float_top1 - top1) * 100.0,
                                      ptq_peers.size_of(path), latency, ptq_seconds, note))
    return rows


def auto_rows(ctx: ptq_peers.Context, model: Path, manifest: Path, workdir: Path) -> list[ptq_peers.Row]:
    """``quantize --method ptq`` with ``[quantize.ptq] engine = "auto"`` and litert-cpu's int8 gates (agreement
    0.97, drop 1 point): per format the candidate chosen on the calibration images (edgeprep int8, the converter's
    int8, then edgeprep int16 when neither meets the gates), measured like the peers'. Tool "edgeprep-auto": its
    rows repeat one of the rows above, so they are not counted in the goals again."""
    from edgeprep.pipelines.quantize import quantize

    t = _target("int8")
    t = dataclasses.replace(t, quantize=dataclasses.replace(
        t.quantize, ptq=dataclasses.replace(t.quantize.ptq, engine="auto")))
    float_top1 = ptq_peers._top1(ctx.ref_out, ctx.eval_y)
    began = time.perf_counter()
    try:
        result = quantize(model, t, manifest, workdir / "edgeprep-auto", method="ptq")
    except Exception as exc:
        return [ptq_peers.skipped("edgeprep-auto", "auto", fmt, ptq_peers._first_line(exc))
                for fmt in ("tflite", "openvino")]
    wall = time.perf_counter() - began
    choice = result.report.get("ptq", {}).get("choice", {})
    rows = []
    for art in result.report["artifacts"]:
        fmt = art["format"]
        path = Path(result.out_dir) / art["path"]
        agreement, sqnr, top1, latency = ptq_peers.MEASURE[fmt](path, ctx.eval_x, ctx.ref_out, ctx.eval_y)
        record = choice.get(fmt, {})
        seen = ", ".join(f"{c['name']} {c['sqnr_db']:.1f} dB" for c in record.get("candidates", [])
                         if isinstance(c.get("sqnr_db"), (int, float)))
        rows.append(ptq_peers.Row("edgeprep-auto", f"auto: {record.get('chosen', '?')}", fmt, agreement, sqnr, top1,
                                  (float_top1 - top1) * 100.0, ptq_peers.size_of(path), latency, wall,
                                  f"on the calibration images: {seen}; whole quantize run {wall:.0f} s"))
    return rows


def qat_rows(ctx: ptq_peers.Context, model: Path, manifest: Path, workdir: Path) -> list[ptq_peers.Row]:
    """``quantize --method qat`` (the target's QAT settings: 3 epochs over the calibration images, labels) started
    from edgeprep's PTQ (``[quantize.qat] start = "ptq"``, the default) and from the float model, each artifact
    measured like the peers'. Tool "edgeprep-qat": QAT rows are not PTQ rows in the goals."""
    from edgeprep.pipelines.quantize import quantize

    rows = []
    float_top1 = ptq_peers._top1(ctx.ref_out, ctx.eval_y)
    for start_from in ("ptq", "float"):
        t = _target("int8")
        t = dataclasses.replace(t, quantize=dataclasses.replace(
            t.quantize, qat=dataclasses.replace(t.quantize.qat, start=start_from)))
        began = time.perf_counter()
        try:
            result = quantize(model, t, manifest, workdir / f"qat-{start_from}", method="qat")
        except Exception as exc:
            for fmt in ("tflite", "openvino"):
                rows.append(ptq_peers.skipped("edgeprep-qat", f"QAT from {start_from}", fmt,
                                              ptq_peers._first_line(exc)))
            continue
        wall = time.perf_counter() - began
        q = result.report["quantize"]["qat"]
        for art in result.report["artifacts"]:
            fmt = art["format"]
            path = Path(result.out_dir) / art["path"]
            agreement, sqnr, top1, latency = ptq_peers.MEASURE[fmt](path, ctx.eval_x, ctx.ref_out, ctx.eval_y)
            rows.append(ptq_peers.Row("edgeprep-qat", f"QAT from {start_from}", fmt, agreement, sqnr, top1,
                                      (float_top1 - top1) * 100.0, ptq_peers.size_of(path), latency, wall,
                                      f"{q['steps']} steps, {q['objective']}; whole quantize run {wall:.0f} s"))
    return rows


def _is_int16(row: ptq_peers.Row) -> bool:
    return any(k in row.mode.lower() for k in INT16_MODES) or row.mode.startswith("int16")


def goals(name: str, hard: bool, rows: list[ptq_peers.Row]) -> list[tuple[str, str, str, bool | None]]:
    measured = [r for r in rows if not r.skipped and r.tool != "float"]
    ours8 = [r for r in measured if r.tool == "edgeprep" and not _is_int16(r)]
    ours16 = [r for r in measured if r.tool == "edgeprep" and _is_int16(r)]
    peers8 = [r for r in measured if not r.tool.startswith("edgeprep") and not _is_int16(r)]
    peers16 = [r for r in measured if not r.tool.startswith("edgeprep") and _is_int16(r)]
    qat = {(r.mode, r.fmt): r for r in measured if r.tool == "edgeprep-qat"}
    out = []
    if ours8 and peers8:
        best = max(peers8, key=lambda r: r.sqnr_db)
        worst_ours = min(ours8, key=lambda r: r.sqnr_db)
        margin = worst_ours.sqnr_db - best.sqnr_db
        out.append((f"{name}: edgeprep int8 SQNR - best peer int8 ({best.tool} {best.mode[:18]})", f"{margin:+.1f} dB",
                    f">= +{MARGIN_DB:.0f} dB" if hard else "reported", margin >= MARGIN_DB if hard else None))
        best_agree = max(peers8, key=lambda r: r.agreement)
        lowest = min(r.agreement for r in ours8)
        out.append((f"{name}: edgeprep int8 agreement vs best peer ({best_agree.tool})",
                    f"{lowest:.4f} / {best_agree.agreement:.4f}", ">=" if hard else "reported",
                    lowest >= best_agree.agreement if hard else None))
    for r in ours8:
        out.append((f"{name}: edgeprep int8 {r.fmt} top-1 drop (points)", f"{r.drop_pts:+.2f}", f"<= {MAX_DROP}",
                    r.drop_pts <= MAX_DROP + 1e-9))
    if len(ours8) == 2:
        gap = abs(ours8[0].drop_pts - ours8[1].drop_pts)
        out.append((f"{name}: edgeprep int8 TFLite vs OpenVINO top-1 gap", f"{gap:.2f}", f"<= {MAX_FORMAT_GAP}",
                    gap <= MAX_FORMAT_GAP + 1e-9))
    tfl16 = [r for r in ours16 if r.fmt == "tflite"]
    if tfl16 and peers16:
        best = max(peers16, key=lambda r: r.sqnr_db)
        margin = tfl16[0].sqnr_db - best.sqnr_db
        out.append((f"{name}: edgeprep int16 act SQNR - best peer int16 ({best.tool} {best.mode[:14]})",
                    f"{margin:+.1f} dB", "> 0", margin > 0))
    wonly = [r for r in ours16 if r.fmt == "openvino"]
    if tfl16 and wonly:
        gap = wonly[0].sqnr_db - tfl16[0].sqnr_db
        out.append((f"{name}: edgeprep int16 act within 1 dB of weights-only int8", f"{gap:.1f} dB below", "<= 1",
                    gap <= 1.0))
    for r in ours8:       # QAT starts from PTQ's parameters so that it can only improve them
        q = qat.get(("QAT from ptq", r.fmt))
        if q is not None:
            out.append((f"{name}: QAT from PTQ - edgeprep PTQ int8, {r.fmt} SQNR", f"{q.sqnr_db - r.sqnr_db:+.1f} dB",
                        ">= 0", q.sqnr_db >= r.sqnr_db - 0.05))
    secs = [r.seconds for r in ours8 + ours16]
    if secs:
        out.append((f"{name}: edgeprep PTQ seconds (int8 + int16 parameter sets)", f"{sum(secs) / 2:.0f}",
                    f"<= {MAX_SECONDS}", sum(secs) / 2 <= MAX_SECONDS))
    return out


def main() -> int:
    wanted = [m.strip() for m in os.environ.get("EDGEPREP_BENCH_PTQ_MODELS", ",".join(MODELS)).split(",") if m]
    unknown = [m for m in wanted if m not in MODELS]
    if unknown:
        print(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
        return 2
    iterations = int(os.environ.get("EDGEPREP_BENCH_AIMET_ITERATIONS", "500"))
    all_goals = []
    skipped = False
    for name in wanted:
        model, manifest, hard = MODELS[name]
        if not model.exists():
            print(f"{name}: {model} is missing (python examples/train_hard_models.py --all)")
            skipped = True
            continue
        start = time.perf_counter()
        calib_x, eval_x, eval_y = ptq_peers.load_inputs(manifest)
        with tempfile.TemporaryDirectory(prefix=f"bench-ptq-{name}-") as tmp:
            ctx = ptq_peers.Context(model, calib_x, eval_x, eval_y, Path(tmp), aimet_iterations=iterations)
            print(f"\n## {name}: {model.relative_to(ROOT)}; {len(calib_x)} calibration, {len(eval_x)} evaluation "
                  f"images {tuple(eval_x.shape[1:])}", flush=True)
            rows = ptq_peers.run_peers(ctx, {"float", *PEERS},
                                       log=lambda m: print(f"  {m}", file=sys.stderr, flush=True))
            rows += edgeprep_rows(ctx, model, manifest, Path(tmp))
            if os.environ.get("EDGEPREP_BENCH_PTQ_AUTO", "1") != "0":
                rows += auto_rows(ctx, model, manifest, Path(tmp))
            if os.environ.get("EDGEPREP_BENCH_PTQ_QAT", "1") != "0":
                rows += qat_rows(ctx, model, manifest, Path(tmp))
            print()
            ptq_peers.print_table(rows, ptq_peers._top1(ctx.ref_out, eval_y))
        skipped |= any(r.skipped for r in rows)
        model_goals = goals(name, hard, rows)
        all_goals += model_goals
        print(f"\n{name}: {time.perf_counter() - start:.0f} s")
    print(f"\n{'goal':<78}{'measured':>16}  {'goal':<9}{'met':>6}")
    for what, value, goal, met in all_goals:
        print(f"{what[:77]:<78}{value:>16}  {goal:<9}{'-' if met is None else ('yes' if met else 'MISSED'):>6}")
    missed = [g[0] for g in all_goals if g[3] is False]
    print(f"\n{'goals missed: ' + str(len(missed)) if missed else 'every goal met'}")
    if skipped:
        print("some rows were skipped (see 'skipped:' above)")
    return 1 if skipped else 0
