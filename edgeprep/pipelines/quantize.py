"""``edgeprep quantize``: int8 artifacts for a target by PTQ or QAT, verified, with per-layer error and keep-float.

    ptq: the ``run`` pipeline with the target's int8 artifacts only and no benchmarks (BatchNorm re-estimation
         when asked, folding, conversion, verification, per-layer error, keep-float search: one int8 whatever
         the command)
    qat: load -> calibrate ranges -> fine-tune (in a child process) -> export per format -> verify against the
         original float model -> per-layer error -> keep-float search -> report.json

``pipelines.refine.refine_int8`` (per-layer error and the keep-float search of int8 artifacts) is shared by both
and by ``run``.
"""

from __future__ import annotations

import dataclasses
import json

from edgeprep._util import quiet
from edgeprep.backends import get_backend
from edgeprep.config.quantize import few_samples_warning
from edgeprep.errors import DataError
from edgeprep.models import check_model_path, load_model
from edgeprep.outputs import Discard, atomic_path, run_dir_out, staged_dir
from edgeprep.pipelines import run as pipeline
from edgeprep.pipelines.refine import refine_int8
from edgeprep.progress import Reporter
from edgeprep.rundir import RunContext, RunResult, default_out_dir, write
from edgeprep.stages.convert import convert
from edgeprep.stages.ptq import Built, export_int8
from edgeprep.targets import TargetProfile


def with_overrides(target: TargetProfile, calibration_samples: int | None = None,
                   steps: int | None = None) -> TargetProfile:
    """``target`` with ``--calib-samples`` and ``--steps`` (QAT optimizer steps) in its [quantize] table, as the
    command and ``edgeprep.quantize`` take them; None (or 0) leaves the profile's value."""
    q = target.quantize
    if calibration_samples:
        q = dataclasses.replace(q, calibration_samples=calibration_samples)
    if steps:
        q = dataclasses.replace(q, qat=dataclasses.replace(q.qat, steps=steps))
    return dataclasses.replace(target, quantize=q)


def quantize(model_path, target: TargetProfile, data_path, out_dir=None, *, method: str = "ptq",
             labels: bool = False, distill: bool = False, keep_float: tuple[str, ...] | None = None,
             strategy=None, cli_preprocess: dict | None = None, calibration_path=None, split: float | None = None,
             reporter: Reporter | None = None):
    """Quantize ``model_path`` for every format of ``target``. Returns None on a non-chief QAT worker."""

    reporter = reporter or Reporter(quiet=True)
    check_model_path(model_path)
    cfg = target.quantize
    if keep_float is not None:
        cfg = dataclasses.replace(cfg, keep_float=tuple(keep_float))
    target = dataclasses.replace(target, quantize=cfg)
    out_dir = run_dir_out(out_dir or default_out_dir(model_path, target, method))
    if method == "ptq":
        section = {"method": "ptq", "calibration_samples": cfg.calibration_samples,
                   "range_method": cfg.range_method, "notes": []}
        result = pipeline.run(model_path, dataclasses.replace(target, precisions=("int8",)), data_path, out_dir,
                              calibration_path=calibration_path, cli_preprocess=cli_preprocess, reporter=reporter,
                              bench=False, split=split, command="quantize", sections={"quantize": section})
        return result
    use = "QAT fine-tuning" + (" and BatchNorm re-estimation" if target.calibrate.enabled else "")
    model, data = pipeline.load_inputs(model_path, data_path, target, calibration_path=calibration_path,
                                       cli_preprocess=cli_preprocess, reporter=reporter, split=split,
                                       calibration_use=use)
    calib = data.calibration
    if labels and not calib.has_labels:
        raise DataError(f"--labels was given but {calib.source} has no labels",
                        "give labelled data (an .npz with y, or one folder per class), or drop --labels to "
                        "fine-tune by distillation from the float model")
    if not calib.has_labels and cfg.qat.distill == "never" and not distill:
        raise DataError(f"{calib.source} has no labels and [quantize.qat] distill = \"never\"",
                        "give labelled data or allow distillation")
    n_cal = min(cfg.calibration_samples, calib.count)
    notes = []
    msg = few_samples_warning(n_cal, calib.count, calib.source)
    if msg:
        reporter.warn(msg)
        notes.append(msg)
    if target.calibrate.enabled:
        notes.append("QAT starts from the model as given: [calibrate] / --calibrate applies to PTQ and run; QAT "
                     "re-estimates BatchNorm statistics itself while it fine-tunes")
    with staged_dir(out_dir) as staging:
        ctx = RunContext(target, model, data, staging, reporter, command="quantize")
        section = {"method": method, "calibration_samples": n_cal, "range_method": cfg.range_method,
                   "notes": notes}
        built = _qat(ctx, model_path, cfg, labels, distill, strategy, n_cal, section)
        if built is None:     # a QAT worker that is not the chief: the chief writes the run directory
            raise Discard
        ref, entries = pipeline.verify_all(ctx, model, [b.artifact for b in built])
        refine_int8(ctx, [b.artifact for b in built], entries, ref, model, model, built=built)
        ctx.sections["quantize"] = section
        report = write(ctx, entries, ref)
        return RunResult(out_dir, report, ref, data)
    return None


