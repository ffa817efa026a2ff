"""Calibrate stage: re-estimate every BatchNorm layer's moving mean and variance from calibration data.

``calibrate(model, data, config) -> CalibrationResult`` works on an fp32 copy of the model and never changes
the model it is given. For each BN layer, in the order the model executes them (a topological order, nested
models included), it streams every calibration batch through the model in inference mode, with a hook on that
layer reducing the layer's input to per-channel statistics. The forward pass stops at the layer, so a layer costs a
partial forward per batch; the statistics are written before the next layer is estimated, so later layers see the
re-estimated earlier ones — what the deployed model will compute.

``method="exact"`` merges per-batch moments exactly (the population mean and biased variance over all samples,
independent of the batch size); ``method="ema"`` applies Keras' momentum update batch after batch, starting from
the stored statistics. Memory holds one batch and a few vectors per layer, whatever the number of samples.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from edgeprep._util import quiet
from edgeprep.bn.graph import BNParams, bn_layers, channel_axis, float32_copy, non_fp32_policies
from edgeprep.bn.maths import Moments, Welford, batch_moments
from edgeprep.bn.telemetry import Accuracy, CalibrationTelemetry, LayerObservation, assess
from edgeprep.config.calibrate import CalibrateConfig
from edgeprep.data import Dataset
from edgeprep.errors import DataError

EVAL_BATCH = 256
CHUNK = 256          # samples per forward pass during calibration (a multiple of the batch size)


@dataclass(frozen=True)
class CalibrationResult:
    model: Any                       # the recalibrated fp32 Keras model (a copy)
    telemetry: CalibrationTelemetry
    before: Any = None               # ``outputs_of`` the model with its stored statistics, when given
    after: Any = None                # ``outputs_of`` the recalibrated model: the float reference verification uses


class _Reached(BaseException):
    """Raised by a hook once the layer being calibrated has seen this batch: the rest of the forward is skipped.
    A BaseException so Keras' call wrappers pass it through untouched."""


@contextlib.contextmanager
def _hook(layer, observe: Callable[[Any], None]) -> Iterator[None]:
    """Call ``observe(inputs)`` whenever ``layer`` runs (instance-level override of ``call``, removed after)."""
    original = layer.call

    def call(inputs, *args, **kwargs):
        observe(inputs)
        return original(inputs, *args, **kwargs)

    object.__setattr__(layer, "call", call)
    try:
        yield
    finally:
        object.__delattr__(layer, "call")


def execution_order(model, sample: np.ndarray) -> list[tuple[str, Any, int]]:
    """``(path, layer, calls per forward)`` of every BN layer in the order a forward pass runs them (nested models
    included). A layer called more than once per forward (a shared layer, or inside a model used twice) gets one
    estimate from all its calls; layers a forward never reaches come last, with 0 calls."""
    layers = bn_layers(model)
    seen: list[int] = []
    with contextlib.ExitStack() as stack:
        for i, (_, layer) in enumerate(layers):
            stack.enter_context(_hook(layer, lambda _x, i=i: seen.append(i)))
        model(sample, training=False)
    order = list(dict.fromkeys(seen)) + [i for i in range(len(layers)) if i not in seen]
    return [(layers[i][0], layers[i][1], seen.count(i)) for i in order]


