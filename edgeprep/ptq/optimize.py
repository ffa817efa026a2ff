"""The post-training algorithms in order, on one model: CLE -> statistics -> ranges -> AdaRound -> bias correction.

``quantize_params`` returns a ``QATModel`` carrying the result (its range variables and its ``overrides``) and a
plain-data account for the report. The model passed in is not changed: the algorithms work on a copy.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from edgeprep.ptq.adaround import AdaRoundConfig


@dataclass(frozen=True)
class PTQSettings:
    """What ``quantize_params`` runs (the ``[quantize.ptq]`` table of a target resolves to this)."""

    ranges: str = "mse"               # minmax | percentile | mse
    percentile: float = 99.99
    cle: bool = True
    adaround: bool = True
    bias_correction: bool = True
    calibration_samples: int = 500    # statistics pass
    samples: int = 256                # AdaRound and bias correction
    activations: str = "int8"         # int16: AdaRound and bias correction see float activations
    adaround_config: AdaRoundConfig = AdaRoundConfig()


def _batches(data, n: int, batch: int = 64) -> list[np.ndarray]:
    return [np.asarray(x, np.float32) for x, _ in data.batches(batch, n)]


def _copy(model):
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _fused_relu(step):
    """The ReLU/ReLU6 applied right after a linear step's output (its own activation, or the ReLU layer fused into
    it by the converters), as a TensorFlow function; None when the next op is not one."""
    import tensorflow as tf

    fns = {"relu": tf.nn.relu, "relu6": tf.nn.relu6}
    if step.activation in fns:
        return fns[step.activation]
    tail = step.consumers[0] if step.fold is not None and step.consumers else step
    if step.activation in (None, "linear") and len(tail.consumers) == 1 and tail.consumers[0].kind == "act":
        return fns.get(tail.consumers[0].activation)
    return None


def _adaround(qat, linear: list, batches: list, chosen: dict, act: bool, cfg: AdaRoundConfig) -> list[dict]:
    """Round each linear step's kernel with AdaRound, in execution order, into ``qat.overrides``: its input from
    the quantized graph (the layers before it rounded), its target from the float graph. Returns what each did."""
    from edgeprep.ptq import adaround
    from edgeprep.ptq.walk import Walk
    from edgeprep.qat.model import Mode, kernel_kind, mid_point

    floats = Walk(qat, batches, Mode(quantize=False, export=True))
    quantized = Walk(qat, batches, Mode(quantize=True, export=True, activations=act))
    per_layer = []
    for s in linear:
        t_layer = time.perf_counter()
        target, x = floats.tap(s.name, "out", again=False), quantized.tap(s.name, "in")
        w, b = qat.export_weights[s.name]
        kind = kernel_kind(s.layer)
        mid = _fake_quant(*chosen[mid_point(s)]) if mid_point(s) and act else None
        r = adaround.round_layer(s.layer, kind, w if kind == "separable" else (w,), b, x, target, _fused_relu(s),
                                 cfg, mid)
        qat.overrides[s.name] = (r.kernels if kind == "separable" else r.kernels[0], b)
        per_layer.append({"layer": s.name, "mse_nearest": r.mse_nearest, "mse": r.mse,
                          "flipped": round(r.flipped, 4), "seconds": round(time.perf_counter() - t_layer, 2)})
    return per_layer


def _fake_quant(lo: float, hi: float):
    """The int8 activation quantizer with a fixed range (a SeparableConv2D's inner tensor), as a function."""
    import tensorflow as tf

    return lambda y: tf.quantization.fake_quant_with_min_max_vars(y, lo, hi, num_bits=8)


def quantize_params(model, calibration, settings: PTQSettings, progress=None) -> tuple[object, dict]:
    """The quantized graph of ``model`` (a Keras model, BatchNorm folded or not) with the algorithms of
    ``settings`` applied, and what each did. ``progress(msg)`` is called as each algorithm starts."""
    from edgeprep.ptq import bias, cle, ranges, stats
    from edgeprep.ptq.grid import nearest_kernels
    from edgeprep.qat.model import QATModel, kernel_kind

    say = progress or (lambda _m: None)
    account: dict = {"settings": {k: v for k, v in asdict(settings).items() if k != "adaround_config"},
                     "seconds": {}}
    if settings.adaround:
        account["settings"]["adaround"] = asdict(settings.adaround_config)
    work = _copy(model)
    t = time.perf_counter()
    probe = QATModel(work, ranges={}, state=None, _calibrating=True)
    if settings.cle:
        say("cross-layer equalization")
        account["cle"] = cle.equalize(probe.steps)
        account["seconds"]["cle"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    say(f"activation statistics on {settings.calibration_samples} samples")
    calib = _batches(calibration, settings.calibration_samples)
    st = stats.collect(probe, calib)
    exact = frozenset(s.name for s in probe.steps if s.kind == "input") | _logit_points(probe)
    chosen = ranges.search(st, settings.ranges, settings.percentile, exact)
    account["ranges"] = {"method": settings.ranges, "clipped": sum(
        1 for k, (lo, hi) in chosen.items() if hi < st[k].hi - 1e-7 or lo > min(0.0, st[k].lo) + 1e-7),
        "tensors": len(chosen)}
    account["seconds"]["statistics_and_ranges"] = round(time.perf_counter() - t, 2)
    qat = QATModel(work, chosen)
    qat.prepare_export()      # the folded float kernels, once: the algorithms change only ``qat.overrides``
    act = settings.activations == "int8"
    sub = _batches(calibration, settings.samples, 128)     # large batches: the passes run eagerly, step by step
    linear = [s for s in qat.steps if s.kind == "linear"]
    if settings.adaround:
        t = time.perf_counter()
        say(f"AdaRound, {len(linear)} layers x {settings.adaround_config.iterations} iterations")
        account["adaround"] = _adaround(qat, linear, sub, chosen, act, settings.adaround_config)
        account["seconds"]["adaround"] = round(time.perf_counter() - t, 2)
    if settings.bias_correction:
        t = time.perf_counter()
        say(f"bias correction on {settings.samples} samples")
        for s in linear:      # correct on the grid the export will use (AdaRound's or nearest)
            if s.name not in qat.overrides:
                w, b = qat.export_weights[s.name]
                qat.overrides[s.name] = (nearest_kernels(w, kernel_kind(s.layer)), b)
        account["bias_correction"] = bias.correct(qat, sub, [s.name for s in linear], activations=act)
        account["seconds"]["bias_correction"] = round(time.perf_counter() - t, 2)
    return qat, account


def _logit_points(qat) -> frozenset:
    """Range points whose tensor a softmax/sigmoid/tanh reads (the logits): clipping them changes the winner."""
    from edgeprep.qat.graph import FIXED_RANGE

    names = set()
    for s in qat.steps:
        if s.kind == "linear" and s.activation in FIXED_RANGE:
            names.add(s.name)
        if any(c.kind == "act" and c.activation in FIXED_RANGE for c in s.consumers):
            names.add(s.name)
    return frozenset(names)