def _ptq_start(ctx: RunContext, model, cfg, section: dict):
    """QAT's start from edgeprep's PTQ: the start model saved in the work directory and its activation ranges, or
    None (with a warning) when the PTQ plan cannot run on this model."""
    from edgeprep.stages.ptq import owned_or_warning, qat_start

    with ctx.timed("ptq"), ctx.reporter.step("edgeprep PTQ: QAT's starting point"):
        owned, warning = owned_or_warning(model, ctx.data.calibration, cfg, "int8")
    if owned is None:
        ctx.reporter.warn(f"{warning}; QAT starts from the float model")
        section["notes"].append(f"{warning}; QAT starts from the float model")
        return None
    start_model, ranges, notes = qat_start(owned)
    path = ctx.workdir / f"{model.name}.qat-start.keras"
    start_model.save(path)
    section["ptq_start"] = {"algorithms": owned.account["settings"], "seconds": owned.account["seconds"],
                            "notes": notes}
    return path, ranges, owned


def _fidelity(qat, x, ref) -> dict:
    """SQNR (dB) and top-1 agreement of a fake-quant graph's outputs (as exported) against the float outputs."""
    import numpy as np

    from edgeprep.qat.model import Mode

    qat.prepare_export()
    out = np.concatenate([np.asarray(qat(x[i:i + 64], Mode(quantize=True, export=True))[0])
                          for i in range(0, len(x), 64)]).reshape(ref.shape)
    noise = float(np.sum((ref - out) ** 2))
    sqnr = 10.0 * np.log10(float(np.sum(ref ** 2)) / noise) if noise > 0 else float("inf")
    return {"sqnr_db": round(float(sqnr), 2),
            "agreement": round(float(np.mean(np.argmax(ref, -1) == np.argmax(out, -1))), 4)}


def _better_of(ctx: RunContext, model, tuned, ptq, samples: int = 256) -> dict:
    """QAT started from PTQ's parameters; keep whichever graph is closer to the float model (SQNR) on the
    calibration data QAT trained on, so fine-tuning never leaves the artifact worse than where it started."""
    x = ctx.data.calibration.arrays(min(samples, ctx.data.calibration.count))[0]
    ref = model.predict(x)
    qat_f, ptq_f = _fidelity(tuned, x, ref), _fidelity(ptq, x, ref)
    kept = "qat" if qat_f["sqnr_db"] >= ptq_f["sqnr_db"] else "ptq"
    return {"samples": len(x), "data": "calibration (the data QAT trained on)", "qat": qat_f, "ptq": ptq_f,
            "kept": kept}


