"""``edgeprep run``: a model, a target profile and data -> a run directory with artifacts and report.json.

Data flows one way, one step function per stage:

    load_inputs -> calibrate_and_fold -> convert_all -> verify_all -> refine_int8 -> bench_entries -> write
    (report.json, summary.md, target.toml)

``edgeprep quantize --method ptq`` is this pipeline with the target's int8 artifacts only and no benchmarks, and
``edgeprep convert`` runs the same BatchNorm preparation and conversion options, so one model, data and target
give one int8 artifact whichever command made it.

Each step reads and extends a ``RunContext``; a step that measures something adds its section to
``ctx.sections`` (it becomes a top-level key of report.json) and its wall time to ``ctx.stages``.
The run directory is assembled under a temporary name beside ``--out`` and renamed into place only when every
step succeeded, so a failed run never leaves a half-written directory behind (an earlier run there is kept).
"""

from __future__ import annotations

from pathlib import Path

from edgeprep.artifact import Artifact
from edgeprep.backends import get_backend, needing_calibration
from edgeprep.config.quantize import few_samples_warning
from edgeprep.data import (
    Dataset,
    DataSpec,
    Preprocess,
    check_fits,
    check_labels,
    load_data,
    preprocess_from,
    read_warnings,
    scaling_warnings,
)
from edgeprep.errors import DataError
from edgeprep.models import ModelHandle, check_model_path, load_model
from edgeprep.outputs import run_dir_out, staged_dir
from edgeprep.pipelines.refine import refine_int8
from edgeprep.progress import Reporter
from edgeprep.report import artifact_entry
from edgeprep.rundir import RunContext, RunResult, default_out_dir, write
from edgeprep.stages.bench import BenchRequest, bench_entries, evaluates_remotely, write_device_data
from edgeprep.stages.convert import convert, target_options
from edgeprep.stages.verify import Reference, reference, unmeasured, verify
from edgeprep.targets import TargetProfile


def calibrated_int8(target: TargetProfile) -> list[str]:
    """The target's artifacts that need calibration data ("tflite int8"; Core ML's int8 is weights only)."""
    return needing_calibration(target.plan())


def load_inputs(model_path: str | Path, data_path: str | Path | None, target: TargetProfile | None = None, *,
                calibration_path: str | Path | None = None, cli_preprocess: dict | None = None,
                reporter: Reporter | None = None, split: float | None = None,
                calibration_use: str | None = None) -> tuple[ModelHandle, DataSpec | None]:
    """Load the model and its data (if any), and refuse data that does not fit the model's input.

    ``split`` holds out that fraction of one data source for evaluation (the rest calibrates). ``calibration_use``
    says what the calibration data will do ("int8 calibration", "QAT fine-tuning", ...): when it is also the
    evaluation data, a warning says the figures are optimistic and how to separate them."""
    reporter = reporter or Reporter(quiet=True)
    with reporter.step(f"Loading {model_path}"):
        model = load_model(model_path)
    if data_path is None:
        return onnx_as_keras(model, None, preprocess_from((target.preprocess if target else None), cli_preprocess),
                             reporter), None
    data = load_data(data_path, preprocess_layers=((target.preprocess if target else None),),
                     cli_preprocess=cli_preprocess, calibration=calibration_path, split=split)
    model = onnx_as_keras(model, data.evaluation, data.evaluation.preprocess, reporter)
    what = f"the model ({model.path.name})"
    for ds in (data.evaluation,) if data.shared else (data.calibration, data.evaluation):
        check_fits(ds, model.input_shape, what)
        check_labels(ds, model.output_shape, what)       # before any work, not after the conversions
        for warning in read_warnings(ds) + scaling_warnings(ds):
            reporter.warn(warning)
    if calibration_use:
        warning = overlap_warning(data, calibration_use)
        if warning:
            reporter.warn(warning)
    return model, data


def onnx_as_keras(model: ModelHandle, data: Dataset | None, preprocess: Preprocess,
                  reporter: Reporter) -> ModelHandle:
    """An ONNX model converted to its Keras graph (``edgeprep.onnx.to_keras``) for the data's layout and shape;
    any other model unchanged."""
    if model.kind != "onnx":
        return model
    from edgeprep.onnx import to_keras

    with reporter.step(f"Converting {model.path.name} to a Keras graph (checked against ONNX Runtime)"):
        converted = to_keras(model, preprocess, data)
    plan = converted.onnx.plan
    fixed = "; " + ", ".join(f"{a} {how}" for a, how in plan.fixed) if plan.fixed else ""
    reporter.info(f"ONNX input {plan.onnx_layout} {list(plan.declared)}: artifacts take {plan.layout} "
                  f"{[1, *plan.shape]}{fixed}")
    return converted


