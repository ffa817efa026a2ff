"""The BatchNorm steps before every conversion: calibrate (when asked) and fold.

``run``, ``quantize`` and ``convert`` all call ``prepare``, so one model, one data set and one target give the same
model to convert — and so the same int8 artifact — whichever command made it. Everything here runs on fp32
copies: a model trained with ``mixed_float16`` is calibrated, folded and exported in float32, and the float
reference that verification compares artifacts with is the recalibrated, unfolded fp32 model.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ContextManager

import numpy as np

from edgeprep.bn.graph import bn_layers, float32_copy, non_fp32_policies
from edgeprep.config.calibrate import CalibrateConfig
from edgeprep.data import DataSpec
from edgeprep.errors import DataError
from edgeprep.models import ModelHandle
from edgeprep.progress import Reporter
from edgeprep.stages.verify import Reference, reference


def _handle(model: ModelHandle, keras_model) -> ModelHandle:
    """``model`` with another Keras object (same name, so artifacts keep the input model's name). A model converted
    from ONNX keeps ONNX Runtime as its float reference, with ``keras_model``'s BatchNorm statistics written into a
    copy of the graph (a folded model has no BatchNorm layers left and keeps the reference it was folded from)."""
    onnx = model.onnx
    if onnx is not None and keras_model is not model.obj:
        onnx = onnx.with_statistics(keras_model)
    return replace(model, obj=keras_model, _saved_model_dir=None, onnx=onnx)


@dataclass(frozen=True)
class Prepared:
    """What conversion starts from, and what was done to get there."""

    reference: ModelHandle          # the float reference: recalibrated (when asked), unfolded, fp32
    to_convert: ModelHandle         # the model the converters receive: ``reference`` with BatchNorm folded
    sections: dict = field(default_factory=dict)     # the "calibration" and "fold" report sections
    stale_outputs: np.ndarray | None = None          # the stored-statistics model's outputs (calibration ran)
    telemetry: Any = None                            # bn.telemetry.CalibrationTelemetry when calibration ran
    evaluated: Reference | None = None               # ``reference``'s outputs on the evaluation samples, when
                                                     # calibration computed them (verification reuses them)

    @property
    def recalibrated(self) -> bool:
        return self.telemetry is not None and self.telemetry.applied

    def accuracy_line(self) -> str | None:
        """"float top-1 0.2000 → 0.9033 after BN re-estimation (300 samples of images)", when measured."""
        acc = self.telemetry.accuracy if self.telemetry is not None else None
        if acc is None:
            return None
        return (f"float top-1 {acc.before:.4f} → {acc.after:.4f} after BN re-estimation ({acc.samples} samples of "
                f"{acc.source})")


def prepare(model: ModelHandle, cfg: CalibrateConfig, data: DataSpec | None, *, reporter: Reporter | None = None,
            verify_samples: int | None = None, target_name: str = "the target",
            timed: Callable[[str], ContextManager] | None = None) -> Prepared:
    """Re-estimate BatchNorm statistics (``cfg.enabled``) on the calibration data, then fold BatchNorm.

    ``verify_samples`` is how many evaluation samples verification will use (the stale-model outputs and the
    before/after accuracy are measured on those). ``timed(stage)`` times each step for the report.
    """
    from edgeprep.stages.calibrate import calibrate
    from edgeprep.stages.fold import fold_bn

    reporter = reporter or Reporter(quiet=True)
    timed = timed or (lambda _stage: contextlib.nullcontext())
    if not model.is_keras:
        reason = (f"a {model.kind} model has no Keras layers to calibrate or fold; the converters fold its "
                  "BatchNorm ops and the export-integrity check verifies they did")
        if cfg.enabled:
            reporter.warn(f"BatchNorm re-estimation skipped: {reason}")
        return Prepared(model, model, {"calibration": {"status": "skipped", "reason": reason},
                                       "fold": {"status": "skipped", "reason": reason}})
    sections: dict = {}
    stale = telemetry = evaluated = None
    if cfg.enabled:
        if data is None:
            raise DataError(f"{target_name} asks to re-estimate BatchNorm statistics (--calibrate or [calibrate] "
                            "enabled), which needs calibration data", "pass --data")
        layers = len(bn_layers(model.obj))
        n = min(cfg.samples or data.calibration.count, data.calibration.count)
        n_eval = min(data.evaluation.count, verify_samples or data.evaluation.count)
        with timed("calibrate"), reporter.step(f"Re-estimating {layers} BatchNorm layers on {n} samples",
                                               total=n * layers) as advance:
            # the stored-statistics model's outputs (before) and the recalibrated model's (after: the float
            # reference) are computed once here and passed on, not recomputed by the integrity check and verify
            result = calibrate(model.obj, data.calibration, cfg, evaluation=data.evaluation,
                               evaluation_samples=n_eval, progress=advance, warn=reporter.warn,
                               outputs_of=lambda keras_model: reference(_handle(model, keras_model),
                                                                        data.evaluation, n_eval))
        stale, evaluated = result.before.outputs, result.after
        telemetry = result.telemetry
        sections["calibration"] = telemetry.to_dict()
        unfolded = result.model
    else:
        sections["calibration"] = {"status": "disabled",
                                   "reason": "not asked: pass --calibrate or set [calibrate] enabled = true"}
        unfolded = float32_copy(model.obj) if non_fp32_policies(model.obj) else model.obj
    with timed("fold"), reporter.step("Folding BatchNorm into the layers around it"):
        folded = fold_bn(unfolded, data=data.calibration if data else None)
    sections["fold"] = folded.report.to_dict()
    if folded.report.status == "refused":
        reporter.warn(f"{folded.report.message}; converting the unfolded model")
    ref = _handle(model, unfolded)
    return Prepared(ref, _handle(ref, folded.model), sections, stale, telemetry, evaluated)


__all__ = ["Prepared", "prepare"]
