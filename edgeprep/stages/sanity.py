"""Sanity checks of the float reference a careful engineer makes before trusting any artifact's figures.

Every artifact is compared with the float model, so a float model that scores at chance level on the user's data
makes every artifact "agree" perfectly while telling nothing. The two usual causes are preprocessing that differs
from training (pixels 0..255 given to a model trained on [0, 1]) and BatchNorm statistics that are stale after a
short training run. ``chance_level`` says whether the float top-1 is at or near chance; ``diagnose`` measures the
evidence for each cause: the input statistics against what the first BatchNorm layer expects, and the BN telemetry
with the accuracy after re-estimating the statistics on (a copy of) the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgeprep.config.calibrate import CalibrateConfig
from edgeprep.data import DataSpec
from edgeprep.models import ModelHandle

# "Near chance": below chance + this share of the way from chance to perfect (or within three binomial standard
# errors of chance, when that is wider). 5 classes: top-1 under 0.36; 10 classes: under 0.28; 2 classes: under 0.6.
NEAR_CHANCE_SHARE = 0.2
# One class predicted for at least this share of the samples (3 or more classes) is a collapsed model.
COLLAPSE_SHARE = 0.9
DIAGNOSIS_SAMPLES = 256      # calibration samples the BN diagnosis re-estimates statistics from
# The first BN seeing inputs 16x wider or narrower than its statistics expect is a scaling mistake (0..255 against
# [0, 1] is 255x); 4-16x may be either a scaling mistake or statistics still near their initial values (momentum
# 0.999 after a short training run: MobileNetV3 trained 250 steps showed 0.2x), and is reported as undecided.
SPREAD_OFF = 16.0
SPREAD_UNSURE = 4.0


@dataclass(frozen=True)
class ChanceLevel:
    classes: int
    samples: int
    accuracy: float | None            # None without labels
    chance: float
    limit: float                      # accuracy below this is "near chance"
    top_class: int
    top_share: float                  # the share of samples predicted as ``top_class``

    @property
    def collapsed(self) -> bool:
        return self.classes >= 3 and self.top_share >= COLLAPSE_SHARE

    @property
    def near_chance(self) -> bool:
        return self.accuracy is not None and self.accuracy < self.limit

    @property
    def suspicious(self) -> bool:
        return self.near_chance or self.collapsed

    def headline(self, source: str) -> str:
        parts = []
        if self.near_chance:
            parts.append(f"float top-1 {self.accuracy:.4f} on {self.samples} samples of {source} is at or near "
                         f"chance level for {self.classes} classes (chance {self.chance:.4f}, anything below "
                         f"{self.limit:.4f} is near it)")
        if self.collapsed:
            parts.append(f"the float model predicts class {self.top_class} for {100 * self.top_share:.0f} % of "
                         f"the samples")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {"classes": self.classes, "samples": self.samples, "accuracy": self.accuracy,
                "chance": round(self.chance, 6), "near_chance_below": round(self.limit, 6),
                "near_chance": self.near_chance, "top_class": self.top_class,
                "top_class_share": round(self.top_share, 6), "collapsed": self.collapsed}


def chance_level(outputs: np.ndarray, labels: np.ndarray | None) -> ChanceLevel | None:
    """How the float model's top-1 compares with chance; None for a model that is not a classifier (one output)."""
    flat = outputs.reshape(len(outputs), -1)
    classes = flat.shape[1]
    if classes < 2 or len(flat) == 0:
        return None
    pred = np.argmax(flat, axis=1)
    counts = np.bincount(pred, minlength=classes)
    top = int(np.argmax(counts))
    chance = 1.0 / classes
    accuracy = None
    if labels is not None:
        accuracy = float(np.mean(pred == np.asarray(labels).reshape(-1)))
        if labels.size:          # chance for these labels: the share of the commonest class if it is larger
            chance = max(chance, float(np.max(np.bincount(np.asarray(labels).reshape(-1).astype(np.int64)))
                                       / labels.size))
    n = len(flat)
    limit = chance + max(NEAR_CHANCE_SHARE * (1.0 - chance), 3.0 * math.sqrt(chance * (1.0 - chance) / n))
    return ChanceLevel(classes, n, accuracy, chance, min(limit, 1.0), top, float(counts[top] / n))