def _sub_batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _estimate(model, path: str, layer, calls: int, data: Dataset, samples: int, config: CalibrateConfig,
              progress: Callable[[int], None] | None) -> LayerObservation:
    """Stream the calibration data to one BN layer and reduce its inputs to per-channel statistics.

    Forward passes run on chunks of several batches (inference mode is per sample, so this changes nothing but
    speed); the hook splits each chunk back into batches of ``config.batch_size`` for the per-batch statistics.
    """
    stored = BNParams.of(layer)
    obs = LayerObservation(path, stored.axis, calls, stored)
    moments = Moments()
    ema_mean, ema_var = stored.mean.copy(), stored.var.copy()
    batch_means = Welford()
    per_call: list[list[tuple[int, np.ndarray, np.ndarray] | None]] = []

    def observe(inputs) -> None:
        x = np.asarray(inputs)
        axis = channel_axis(layer, x.ndim)
        found = []
        for part in _sub_batches(len(x), config.batch_size):
            xb = x[part]
            bad = int(xb.size - np.count_nonzero(np.isfinite(xb)))
            obs.non_finite_activations += bad
            found.append(None if bad else batch_moments(xb, axis))
        per_call.append(found)
        if len(per_call) >= calls:
            raise _Reached

    chunk = config.batch_size * max(1, CHUNK // config.batch_size)
    with _hook(layer, observe):
        for x, _ in data.batches(chunk, samples):
            per_call.clear()
            try:
                model(x, training=False)
            except _Reached:
                pass
            for i, part in enumerate(_sub_batches(len(x), config.batch_size)):
                stats = [found[i] for found in per_call if found[i] is not None]
                if not stats:
                    continue
                count, mean, m2 = stats[0] if len(stats) == 1 else _merge(stats)
                moments.update(count, mean, m2)
                if config.method == "ema":
                    m = config.momentum
                    ema_mean = m * ema_mean + (1 - m) * mean
                    ema_var = m * ema_var + (1 - m) * (m2 / count)
                if part.stop - part.start == config.batch_size:
                    batch_means.add(mean)
                obs.batches += 1
            if progress:
                progress(len(x))
    if moments.mean is not None:
        obs.values_per_channel = moments.count
        obs.mean, obs.var = (moments.mean, moments.variance) if config.method == "exact" else (ema_mean, ema_var)
        obs.batch_means_variance = batch_means.variance
    if calls > 1:
        obs.notes.append(f"called {calls} times per forward pass (shared): all calls feed one estimate")
    return obs


def _merge(stats: list[tuple[int, np.ndarray, np.ndarray]]) -> tuple[int, np.ndarray, np.ndarray]:
    m = Moments()
    for s in stats:
        m.update(*s)
    return m.count, m.mean, m.m2


def accuracy(model, data: Dataset, limit: int | None = None) -> float:
    correct = total = 0
    for x, y in data.batches(EVAL_BATCH, limit):
        pred = np.asarray(model(x, training=False))
        correct += int(np.sum(np.argmax(pred.reshape(len(x), -1), axis=1) == y))
        total += len(x)
    return correct / max(total, 1)


def check_data(data: Dataset, samples: int) -> None:
    """Refuse calibration data with NaN/Inf, giving the total count (statistics from them are meaningless)."""
    bad = data.head(samples).count_non_finite()
    if bad:
        raise DataError(f"{data.source}: {bad} NaN/Inf values in the calibration data (first {samples} samples)",
                        "clean the data: BatchNorm statistics computed from non-finite values are meaningless")


def calibrate(model, data: Dataset, config: CalibrateConfig = CalibrateConfig(), *,
              evaluation: Dataset | None = None, evaluation_samples: int | None = None,
              progress: Callable[[int], None] | None = None,
              warn: Callable[[str], None] | None = None,
              outputs_of: Callable[[Any], Any] | None = None) -> CalibrationResult:
    """Re-estimate the BN statistics of (an fp32 copy of) the Keras ``model`` from ``data``.

    ``evaluation`` with labels adds top-1 accuracy before and after. ``progress(n)`` is called per batch and
    layer (``total = samples * layers``); ``warn(message)`` receives warnings, which are also recorded.
    ``outputs_of(keras_model)`` computes a model's outputs on the evaluation samples (a ``stages.verify.Reference``):
    given, the before/after accuracy comes from it and both results are returned, so the caller reuses them as the
    stale outputs and the float reference instead of running the evaluation set through the model again.
    """
    start = time.perf_counter()
    samples = min(config.samples or data.count, data.count)
    check_data(data, samples)
    warnings: list[str] = []

    def note(message: str) -> None:
        warnings.append(message)
        if warn:
            warn(message)

    if config.batch_size == 1 or samples == 1:
        note("batch size 1: every per-batch statistic is a single sample's, so they are noisy"
                        + (" (the exact method still averages over all samples, but the batch-noise telemetry "
                           "cannot tell small-batch behaviour apart)" if config.method == "exact" else
                           "; the EMA estimate follows the last few samples: use batches of 32 or more"))
    policies = non_fp32_policies(model)
    if policies:
        note(f"the model uses dtype policy {', '.join(policies)}; statistics are computed and stored in "
                        "float32")
    with quiet():
        work = float32_copy(model)
        first = next(data.batches(1, 1))[0]
        order = execution_order(work, first)
        before = before_ref = None
        if evaluation is not None and evaluation.has_labels and outputs_of is None:
            before = accuracy(work, evaluation, evaluation_samples)
    if outputs_of is not None:
        before_ref = outputs_of(work)
        before = before_ref.accuracy
    observations = []
    for path, layer, calls in order:
        if calls == 0:
            note(f"{path}: not reached by a forward pass (not connected to the output); kept as stored")
            continue
        with quiet():
            obs = _estimate(work, path, layer, calls, data, samples, config, progress)
        telemetry = assess(obs, config, config.batch_size)
        if telemetry.applied:
            layer.moving_mean.assign(obs.mean.astype(np.float32))
            layer.moving_variance.assign(np.maximum(obs.var, 0.0).astype(np.float32))
        observations.append(telemetry)
    acc = after_ref = None
    if outputs_of is not None:
        after_ref = outputs_of(work)
    if before is not None:
        if after_ref is not None:
            after = after_ref.accuracy
        else:
            with quiet():
                after = accuracy(work, evaluation, evaluation_samples)
        n = min(evaluation_samples or evaluation.count, evaluation.count)
        acc = Accuracy(n, round(before, 6), round(after, 6), evaluation.source)
    telemetry = CalibrationTelemetry(
        method=config.method, momentum=config.momentum if config.method == "ema" else None,
        batch_size=config.batch_size, samples=samples, source=data.source,
        dtype_policy=", ".join(policies) or "float32", layers=tuple(observations), accuracy=acc,
        warnings=tuple(warnings), seconds=round(time.perf_counter() - start, 3))
    return CalibrationResult(work, telemetry, before_ref, after_ref)


def copy_statistics(source, target) -> None:
    """Write the moving statistics of ``source``'s BN layers into the same layers of ``target`` (same
    architecture, any dtype policy): to save a recalibrated model in the policy it was trained with."""
    src = dict(bn_layers(source))
    for path, layer in bn_layers(target):
        layer.moving_mean.assign(np.asarray(src[path].moving_mean.numpy(), np.float32))
        layer.moving_variance.assign(np.asarray(src[path].moving_variance.numpy(), np.float32))
