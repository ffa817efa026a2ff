"""The BatchNorm steps of ``edgeprep run``: calibrate (when the target asks) and fold, before conversion.

Kept apart from ``pipeline.py`` so the run's step list stays one line per stage. Everything here runs on fp32
copies: a model trained with ``mixed_float16`` is calibrated, folded and exported in float32, and the float
reference that verification compares artifacts with is the recalibrated, unfolded fp32 model.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edgeprep.errors import DataError
from edgeprep.models import ModelHandle
from edgeprep.stages.bn_graph import bn_layers, float32_copy, non_fp32_policies


def _handle(model: ModelHandle, keras_model) -> ModelHandle:
    """``model`` with another Keras object (same name, so artifacts keep the input model's name)."""
    return replace(model, obj=keras_model, _saved_model_dir=None)


def prepare(ctx, model: ModelHandle) -> tuple[ModelHandle, ModelHandle, np.ndarray | None]:
    """Returns (float reference model, model to convert, stale-statistics outputs on the verification samples
    or None) and records the ``calibration`` and ``fold`` report sections."""
    from edgeprep.stages.calibrate import calibrate
    from edgeprep.stages.fold import fold_bn
    from edgeprep.stages.verify import reference

    cfg = ctx.target.calibrate
    if not model.is_keras:
        reason = (f"a {model.kind} model has no Keras layers to calibrate or fold; the converters fold its "
                  "BatchNorm ops and the export-integrity check verifies they did")
        ctx.sections["calibration"] = {"status": "skipped", "reason": reason}
        ctx.sections["fold"] = {"status": "skipped", "reason": reason}
        if cfg.enabled:
            ctx.reporter.warn(f"[calibrate] skipped: {reason}")
        return model, model, None
    data = ctx.data
    stale = None
    if cfg.enabled:
        if data is None:
            raise DataError(f"target '{ctx.target.name}' asks to re-estimate BatchNorm statistics ([calibrate] "
                            "enabled), which needs calibration data", "pass --data")
        layers = len(bn_layers(model.obj))
        n = min(cfg.samples or data.calibration.count, data.calibration.count)
        n_eval = min(data.evaluation.count, ctx.target.verify.samples or data.evaluation.count)
        with ctx.timed("calibrate"), ctx.reporter.step(f"Re-estimating {layers} BatchNorm layers on {n} samples",
                                                       total=n * layers) as advance:
            result = calibrate(model.obj, data.calibration, cfg, evaluation=data.evaluation,
                               evaluation_samples=n_eval, progress=advance, warn=ctx.reporter.warn)
            stale = reference(_handle(model, float32_copy(model.obj)), data.evaluation, n_eval).outputs
        ctx.sections["calibration"] = result.telemetry.to_dict()
        unfolded = result.model
    else:
        ctx.sections["calibration"] = {"status": "disabled",
                                       "reason": "the target's [calibrate] table does not set enabled = true"}
        unfolded = float32_copy(model.obj) if non_fp32_policies(model.obj) else model.obj
    with ctx.timed("fold"), ctx.reporter.step("Folding BatchNorm into the layers around it"):
        folded = fold_bn(unfolded, data=data.calibration if data else None)
    ctx.sections["fold"] = folded.report.to_dict()
    if folded.report.status == "refused":
        ctx.reporter.warn(f"{folded.report.message}; converting the unfolded model")
    return _handle(model, unfolded), _handle(model, folded.model), stale
