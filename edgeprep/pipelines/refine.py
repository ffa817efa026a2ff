"""Per-layer error and the keep-float search of int8 artifacts: the step ``run`` and ``quantize`` share.

Each int8 artifact is measured layer by layer against the float artifact of the same format; with
keep_float = auto the worst layers are kept in float until every int8 gate is met, chosen on the calibration data
and measured on the evaluation data. PTQ artifacts are rebuilt by converting again (``ptq_built``); QAT ones by
re-exporting the fake-quant graph (``pipelines.quantize``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from edgeprep.artifact import Artifact
from edgeprep.backends import get_backend
from edgeprep.models import ModelHandle
from edgeprep.outputs import publish
from edgeprep.report import artifact_entry
from edgeprep.stages import keep_float as layers
from edgeprep.stages.convert import convert, open_artifact, target_options
from edgeprep.stages.ptq import Built
from edgeprep.stages.verify import Reference, reference, verify


def ptq_built(ctx, model: ModelHandle, art: Artifact, artifacts: list[Artifact]) -> Built:
    """How to measure and re-quantize one int8 artifact that ``pipeline.convert_all`` made from ``model``: its float
    twin (the fp32 artifact of the same format, converted here when the target has none) and a rebuild with layers
    kept float that replaces the artifact in the run directory."""
    backend = get_backend(art.format)
    float_path = None
    if backend.measures_layer_error and ctx.target.quantize.layer_error_samples:
        float_path = next((a.path for a in artifacts if a.format == art.format and a.precision == "fp32"), None)
        if float_path is None:
            opts = target_options(ctx.target, art.format, "fp32")
            float_path = convert(model, out=ctx.workdir / backend.artifact_name(model.name + "-float", "fp32"),
                                 workdir=ctx.workdir, **opts).path

    def requantize(keep: tuple[str, ...]) -> Artifact:
        opts = {**target_options(ctx.target, art.format, "int8"), "keep_float": tuple(keep)}
        new = convert(model, out=ctx.workdir / backend.artifact_name(f"{model.name}-keep{len(keep)}", "int8"),
                      calibration=ctx.data.calibration, workdir=ctx.workdir, **opts)
        final = art.path
        for f in [new.path] + backend.companion_files(new.path):
            target = final.parent / (final.name if f == new.path else final.with_suffix(f.suffix).name)
            publish(f, target, lambda _p: True, "")    # our own artifact, in our staging directory
        return dataclasses.replace(_reopen(final, new), quantization=new.quantization, notes=new.notes)
    return Built(art, float_path, requantize)


def _reopen(path: Path, like: Artifact) -> Artifact:
    fresh = open_artifact(path)
    return dataclasses.replace(fresh, precision="int8", runtime=like.runtime, runtime_options=like.runtime_options,
                               unavailable_reason=like.unavailable_reason)


def refine_int8(ctx, artifacts: list[Artifact], entries: list[dict], ref: Reference | None,
                reference_model: ModelHandle, converted: ModelHandle,
                built: list[Built] | None = None) -> list[Artifact]:
    """Per-layer error of every int8 artifact (against the float artifact of the same format), and with
    keep_float = auto the search for the layers to keep in float until every int8 gate is met. Updates ``entries``
    in place and returns the artifacts (a re-quantized one replaces its original). ``built`` (QAT) supplies the
    float twins and rebuilds; otherwise they are the PTQ ones of ``ptq_built``."""
    cfg = ctx.target.quantize
    out = list(artifacts)
    targets = [i for i, a in enumerate(artifacts) if a.precision == "int8"]
    if ctx.data is None or ref is None or not targets or (cfg.layer_error_samples == 0 and not cfg.keep_float_auto):
        return out
    evaluation = ctx.data.evaluation
    thresholds = ctx.target.gates.for_precision("int8")

    def measure(a: Artifact) -> dict:
        with ctx.reporter.step(f"Verifying {a.label} on {ref.samples} samples"):
            return verify(a, ref, evaluation, thresholds, ctx.target.threads, extra_checks=ctx.artifact_checks,
                          model=converted)
    with ctx.timed("layer_errors"):
        for i in targets:
            b = (built[targets.index(i)] if built is not None else None) or \
                ptq_built(ctx, converted, artifacts[i], artifacts)
            art = b.artifact
            with ctx.reporter.step(f"Per-layer error of {art.label}"):
                lerr = layers.layer_errors(art, b.float_path, evaluation, cfg.layer_error_samples)
            keep = None
            if cfg.keep_float_auto and b.requantize is not None and lerr["status"] == "measured":
                art, result, keep = _keep_float_auto(ctx, b, art, lerr, measure, thresholds, cfg, reference_model)
                ctx.reporter.info(f"{art.label}: {layers.summary(keep)}")
                if keep["kept_float"]:
                    lerr = layers.layer_errors(art, b.float_path, evaluation, cfg.layer_error_samples)
                entries[i].clear()
                entries[i].update(artifact_entry(art, result, ctx.staging))
                out[i] = art
            entries[i]["layer_errors"] = lerr
            if keep is not None:
                entries[i]["keep_float"] = keep
    return out


def _keep_float_auto(ctx, b: Built, art: Artifact, lerr: dict, measure: Callable, thresholds, cfg,
                     reference_model: ModelHandle):
    """Choose the layers to keep in float on the calibration data, then measure the choice on the evaluation data.

    Choosing on the evaluation data and reporting figures from the same data would flatter the result; only when
    no separate calibration set exists does the search fall back to it, and the report says which data chose.
    """
    calibration, evaluation = ctx.data.calibration, ctx.data.evaluation
    if ctx.data.shared:
        art, result, keep = layers.keep_float_search(art, measure(art), lerr, b.requantize, measure,
                                                     thresholds, cfg.keep_float_max_layers)
        keep["selected_on"] = f"{evaluation.source} (no separate calibration data: the reported figures are " \
                              "measured on the data that chose the layers)"
        return art, result, keep
    n_sel = min(calibration.count, ctx.target.verify.samples or calibration.count)
    with ctx.reporter.step("Float reference outputs on the calibration data (keep-float search)", total=n_sel) as adv:
        cal_ref = reference(reference_model, calibration, n_sel, adv)

    def on_calibration(a: Artifact) -> dict:
        with ctx.reporter.step(f"Keep-float search: {a.label} on {n_sel} calibration samples"):
            return verify(a, cal_ref, calibration, thresholds, ctx.target.threads)

    with ctx.reporter.step(f"Per-layer error of {art.label} on the calibration data"):
        cal_lerr = layers.layer_errors(art, b.float_path, calibration, cfg.layer_error_samples)
    ranking = cal_lerr if cal_lerr["status"] == "measured" else lerr
    art, _, keep = layers.keep_float_search(art, on_calibration(art), ranking, b.requantize, on_calibration,
                                            thresholds, cfg.keep_float_max_layers)
    keep["selected_on"] = calibration.source
    return art, measure(art), keep