def calibration_uses(target: TargetProfile) -> str | None:
    """What ``run`` uses the calibration data for, or None when it does not use it."""
    uses = (["BatchNorm re-estimation"] if target.calibrate.enabled else []) + \
        (["int8 calibration"] if calibrated_int8(target) else []) + \
        (["the keep-float search"] if target.quantize.keep_float_auto and "int8" in target.precisions else [])
    return " and ".join(uses) or None


def calibrate_and_fold(ctx: RunContext, model: ModelHandle) -> tuple[ModelHandle, ModelHandle]:
    """BatchNorm before conversion: re-estimate statistics (``--calibrate`` or the target's [calibrate]), then fold.

    Returns the float reference for verification (recalibrated, unfolded, fp32) and the model to convert (folded).
    Adds the ``calibration`` and ``fold`` report sections and the export-integrity check of every artifact; a
    recalibrated model is saved in the run directory as ``<model>.calibrated.keras``.
    """
    from edgeprep.stages.integrity import ExportIntegrity
    from edgeprep.stages.prepare import prepare

    prepared = prepare(model, ctx.target.calibrate, ctx.data, reporter=ctx.reporter,
                       verify_samples=ctx.target.verify.samples, target_name=f"target '{ctx.target.name}'",
                       timed=ctx.timed)
    ctx.sections.update(prepared.sections)
    ctx.artifact_checks.append(ExportIntegrity(prepared.stale_outputs))
    if prepared.recalibrated:
        save_recalibrated(ctx, prepared.reference)
        line = prepared.accuracy_line()
        if line:
            ctx.reporter.info(line)
            ctx.sections["calibration"]["console"] = line
    ctx.prepared = prepared
    return prepared.reference, prepared.to_convert


def save_recalibrated(ctx: RunContext, model: ModelHandle) -> None:
    """The recalibrated (unfolded, float32) Keras model, saved in the run directory for the user to keep."""
    from edgeprep._util import quiet
    from edgeprep.outputs import atomic_path

    path = ctx.staging / f"{model.name}.calibrated.keras"
    with quiet(), atomic_path(path) as tmp:
        model.obj.save(tmp)
    ctx.sections["calibration"]["model"] = path.name


def convert_all(ctx: RunContext, model: ModelHandle) -> list[Artifact]:
    """Every (format, precision) the target asks for, converted from ``model`` into the run directory."""
    artifacts = []
    if calibrated_int8(ctx.target) and ctx.data is not None:
        calib = ctx.data.calibration
        warning = few_samples_warning(ctx.target.quantize.calibration_samples, calib.count, calib.source)
        if warning:
            ctx.reporter.warn(warning)
        section = ctx.sections.get("quantize")
        if section is not None:      # edgeprep quantize: the samples actually used, and the warning, in its section
            section["calibration_samples"] = min(ctx.target.quantize.calibration_samples, calib.count)
            section["notes"] += [warning] if warning else []
    owned = owned_ptq(ctx, model)
    with ctx.timed("convert"):
        for fmt, precision in ctx.target.plan():
            name = get_backend(fmt).artifact_name(model.name, precision)
            with ctx.reporter.step(f"Converting to {fmt} {precision}"):
                if precision == "int8" and owned is not None:    # edgeprep's own PTQ
                    artifacts.append(export_owned(ctx, owned, model, fmt, ctx.staging / name, artifacts))
                    continue
                artifacts.append(convert(model, out=ctx.staging / name, workdir=ctx.workdir,
                                         calibration=ctx.data.calibration if ctx.data else None,
                                         **target_options(ctx.target, fmt, precision)))
    return artifacts


def owned_ptq(ctx: RunContext, model: ModelHandle):
    """A source of edgeprep's own PTQ parameters for the target's int8 artifacts (``[quantize.ptq] engine =
    "edgeprep"``): ``get(activations)`` computes them once per activation precision ("int8", or "int16" for
    16-bit activations and for backends whose int8 is weights only, such as Core ML). None when the converters
    quantize (engine "vendor", no int8, no data, or a model that is not Keras)."""
    cfg = ctx.target.quantize
    if cfg.ptq.engine == "vendor" or "int8" not in ctx.target.precisions or ctx.data is None \
            or not model.is_keras:
        return None
    return _OwnedCache(ctx, model)


