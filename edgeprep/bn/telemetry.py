"""BN telemetry: typed, serializable per-layer statistics of a calibration pass, and the verdict on each layer.

Definitions (``s`` = stored, ``e`` = re-estimated, per channel ``c``, ``eps`` = the layer's epsilon):

- ``mean_drift.l2 = ||mean_s - mean_e||``; ``mean_drift.relative`` = RMS over channels of
  ``|mean_s - mean_e| / sqrt(var_e + eps)``: how far the stored means are off, in channel standard deviations.
- ``variance_drift.l2 = ||var_s - var_e||``; ``variance_drift.relative`` = RMS over channels of
  ``|sqrt((var_s + eps) / (var_e + eps)) - 1|``: the relative error of the scale the stored statistics apply.
- ``batch_mean_variance``: the variance across calibration batches of each batch's channel mean, averaged over
  channels; ``batch_noise`` = RMS over channels of ``sqrt(that / (var_e + eps))``: how far one batch's mean
  wanders, in standard deviations, at the calibration batch size. It shrinks as ``1/sqrt(batch)``, so
  ``acceptable_batch_size = ceil(batch_size * (batch_noise / noise_tolerance)**2)``.
- non-finite counts in the stored and re-estimated statistics (and gamma/beta) and in the activations seen;
- ``near_zero_variance`` channels (dead: ``var_e <= 1e-6 * median(var_e)``, or exactly constant) and
  ``epsilon_dominated`` channels (``var_e < eps``: the epsilon, not the data, sets their scale).

Verdict, first match: **broken** (non-finite values anywhere, or a negative stored variance), **stale**
(``mean_drift.relative > stale_mean_shift`` or ``variance_drift.relative > stale_scale_change``, and either
beyond three standard errors of the estimate, ``batch_noise / sqrt(batches)``: recalibrate),
**noisy** (``batch_noise > noise_tolerance``: statistics from batches this small are unreliable), **ok**.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from edgeprep.bn.graph import BNParams
from edgeprep.config.calibrate import CalibrateConfig

Verdict = Literal["ok", "stale", "noisy", "broken"]
VERDICTS: tuple[str, ...] = ("ok", "stale", "noisy", "broken")
LISTED_CHANNELS = 16   # channel indices listed per issue; the count is always complete


@dataclass(frozen=True)
class Drift:
    l2: float
    relative: float


@dataclass(frozen=True)
class Channels:
    count: int
    first: tuple[int, ...] = ()      # up to LISTED_CHANNELS channel indices

    @classmethod
    def where(cls, mask: np.ndarray) -> "Channels":
        idx = np.flatnonzero(mask)
        return cls(int(idx.size), tuple(int(i) for i in idx[:LISTED_CHANNELS]))


@dataclass(frozen=True)
class NonFinite:
    stored: int          # NaN/Inf in stored moving mean/variance, gamma and beta
    estimated: int       # NaN/Inf in the re-estimated mean/variance
    activations: int     # NaN/Inf values in the layer's inputs during calibration

    @property
    def total(self) -> int:
        return self.stored + self.estimated + self.activations


@dataclass(frozen=True)
class LayerTelemetry:
    layer: str                       # path, nested models joined with "/"
    channels: int
    axis: int
    calls: int                       # call sites (more than 1: a shared layer; all feed one estimate)
    values_per_channel: int          # activation values averaged per channel
    batches: int
    mean_drift: Drift
    variance_drift: Drift
    batch_mean_variance: float | None
    batch_noise: float | None
    acceptable_batch_size: int | None
    non_finite: NonFinite
    near_zero_variance: Channels
    epsilon_dominated: Channels
    verdict: Verdict
    reasons: tuple[str, ...]
    applied: bool                    # the re-estimated statistics were written into the model


@dataclass(frozen=True)
class Accuracy:
    samples: int
    before: float
    after: float
    source: str

    @property
    def change_points(self) -> float:
        return round(100.0 * (self.after - self.before), 4)


@dataclass(frozen=True)
class CalibrationTelemetry:
    method: str
    momentum: float | None
    batch_size: int
    samples: int
    source: str
    dtype_policy: str                # the model's policy; statistics are always computed in float32
    layers: tuple[LayerTelemetry, ...]
    accuracy: Accuracy | None = None
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0
    applied: bool = True

    @property
    def summary(self) -> dict[str, int]:
        counts = {v: 0 for v in VERDICTS}
        for layer in self.layers:
            counts[layer.verdict] += 1
        return {"layers": len(self.layers), **counts}

    @property
    def status(self) -> Literal["ok", "recalibrated", "broken"]:
        if any(layer.verdict == "broken" for layer in self.layers):
            return "broken"
        return "recalibrated" if self.applied and self.layers else "ok"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = [_layer_dict(layer) for layer in self.layers]
        if self.accuracy is not None:
            d["accuracy"]["change_points"] = self.accuracy.change_points
        d["summary"] = self.summary
        d["status"] = self.status
        d["warnings"] = list(self.warnings)
        return d


def _layer_dict(layer: LayerTelemetry) -> dict:
    d = asdict(layer)
    d["reasons"] = list(layer.reasons)
    for key in ("near_zero_variance", "epsilon_dominated"):
        d[key]["first"] = list(d[key]["first"])
    d["non_finite"]["total"] = layer.non_finite.total
    return d


@dataclass
class LayerObservation:
    """What a calibration pass saw at one BN layer (streamed: a few vectors, whatever the sample count)."""

    path: str
    axis: int
    calls: int
    stored: BNParams
    mean: np.ndarray | None = None            # re-estimated
    var: np.ndarray | None = None
    values_per_channel: int = 0
    batches: int = 0
    batch_means_variance: np.ndarray | None = None   # per channel, across full-size batches
    non_finite_activations: int = 0
    notes: list[str] = field(default_factory=list)


def _count_non_finite(*arrays) -> int:
    return int(sum(np.size(a) - np.count_nonzero(np.isfinite(a)) for a in arrays if a is not None))


def _rms(v: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(v)))) if v.size else 0.0


def _finite_float(v: float) -> float:
    return float(v) if math.isfinite(v) else float("nan")


def assess(obs: LayerObservation, config: CalibrateConfig, batch_size: int) -> LayerTelemetry:
    """Telemetry and verdict for one layer from what calibration observed. ``applied`` is decided here too:
    statistics are written only when they are finite."""
    st = obs.stored
    eps = st.eps
    stored_bad = _count_non_finite(st.mean, st.var, st.gamma, st.beta)
    est_bad = _count_non_finite(obs.mean, obs.var) if obs.mean is not None else 0
    channels = int(st.mean.size)
    reasons: list[str] = list(obs.notes)
    usable = obs.mean is not None and est_bad == 0
    if usable:
        var_e = np.maximum(obs.var, 0.0)
        std_e = np.sqrt(var_e + eps)
        with np.errstate(invalid="ignore", over="ignore"):
            d_mean = st.mean - obs.mean
            mean_drift = Drift(_finite_float(np.linalg.norm(d_mean)), _finite_float(_rms(d_mean / std_e)))
            scale = np.sqrt(np.maximum(st.var + eps, 0.0) / (var_e + eps)) - 1.0
            var_drift = Drift(_finite_float(np.linalg.norm(st.var - var_e)), _finite_float(_rms(scale)))
        positive = var_e[var_e > 0]
        floor = 1e-6 * float(np.median(positive)) if positive.size else 0.0
        near_zero = Channels.where(var_e <= max(floor, 1e-12))
        eps_dom = Channels.where(var_e < eps)
    else:
        nan = float("nan")
        mean_drift = var_drift = Drift(nan, nan)
        near_zero = eps_dom = Channels(0)
        var_e = std_e = None
    noise = bmv = acceptable = None
    if usable and obs.batch_means_variance is not None:
        bmv = float(np.mean(obs.batch_means_variance))
        noise = _rms(np.sqrt(np.maximum(obs.batch_means_variance, 0.0)) / std_e)
        acceptable = max(1, math.ceil(batch_size * (noise / config.noise_tolerance) ** 2))
    non_finite = NonFinite(stored_bad, est_bad, obs.non_finite_activations)
    # A drift within three standard errors of the estimate is sampling noise, not staleness.
    standard_error = noise / math.sqrt(obs.batches) if noise is not None and obs.batches else 0.0

    verdict: Verdict = "ok"
    if non_finite.total or np.any(st.var < 0):
        verdict = "broken"
        if stored_bad:
            reasons.append(f"{stored_bad} NaN/Inf values in the stored statistics or gamma/beta")
        if obs.non_finite_activations:
            reasons.append(f"{obs.non_finite_activations} NaN/Inf activation values reach this layer")
        if est_bad:
            reasons.append(f"re-estimated statistics have {est_bad} NaN/Inf values; stored ones kept")
        if np.any(st.var < 0):
            reasons.append(f"{int(np.sum(st.var < 0))} negative stored variances")
    elif mean_drift.relative > max(config.stale_mean_shift, 3 * standard_error) \
            or var_drift.relative > max(config.stale_scale_change, 3 * standard_error):
        verdict = "stale"
        reasons.append(f"stored means are off by {mean_drift.relative:.3g} std, scales by "
                       f"{100 * var_drift.relative:.3g} % (limits {config.stale_mean_shift:g} std, "
                       f"{100 * config.stale_scale_change:g} %)")
    elif noise is not None and noise > config.noise_tolerance:
        verdict = "noisy"
        reasons.append(f"a batch of {batch_size} moves the channel means by {noise:.3g} std (limit "
                       f"{config.noise_tolerance:g}): use batches of at least {acceptable}")
    if near_zero.count:
        reasons.append(f"{near_zero.count} of {channels} channels have (near-)zero variance (dead)")
    if eps_dom.count:
        reasons.append(f"{eps_dom.count} of {channels} channels have variance below epsilon {eps:g}")
    return LayerTelemetry(
        layer=obs.path, channels=channels, axis=obs.axis, calls=obs.calls, values_per_channel=obs.values_per_channel,
        batches=obs.batches, mean_drift=mean_drift, variance_drift=var_drift, batch_mean_variance=bmv,
        batch_noise=noise, acceptable_batch_size=acceptable, non_finite=non_finite, near_zero_variance=near_zero,
        epsilon_dominated=eps_dom, verdict=verdict, reasons=tuple(reasons), applied=usable)


TABLE_COLUMNS = ("BN layer", "ch", "mean Δ (σ)", "scale Δ", "noise (σ)", "ok batch ≥", "NaN/Inf", "dead",
                 "eps-dom", "verdict")


def _num(v: float | None, spec: str) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def table_rows(t: CalibrationTelemetry) -> list[tuple[str, ...]]:
    """Rows for people, in TABLE_COLUMNS order."""
    rows = []
    for layer in t.layers:
        verdict = {"stale": "stale → recalibrated" if layer.applied and t.applied else "stale → recalibrate"}.get(
            layer.verdict, layer.verdict)
        rows.append((layer.layer, str(layer.channels), _num(layer.mean_drift.relative, ".3f"),
                     _num(layer.variance_drift.relative, ".1%"), _num(layer.batch_noise, ".3f"),
                     _num(layer.acceptable_batch_size, "d"), str(layer.non_finite.total),
                     str(layer.near_zero_variance.count), str(layer.epsilon_dominated.count), verdict))
    return rows


def summary_line(t: CalibrationTelemetry) -> str:
    s = t.summary
    parts = [f"{s[v]} {v}" for v in VERDICTS if s[v]]
    line = (f"{s['layers']} BN layers ({', '.join(parts) or 'none'}); {t.method} statistics from {t.samples} "
            f"samples in batches of {t.batch_size}")
    if t.accuracy is not None:
        a = t.accuracy
        line += (f"; top-1 {a.before:.4f} → {a.after:.4f} ({a.change_points:+.2f} pts) on {a.samples} "
                 f"evaluation samples")
    return line