def _qat(ctx: RunContext, model_path, cfg, labels: bool, distill: bool, strategy, n_cal: int,
         section: dict) -> list[Built] | None:
    import keras

    from edgeprep.qat import export, graph, train
    from edgeprep.qat.checks import AllInt8
    from edgeprep.qat.model import QATModel
    from edgeprep.qat.ranges import activation_ranges

    q = cfg.qat
    calib = ctx.data.calibration
    use_distill = distill or q.distill == "always" or (q.distill == "auto" and not calib.has_labels)
    if labels:
        use_distill = False
    strategy = strategy or train.make_strategy("none")
    model = ctx.model
    # training runs in a child process (a native crash there is one line); it starts now and imports TensorFlow
    # while this process calibrates. A multi-worker strategy trains in this process (process is None).
    with train.training_process(strategy) as process:
        start_path, start = model.path, None
        if q.start == "ptq":
            start = _ptq_start(ctx, model, cfg, section)
        if start is not None:
            start_path, ranges, owned = start
        else:
            if q.start == "ptq":
                q = dataclasses.replace(q, start="float")
            with ctx.reporter.step(f"Calibrating activation ranges on {n_cal} samples"), quiet():
                ranges = activation_ranges(model.obj, calib, n_cal, cfg.range_method, cfg.percentile)
        steps = train.steps_for(q, calib.count, strategy.num_replicas_in_sync)
        with ctx.timed("qat"), ctx.reporter.step(
                f"QAT fine-tuning, {steps} steps on {strategy.num_replicas_in_sync} replica(s), "
                f"{'distillation' if use_distill else 'labels'}, from "
                f"{'edgeprep PTQ' if q.start == 'ptq' else 'the float model'}", total=steps) as advance:
            result = train.train_isolated(start_path, calib, q, ranges, strategy, use_distill, ctx.workdir,
                                          teacher=model.obj, progress=advance, process=process)
    import numpy as np

    checksum = float(sum(float(np.sum(np.abs(w))) for w in result.weights))
    if not train.is_chief(strategy):
        print(f"qat worker done: {result.steps} steps, weights checksum {checksum:.6f}", flush=True)
        return None
    fresh = keras.models.load_model(start_path, compile=False)
    fresh.set_weights(result.weights)
    qat = QATModel(fresh, ranges, q.ema_decay, state=result.state)
    section["qat"] = {**result.describe(), "weights_checksum": round(checksum, 6),
                      "plan": graph.summary(qat.steps), "config": dataclasses.asdict(q)}
    # every compute op of the QAT TFLite is int8 (but for layers kept float on purpose), or the artifact fails
    ctx.artifact_checks.append(AllInt8.from_plan(qat.steps, ctx.target.tflite.float_fallback))
    tuned = export.finetuned_float_model(qat)
    if start is not None:
        with ctx.reporter.step("QAT against its PTQ start"), quiet():
            versus = _better_of(ctx, model, qat, owned.qat)
        section["qat"]["versus_ptq"] = versus
        if versus["kept"] == "ptq":
            msg = (f"QAT ended further from the float model than the PTQ it started from (SQNR "
                   f"{versus['qat']['sqnr_db']} vs {versus['ptq']['sqnr_db']} dB on {versus['samples']} calibration "
                   "samples): the artifacts carry PTQ's parameters; try more steps, distillation (--distill) or a "
                   "smaller learning_rate")
            ctx.reporter.warn(msg)
            section["notes"].append(msg)
            qat, tuned = owned.qat, keras.models.load_model(start_path, compile=False)
    origin = "QAT" if start is None or section["qat"]["versus_ptq"]["kept"] == "qat" else \
        "edgeprep PTQ (QAT did not improve on it)"
    tuned_path = ctx.staging / f"{model.name}.qat.keras"
    with atomic_path(tuned_path) as tmp:
        tuned.save(tmp)
    with atomic_path(ctx.staging / f"{model.name}.qat-ranges.json") as tmp:
        tmp.write_text(json.dumps(export.ranges_json(qat), indent=1) + "\n")
    section["qat"]["finetuned_model"] = tuned_path.name
    built = []
    shape = model.input_shape
    with ctx.timed("export"):
        for fmt in ctx.target.formats:
            backend = get_backend(fmt)
            opts = ctx.target.options_for(fmt)
            path = ctx.staging / backend.artifact_name(model.name, "int8")
            with ctx.reporter.step(f"Exporting QAT model to {fmt} int8"), quiet():
                if backend.qat_reconverts:
                    tuned_handle = load_model(tuned_path)
                    art = convert(tuned_handle, fmt, "int8", backend.qat_options(opts), path, calibration=calib,
                                  workdir=ctx.workdir)
                    built.append(Built(art, None, None))
                    continue
                built.append(export_int8(
                    qat, fmt, opts, path, shape, ctx.workdir, method="qat",
                    description={"weights": "int8 per-channel (Dense per-tensor), " + origin,
                                 "activations": "int8 (QAT ranges)" if origin == "QAT" else "int8 (PTQ ranges)"},
                    layer_error_samples=ctx.target.quantize.layer_error_samples,
                    options_for=ctx.target.options_for))
    return built