class _OwnedCache:
    def __init__(self, ctx: RunContext, model: ModelHandle):
        self.ctx, self.model, self.made, self._cal_ref = ctx, model, {}, None

    def calibration_reference(self):
        """The float model's outputs on the calibration samples the engine choice measures candidates on."""
        if self._cal_ref is None:
            from edgeprep.pipelines.convert import choice_reference

            self._cal_ref = choice_reference(self.model, self.ctx.data.calibration, self.ctx.target,
                                             self.ctx.reporter)
        return self._cal_ref

    def get(self, activations: str):
        from edgeprep.stages.ptq import label, owned_or_warning

        if activations in self.made:
            return self.made[activations]
        ctx = self.ctx
        what = label(activations)
        with ctx.timed(f"ptq ({what})"), ctx.reporter.step(f"edgeprep PTQ ({what})"):
            owned, warning = owned_or_warning(self.model, ctx.data.calibration, ctx.target.quantize, activations,
                                              step=lambda m: ctx.reporter.info(f"  {m}"))
        if warning:
            ctx.reporter.warn(warning)
            ctx.sections.setdefault("ptq", {})["fallback"] = warning
        if owned is not None:
            ctx.sections.setdefault("ptq", {})[activations] = owned.account
        self.made[activations] = owned
        return owned


def export_owned(ctx: RunContext, cache: _OwnedCache, model: ModelHandle, fmt: str, path: Path,
                 artifacts: list[Artifact]) -> Artifact:
    """One int8 artifact from the owned parameters (``stages.ptq.export_owned``), or the converter's own PTQ when
    they could not be computed for this model."""
    from edgeprep.pipelines.refine import ptq_built
    from edgeprep.stages import ptq

    if ctx.target.quantize.ptq.engine == "auto":
        from edgeprep.stages import ptq_choice

        with ctx.timed(f"ptq choice ({fmt})"):
            art, built, record = ptq_choice.choose_int8(
                model, fmt, path, ctx.workdir, ctx.target, ctx.data.calibration, cache.get,
                cache.calibration_reference(), ctx.target.threads, step=lambda m: ctx.reporter.info(f"  {m}"))
        ctx.reporter.info(ptq_choice.line(f"{fmt} int8", record))
        ctx.sections.setdefault("ptq", {}).setdefault("choice", {})[fmt] = record
        ctx.built[art.path] = built if built is not None else ptq_built(ctx, model, art, artifacts)
        return art
    owned = cache.get(ptq.activations_for(ctx.target.quantize, fmt))
    if owned is None:
        return convert(model, out=path, workdir=ctx.workdir, calibration=ctx.data.calibration,
                       **target_options(ctx.target, fmt, "int8"))
    art, built, source = ptq.export_owned(owned, model, fmt, path, ctx.workdir, ctx.target, ctx.data.calibration,
                                          ctx.target.quantize.layer_error_samples)
    ctx.built[art.path] = built if built is not None else ptq_built(ctx, source, art, artifacts)
    return art


def verify_all(ctx: RunContext, model: ModelHandle, artifacts: list[Artifact],
               converted: ModelHandle | None = None, ref: Reference | None = None) -> tuple[Reference | None, list]:
    """Verify each artifact against ``model``'s float outputs; returns the reference and the report entries.
    ``converted`` is the model the artifacts were made from (folded), whose layers per-layer errors compare.
    ``ref`` is ``model``'s outputs when an earlier step already computed them (BatchNorm re-estimation does)."""
    entries = []
    with ctx.timed("verify"):
        if ctx.data is not None:
            evaluation = ctx.data.evaluation
            n_eval = min(evaluation.count, ctx.target.verify.samples or evaluation.count)
            if ref is None:
                with ctx.reporter.step("Float reference outputs", total=n_eval) as advance:
                    ref = reference(model, evaluation, n_eval, advance)
            check_float_reference(ctx, ref)
        for art in artifacts:
            thresholds = ctx.target.gates.for_precision(art.precision)
            if ref is None:
                result = unmeasured(art, "no evaluation data was given (pass --data)", thresholds,
                                    ctx.artifact_checks)
            elif art.runtime is None:
                ctx.reporter.warn(f"{art.label}: {art.unavailable_reason}")
                result = verify(art, ref, evaluation, thresholds, extra_checks=ctx.artifact_checks)
            else:
                with ctx.reporter.step(f"Verifying {art.label} on {ref.samples} samples", total=ref.samples) as adv:
                    result = verify(art, ref, evaluation, thresholds, ctx.target.threads, adv, ctx.artifact_checks,
                                    model=converted or model)
            entries.append(artifact_entry(art, result, ctx.staging))
    return ref, entries