def _input_statistics(x: np.ndarray) -> dict:
    return {"min": round(float(np.min(x)), 6), "max": round(float(np.max(x)), 6),
            "mean": round(float(np.mean(x)), 6), "std": round(float(np.std(x)), 6)}


def _first_bn_spread(stored_model, estimated_model, path: str) -> tuple[float, bool] | None:
    """The first BN layer's input spread on this data over the spread its stored statistics expect (median over
    channels of the ratio of standard deviations): about 255 for 0..255 pixels given to a model trained on [0, 1];
    and whether the stored statistics still look like their initial values."""
    from edgeprep.bn.graph import bn_layers

    stored, estimated = dict(bn_layers(stored_model)).get(path), dict(bn_layers(estimated_model)).get(path)
    if stored is None or estimated is None:
        return None
    eps = float(getattr(stored, "epsilon", 1e-3))
    before = np.asarray(stored.moving_variance.numpy(), np.float64)
    after = np.asarray(estimated.moving_variance.numpy(), np.float64)
    ratio = np.sqrt((after + eps) / (before + eps))
    ratio = ratio[np.isfinite(ratio)]
    if not ratio.size:
        return None
    return float(np.median(ratio)), _initial_looking(stored)


def _initial_looking(layer) -> bool:
    """Stored statistics still close to their initial values (mean 0, variance 1) in every channel: training
    barely updated them (a short run with momentum 0.99-0.999), whatever the data's scaling."""
    mean = np.asarray(layer.moving_mean.numpy(), np.float64)
    var = np.asarray(layer.moving_variance.numpy(), np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_var = np.log(var)
    return bool(np.all(np.isfinite(log_var)) and np.sqrt(np.mean(mean ** 2)) < 0.1
                and np.sqrt(np.mean(log_var ** 2)) < 0.2)


def diagnose(level: ChanceLevel, model: ModelHandle, data: DataSpec, *, telemetry=None, recalibrated=None,
             samples: int | None = None) -> dict:
    """The evidence for each likely cause, as a report object with ``causes`` (one sentence each).

    ``model`` is the model as given. ``telemetry`` and ``recalibrated`` (the Keras model with re-estimated
    statistics) are the run's own when it already re-estimated BatchNorm; otherwise a copy of the model is
    re-estimated on up to DIAGNOSIS_SAMPLES calibration samples (the model itself is not changed).
    """
    from edgeprep._util import quiet

    x, _ = data.evaluation.arrays(min(data.evaluation.count, samples or 256))
    stats = _input_statistics(x)
    found: dict = {"check": level.to_dict(), "input_statistics": stats, "causes": []}
    causes = found["causes"]
    ran_here = False
    if model.is_keras:
        from edgeprep.bn.graph import bn_layers

        if bn_layers(model.obj):
            if telemetry is None:
                from edgeprep.stages.calibrate import calibrate

                cfg = CalibrateConfig(samples=min(DIAGNOSIS_SAMPLES, data.calibration.count))
                with quiet():
                    result = calibrate(model.obj, data.calibration, cfg, evaluation=data.evaluation,
                                       evaluation_samples=level.samples)
                telemetry, recalibrated, ran_here = result.telemetry, result.model, True
            found["bn_telemetry"] = {"summary": telemetry.summary, "re_estimated_here": ran_here,
                                     "accuracy": None if telemetry.accuracy is None else {
                                         "before": telemetry.accuracy.before, "after": telemetry.accuracy.after,
                                         "samples": telemetry.accuracy.samples}}
    where = (f"inputs after preprocessing range {stats['min']:.4g} … {stats['max']:.4g} (mean {stats['mean']:.4g}, "
             f"std {stats['std']:.4g})")
    first = telemetry.layers[0] if telemetry is not None and telemetry.layers else None
    measured = None
    if first is not None and recalibrated is not None:
        measured = _first_bn_spread(model.obj, recalibrated, first.layer)
    if measured is not None:
        spread, initial = measured
        factor = max(spread, 1.0 / max(spread, 1e-12))
        off = factor > SPREAD_OFF and not initial
        unsure = not off and factor > SPREAD_UNSURE
        found["first_bn"] = {"layer": first.layer, "spread_vs_expected": round(spread, 4),
                             "mean_shift_std": round(first.mean_drift.relative, 4),
                             "statistics_look_initial": initial, "scaling_suspect": off}
        if initial:
            verdict = (": but its stored statistics are still about their initial values (mean 0, variance 1), "
                       "so they say nothing about the scaling training used — stale statistics are the likelier "
                       "cause")
        elif off:
            verdict = (": the data is likely scaled differently from training — check --scale/--offset/--mean/--std"
                       + (" (--scale 0.00392156862745098 maps 0..255 pixels to [0, 1])" if spread > 1 else
                          " (was the model trained on 0..255 pixels, or does it rescale inside? then drop the "
                          "scale)"))
        elif unsure:
            verdict = (": off, but not by the factor a scaling mistake gives (255× for 0..255 against [0, 1]); stale "
                       "statistics cause this too — check --scale/--mean/--std against how the model was trained")
        else:
            verdict = " — within the usual range, so the scaling is probably right"
        causes.append(f"preprocessing: {where}; the first BatchNorm ({first.layer}) sees {spread:.3g}× the spread "
                      f"its statistics expect and a mean {first.mean_drift.relative:.3g} σ off{verdict}")
    else:
        hint = " — pixels 0..255 for a model trained on [0, 1]? try --scale 0.00392156862745098" \
            if stats["max"] > 2.0 else ""
        causes.append(f"preprocessing: {where}; check they match what the model was trained on{hint}")
    if telemetry is not None:
        s = telemetry.summary
        verdict = (f"{s['stale']} of {s['layers']} BatchNorm layers stale" if s["stale"] else
                   f"no BatchNorm layer stale ({s['layers']} checked)")
        acc = telemetry.accuracy
        lift = "" if acc is None else f"; re-estimating them gives top-1 {acc.before:.4f} → {acc.after:.4f}"
        fix = ": pass --calibrate (or set [calibrate] enabled = true)" if ran_here and (
            s["stale"] or (acc is not None and acc.after > acc.before + 0.05)) else ""
        if fix and found.get("first_bn", {}).get("scaling_suspect"):
            fix = (" — but fix the scaling first: re-estimating statistics on wrongly scaled inputs adapts the "
                   "model to them instead of finding stale statistics")
        already = " (this run re-estimated them)" if not ran_here else ""
        causes.append(f"stale BatchNorm statistics: BN telemetry: {verdict}{already}{lift}{fix}")
    return found


def check_reference(ref, model: ModelHandle, data: DataSpec, reporter, *, telemetry=None,
                    recalibrated=None) -> dict | None:
    """Warn, with the likely causes measured, when the float reference ``ref`` (stages.verify.Reference) is at or
    near chance; returns the ``reference.sanity`` report object, or None when the float model looks sound."""
    level = chance_level(ref.outputs, ref.labels)
    if level is None or not level.suspicious:
        return None
    with reporter.step("Looking for the cause of the chance-level float accuracy"):
        found = diagnose(level, model, data, samples=ref.samples, telemetry=telemetry, recalibrated=recalibrated)
    reporter.warn(level.headline(ref.source) + ": the artifacts' figures compare with a float model that is not "
                  "working on this data. Likely causes:\n  - " + "\n  - ".join(found["causes"]))
    return found


__all__ = ["ChanceLevel", "chance_level", "check_reference", "diagnose"]
