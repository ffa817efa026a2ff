"""``edgeprep quantize``: PTQ per target format, or QAT fine-tuning then export; verified, with per-layer error.

    load -> (qat: calibrate ranges -> fine-tune -> fine-tuned model) -> int8 artifact per target format
         -> verify against the original float model -> per-layer error -> keep-float search -> report.json

The run directory is assembled under a temporary name and renamed into place when complete (as ``run``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from edgeprep._util import quiet
from edgeprep.backends import Artifact, get_backend
from edgeprep.config.quantize import few_samples_warning
from edgeprep.errors import DataError
from edgeprep.models import check_model_path, load_model, model_name
from edgeprep.outputs import Discard, atomic_path, publish, run_dir_out, staged_dir
from edgeprep.pipeline import RunContext, RunResult, load_inputs, write
from edgeprep.progress import Reporter
from edgeprep.report import artifact_entry
from edgeprep.stages import layers
from edgeprep.stages.convert import convert, open_artifact
from edgeprep.stages.verify import reference, verify
from edgeprep.targets import TargetProfile


def default_out_dir(model_path, target: TargetProfile, method: str) -> Path:
    return Path("runs") / f"{model_name(model_path)}-{target.name}-{method}"


def quantize(model_path, target: TargetProfile, data_path, out_dir=None, *, method: str = "ptq",
             labels: bool = False, distill: bool = False, keep_float: tuple[str, ...] | None = None,
             strategy=None, cli_preprocess: dict | None = None, calibration_path=None,
             reporter: Reporter | None = None) -> RunResult | None:
    """Quantize ``model_path`` for every format of ``target``. Returns None on a non-chief QAT worker."""
    reporter = reporter or Reporter(quiet=True)
    check_model_path(model_path)
    out_dir = run_dir_out(out_dir or default_out_dir(model_path, target, method))
    model, data = load_inputs(model_path, data_path, target, calibration_path=calibration_path,
                              cli_preprocess=cli_preprocess, reporter=reporter)
    cfg = target.quantize
    if keep_float is not None:
        cfg = dataclasses.replace(cfg, keep_float=tuple(keep_float))
    calib = data.calibration
    if labels and not calib.has_labels:
        raise DataError(f"--labels was given but {calib.source} has no labels",
                        "give labelled data (an .npz with y, or one folder per class), or drop --labels to "
                        "fine-tune by distillation from the float model")
    if method == "qat" and not calib.has_labels and cfg.qat.distill == "never" and not distill:
        raise DataError(f"{calib.source} has no labels and [quantize.qat] distill = \"never\"",
                        "give labelled data or allow distillation")
    n_cal = min(cfg.calibration_samples, calib.count)
    notes = []
    msg = few_samples_warning(n_cal, calib.count, calib.source)
    if msg:
        reporter.warn(msg)
        notes.append(msg)
    with staged_dir(out_dir) as staging:
        ctx = RunContext(target, model, data, staging, reporter)
        section = {"method": method, "calibration_samples": n_cal, "range_method": cfg.range_method,
                   "notes": notes}
        if method == "qat":
            built = _qat(ctx, model_path, cfg, labels, distill, strategy, n_cal, section)
            if built is None:     # a QAT worker that is not the chief: the chief writes the run directory
                raise Discard
        else:
            built = _ptq(ctx, cfg, n_cal)
        entries, ref = _verify_and_refine(ctx, built, cfg)
        ctx.sections["quantize"] = section
        report = write(ctx, entries, ref)
        report["command"] = "quantize"
        from edgeprep.report import write_report

        write_report(report, staging)
        return RunResult(out_dir, report)
    return None


@dataclasses.dataclass
class Built:
    """One int8 artifact per format, how to rebuild it with layers kept float, and its float twin."""

    artifact: Artifact
    float_path: object
    requantize: object


def _ptq(ctx: RunContext, cfg, n_cal: int) -> list[Built]:
    model, out = ctx.model, []
    explicit = () if cfg.keep_float_auto else cfg.keep_float
    max_drop = ctx.target.gates.for_precision("int8").max_accuracy_drop
    with ctx.timed("quantize"):
        for fmt in ctx.target.formats:
            backend = get_backend(fmt)
            opts = ctx.target.options_for(fmt)

            def build(keep, fmt=fmt, backend=backend, opts=opts, suffix=""):
                name = backend.artifact_name(model.name + suffix, "int8")
                path = ctx.staging / name if not suffix else ctx.workdir / name
                return convert(model, fmt, "int8", opts, path, calibration=ctx.data.calibration,
                               calibration_samples=n_cal, workdir=ctx.workdir, quantize=cfg, keep_float=keep,
                               max_accuracy_drop=max_drop)

            with ctx.reporter.step(f"Quantizing to {fmt} int8 (PTQ)"):
                art = build(explicit)
            float_path = None
            if fmt in layers.MEASURED and cfg.layer_error_samples:
                float_path = convert(model, fmt, "fp32", opts, ctx.workdir / backend.artifact_name(
                    model.name + "-float", "fp32"), workdir=ctx.workdir).path

            def requantize(keep, build=build, art=art):
                new = build(keep, suffix=f"-keep{len(keep)}")
                final = art.path
                for f in [new.path] + get_backend(new.format).companion_files(new.path):
                    target = final.parent / (final.name if f == new.path else final.with_suffix(f.suffix).name)
                    publish(f, target, lambda _p: True, "")    # our own artifact, in our staging directory
                return dataclasses.replace(_reopen(final, new), quantization=new.quantization, notes=new.notes)
            out.append(Built(art, float_path, requantize))
    return out


def _reopen(path: Path, like: Artifact) -> Artifact:
    fresh = open_artifact(path)
    return dataclasses.replace(fresh, precision="int8", runtime=like.runtime, runtime_options=like.runtime_options,
                               unavailable_reason=like.unavailable_reason)


def _qat(ctx: RunContext, model_path, cfg, labels: bool, distill: bool, strategy, n_cal: int,
         section: dict) -> list[Built] | None:
    import keras

    from edgeprep.quant.qat import export, graph, train
    from edgeprep.quant.qat.calibrate import activation_ranges
    from edgeprep.quant.qat.model import QATModel

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
        with ctx.reporter.step(f"Calibrating activation ranges on {n_cal} samples"), quiet():
            ranges = activation_ranges(model.obj, calib, n_cal, cfg.range_method, cfg.percentile)
        steps = train.steps_for(q, calib.count, strategy.num_replicas_in_sync)
        with ctx.timed("qat"), ctx.reporter.step(
                f"QAT fine-tuning, {steps} steps on {strategy.num_replicas_in_sync} replica(s), "
                f"{'distillation' if use_distill else 'labels'}", total=steps) as advance:
            result = train.train_isolated(model.path, calib, q, ranges, strategy, use_distill, ctx.workdir,
                                          teacher=model.obj, progress=advance, process=process)
    import numpy as np

    checksum = float(sum(float(np.sum(np.abs(w))) for w in result.weights))
    if not train.is_chief(strategy):
        print(f"qat worker done: {result.steps} steps, weights checksum {checksum:.6f}", flush=True)
        return None
    fresh = keras.models.load_model(model.path, compile=False)
    fresh.set_weights(result.weights)
    qat = QATModel(fresh, ranges, q.ema_decay, state=result.state)
    section["qat"] = {**result.describe(), "weights_checksum": round(checksum, 6),
                      "plan": graph.summary(qat.steps), "config": dataclasses.asdict(q)}
    tuned = export.finetuned_float_model(qat)
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
                if fmt == "coreml":
                    tuned_handle = load_model(tuned_path)
                    art = convert(tuned_handle, "coreml", "int8", dataclasses.replace(
                        opts, weight_compression="linear8"), path, calibration=calib, workdir=ctx.workdir)
                    built.append(Built(art, None, None))
                    continue
                art, float_path, requantize = _export_one(ctx, qat, fmt, opts, path, shape)
            built.append(Built(art, float_path, requantize))
    return built


def _export_one(ctx: RunContext, qat, fmt: str, opts, path: Path, shape):
    from edgeprep.quant.qat import export

    def build(keep: frozenset) -> Artifact:
        ours = get_backend(fmt).recognizes   # rebuilt with layers kept float: replaces the earlier one
        if fmt == "tflite":
            with atomic_path(path, ours) as tmp:
                tmp.write_bytes(export.to_tflite(qat, shape, opts.int8_io, keep=keep))
        else:
            with atomic_path(path, ours) as tmp:
                export.to_openvino(qat, shape, tmp, ctx.workdir, keep=keep)
                publish(tmp.with_suffix(".bin"), path.with_suffix(".bin"), lambda _p: True, "")
        art = open_artifact(path, ctx.target.options_for)
        quant = {"weights": "int8 per-channel (Dense per-tensor), QAT", "activations": "int8 (QAT ranges)",
                 "io": opts.int8_io if fmt == "tflite" else "float32", "method": "qat"}
        if keep:
            quant["kept_float"] = sorted(keep)
        return dataclasses.replace(art, precision="int8", quantization=quant)

    art = build(frozenset())
    float_path = None
    if ctx.target.quantize.layer_error_samples:
        if fmt == "tflite":
            float_path = export.to_tflite(qat, shape, quantize=False)
        else:
            float_path = ctx.workdir / "qat-float.xml"
            export.to_openvino(qat, shape, float_path, ctx.workdir, quantize=False)
    names = {s.name for s in qat.steps}

    def requantize(nodes):
        return build(frozenset(_layer_of(n, names) for n in nodes) - {None})
    return art, float_path, requantize


def _layer_of(node: str, names: set[str]) -> str | None:
    """The Keras layer a converted node belongs to (its name scope), longest match first."""
    parts = [p for seg in node.split(";") for p in seg.split("/")]
    hits = [p for p in parts if p in names]
    return max(hits, key=len) if hits else None


def _verify_and_refine(ctx: RunContext, built: list[Built], cfg):
    evaluation = ctx.data.evaluation
    n_eval = min(evaluation.count, ctx.target.verify.samples or evaluation.count)
    with ctx.reporter.step("Float reference outputs", total=n_eval) as advance:
        ref = reference(ctx.model, evaluation, n_eval, advance)
    thresholds = ctx.target.gates.for_precision("int8")
    entries = []
    with ctx.timed("verify"):
        for b in built:
            art = b.artifact

            def measure(a: Artifact) -> dict:
                with ctx.reporter.step(f"Verifying {a.label} on {ref.samples} samples"):
                    return verify(a, ref, evaluation, thresholds, ctx.target.threads)
            result = measure(art)
            with ctx.reporter.step(f"Per-layer error of {art.label}"):
                lerr = layers.layer_errors(art, b.float_path, evaluation, cfg.layer_error_samples)
            keep = None
            if cfg.keep_float_auto and b.requantize is not None and lerr["status"] == "measured":
                art, result, keep = _keep_float_auto(ctx, b, art, lerr, measure, thresholds, cfg)
                if keep["kept_float"]:
                    ctx.reporter.info(f"{art.label}: kept in float {', '.join(keep['kept_float'])}"
                                      + ("" if keep["met"] else " (the drop is still above the limit)"))
                    lerr = layers.layer_errors(art, b.float_path, evaluation, cfg.layer_error_samples)
            entry = artifact_entry(art, result, ctx.staging)
            entry["layer_errors"] = lerr
            if keep is not None:
                entry["keep_float"] = keep
            entries.append(entry)
    return entries, ref


def _keep_float_auto(ctx: RunContext, b: Built, art: Artifact, lerr: dict, measure, thresholds, cfg):
    """Choose the layers to keep in float on the calibration data, then measure the choice on the evaluation data.

    Choosing on the evaluation data and reporting figures from the same data would flatter the result; only when
    no separate calibration set exists does the search fall back to it, and the report says which data chose.
    """
    calibration, evaluation = ctx.data.calibration, ctx.data.evaluation
    if ctx.data.shared:
        art, result, keep = layers.keep_float_search(art, measure(art), lerr, b.requantize, measure,
                                                     thresholds.max_accuracy_drop, cfg.keep_float_max_layers)
        keep["selected_on"] = f"{evaluation.source} (no separate calibration data: the reported figures are " \
                              "measured on the data that chose the layers)"
        return art, result, keep
    n_sel = min(calibration.count, ctx.target.verify.samples or calibration.count)
    with ctx.reporter.step("Float reference outputs on the calibration data (keep-float search)", total=n_sel) as adv:
        cal_ref = reference(ctx.model, calibration, n_sel, adv)

    def on_calibration(a: Artifact) -> dict:
        with ctx.reporter.step(f"Keep-float search: {a.label} on {n_sel} calibration samples"):
            return verify(a, cal_ref, calibration, thresholds, ctx.target.threads)

    with ctx.reporter.step(f"Per-layer error of {art.label} on the calibration data"):
        cal_lerr = layers.layer_errors(art, b.float_path, calibration, cfg.layer_error_samples)
    ranking = cal_lerr if cal_lerr["status"] == "measured" else lerr
    art, _, keep = layers.keep_float_search(art, on_calibration(art), ranking, b.requantize, on_calibration,
                                            thresholds.max_accuracy_drop, cfg.keep_float_max_layers)
    keep["selected_on"] = calibration.source
    return art, measure(art), keep


def annotate_int8(ctx: RunContext, artifacts: list[Artifact], entries: list[dict], converted=None) -> None:
    """For ``edgeprep run``: add the per-layer error of every int8 artifact to its report entry, against the fp32
    artifact of the same format (or one made from ``converted``, the model the artifacts came from)."""
    model = converted or ctx.model
    n = ctx.target.quantize.layer_error_samples
    int8 = [(art, entry) for art, entry in zip(artifacts, entries) if art.precision == "int8"]
    if ctx.data is None or n == 0 or not int8:
        return
    with ctx.timed("layer_errors"):
        for art, entry in int8:
            float_path = None
            if art.format in layers.MEASURED:
                backend = get_backend(art.format)
                float_path = next((a.path for a in artifacts if a.format == art.format and a.precision == "fp32"),
                                  None) or convert(model, art.format, "fp32", ctx.target.options_for(art.format),
                                                   ctx.workdir / backend.artifact_name(model.name + "-float",
                                                                                       "fp32"),
                                                   workdir=ctx.workdir).path
            with ctx.reporter.step(f"Per-layer error of {art.label}"):
                entry["layer_errors"] = layers.layer_errors(art, float_path, ctx.data.evaluation, n)