def check_float_reference(ctx: RunContext, ref: Reference) -> None:
    """Warn, with the likely causes measured, when the float model scores at or near chance on this data: every
    artifact then "agrees" with a model that is not working, and its figures mean nothing."""
    from edgeprep.stages.sanity import check_reference

    prepared = ctx.prepared if ctx.prepared is not None and ctx.prepared.recalibrated else None
    ctx.sanity = check_reference(ref, ctx.model, ctx.data, ctx.reporter,
                                 telemetry=prepared.telemetry if prepared else None,
                                 recalibrated=prepared.reference.obj if prepared else None)


def overlap_warning(data: DataSpec, use: str) -> str | None:
    """The warning when the data that calibrates (or fine-tunes) is the data that evaluates."""
    verb = "use" if " and " in use.split("(")[0] else "uses"
    if data.shared:
        return (f"{use} {verb} the evaluation data itself ({data.evaluation.source}): the reported figures are "
                "measured on the samples that tuned the artifact and are optimistic; give separate --calib-data, "
                "a manifest with calibration and evaluation sets, or --split 0.3 to hold out 30 % for evaluation")
    overlap = data.overlap()
    if overlap:
        return (f"{overlap} of the {data.evaluation.count} evaluation samples ({data.evaluation.source}) also appear "
                f"in the calibration data ({data.calibration.source}), which {use} {verb}: figures on them are "
                "optimistic; remove the duplicates or use --split on one source")
    return None


def run(model_path: str | Path, target: TargetProfile, data_path: str | Path | None,
        out_dir: str | Path | None = None, *, calibration_path: str | Path | None = None,
        cli_preprocess: dict | None = None, reporter: Reporter | None = None, bench: bool = True,
        split: float | None = None, command: str = "run", sections: dict | None = None) -> RunResult:
    """Run the target's stages. Without data, int8 is refused up front and nothing can be verified.
    ``bench=False`` leaves the benchmarks to the caller (a fleet benchmarks its devices in parallel).
    ``command`` and ``sections`` are for commands built on this pipeline (``quantize``): the report's command
    and extra top-level sections."""
    reporter = reporter or Reporter(quiet=True)
    check_model_path(model_path)
    out_dir = run_dir_out(out_dir or default_out_dir(model_path, target))
    if data_path is None:
        needs = calibrated_int8(target)
        if needs:
            raise DataError(f"target '{target.name}' asks for {', '.join(needs)}, which needs calibration data",
                            "pass --data (a manifest, .npz, .npy or image folder)")
    model, data = load_inputs(model_path, data_path, target, calibration_path=calibration_path,
                              cli_preprocess=cli_preprocess, reporter=reporter, split=split,
                              calibration_use=calibration_uses(target))
    with staged_dir(out_dir) as staging:
        ctx = RunContext(target, model, data, staging, reporter, command=command)
        ctx.sections.update(sections or {})
        reference_model, to_convert = calibrate_and_fold(ctx, model)
        artifacts = convert_all(ctx, to_convert)
        ref, entries = verify_all(ctx, reference_model, artifacts, to_convert, ref=ctx.prepared.evaluated)
        artifacts = refine_int8(ctx, artifacts, entries, ref, reference_model, to_convert,
                                built=[ctx.built.get(a.path) for a in artifacts if a.precision == "int8"])
        if bench and target.bench is not None:      # the target's [bench]; on its device, the evaluation too
            with ctx.timed("bench"):
                data_file = write_device_data(ctx.workdir / "device_data.npz", data.evaluation.arrays(ref.samples),
                                              ref.outputs) if evaluates_remotely(target.bench, ref) else None
                bench_entries(artifacts, entries, BenchRequest(target.bench, target.threads, data_file, ref),
                              reporter, staging)
        report = write(ctx, entries, ref)
    return RunResult(out_dir, report, ref, data)
