"""edgeprep's own PTQ as a stage: the quantization parameters computed once, then exported to every format.

``owned_params`` runs ``edgeprep.ptq`` on the model to convert (CLE, statistics, ranges, AdaRound, bias correction:
``[quantize.ptq]``). ``export_int8`` writes one format's int8 artifact from the result: TFLite and OpenVINO convert
the fake-quant graph (fixed ranges, kernels already on the int8 grid), so both carry the same integers; Core ML
(``Backend.qat_reconverts``) converts a copy of the model whose kernels and biases are those same values, and its
8-bit per-channel weights reproduce the grid. The QAT route exports its fine-tuned graph with the same function.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from edgeprep.artifact import Artifact
from edgeprep.backends import get_backend
from edgeprep.config.quantize import QuantizeConfig
from edgeprep.data import Dataset
from edgeprep.models import ModelHandle
from edgeprep.outputs import atomic_path, publish


@dataclasses.dataclass
class Built:
    """One int8 artifact per format, how to rebuild it with layers kept float, and its float twin."""

    artifact: Artifact
    float_path: object
    requantize: object


@dataclasses.dataclass
class OwnedParams:
    """The quantized graph (``QATModel`` with the chosen ranges and rounded kernels) and what made it."""

    qat: object
    account: dict
    activations: str


def settings_for(cfg: QuantizeConfig):
    from edgeprep.ptq.adaround import AdaRoundConfig
    from edgeprep.ptq.optimize import PTQSettings

    p = cfg.ptq
    return PTQSettings(ranges=p.ranges, percentile=cfg.percentile, cle=p.cle, adaround=p.adaround,
                       bias_correction=p.bias_correction, calibration_samples=cfg.calibration_samples,
                       samples=p.samples, activations=p.activations,
                       adaround_config=AdaRoundConfig(iterations=p.adaround_iterations))


def owned_params(model: ModelHandle, calibration: Dataset, cfg: QuantizeConfig, step=None) -> OwnedParams:
    """Run the ``[quantize.ptq]`` algorithms on ``model``; ``step(msg)`` reports each as it starts."""
    from edgeprep._util import quiet
    from edgeprep.ptq.optimize import quantize_params

    settings = settings_for(cfg)
    with quiet():
        qat, account = quantize_params(model.obj, calibration, settings, progress=step)
    if settings.activations == "int16":
        qat.activation_bits = 16
        n = min(cfg.calibration_samples, calibration.count)

        def representative():
            for x, _ in calibration.batches(64, n):
                for i in range(len(x)):
                    yield [x[i:i + 1]]
        qat.representative = representative
    return OwnedParams(qat, account, settings.activations)


def label(activations: str) -> str:
    """How a parameter set is named on the console ("int8" or the weights-only / 16-bit one)."""
    return "int8 activations" if activations == "int8" else "weights only / 16-bit activations"


def owned_or_warning(model: ModelHandle, calibration: Dataset, cfg: QuantizeConfig, activations: str,
                     step=None) -> tuple[OwnedParams | None, str | None]:
    """``owned_params`` for one activation precision, or (None, a warning) when the fake-quant plan cannot run on
    this model: the converters' own PTQ is then used, by ``run``, ``quantize`` and ``convert`` alike."""
    from edgeprep._util import first_line
    from edgeprep.errors import EdgeprepError

    cfg = dataclasses.replace(cfg, ptq=dataclasses.replace(cfg.ptq, activations=activations))
    try:
        return owned_params(model, calibration, cfg, step=step), None
    except EdgeprepError:
        raise
    except Exception as exc:     # a graph the fake-quant plan cannot run
        return None, (f"edgeprep PTQ could not run on this model ({first_line(exc)}): int8 uses each converter's own "
                      "PTQ (set [quantize.ptq] engine = \"vendor\" to silence this)")


def describe(owned: OwnedParams) -> str:
    """What the owned parameters are, for the artifact's quantization record."""
    s = owned.account["settings"]
    algos = [f"{s['ranges']} ranges"] + [a for a, on in (("CLE", s["cle"]), ("AdaRound", bool(s["adaround"])),
                                                          ("bias correction", s["bias_correction"])) if on]
    return "edgeprep PTQ: " + ", ".join(algos)


def snapped_model(owned: OwnedParams, model: ModelHandle) -> ModelHandle | None:
    """A copy of the model whose convolutions hold the quantized kernels and corrected biases (for a backend that
    converts a Keras model and quantizes its weights itself: Core ML; Dense layers keep their float weights, which
    it quantizes per channel, finer than TFLite's per-tensor Dense grid), or None when the model cannot hold them (a
    BatchNorm not folded into its conv, or a corrected bias on a layer without one)."""
    import keras

    qat = owned.qat
    linear = [s for s in qat.steps if s.kind == "linear"]
    if any(s.fold is not None for s in linear):
        return None
    if any(not s.layer.use_bias and s.name in qat.overrides and qat.overrides[s.name][1].any() for s in linear):
        return None
    from edgeprep.qat.model import kernel_kind

    work = qat.model
    copy = keras.models.clone_model(work)
    copy.set_weights(work.get_weights())
    layers = {layer.name: layer for layer in copy.layers}
    for s in linear:
        if kernel_kind(s.layer) == "dense":
            continue   # Core ML quantizes Dense per channel, finer than the per-tensor grid TFLite needs: its own
        w, b = qat.overrides.get(s.name) or qat.folded_numpy(s)
        layer = layers[s.name]
        if kernel_kind(layer) == "separable":
            layer.depthwise_kernel.assign(w[0])
            layer.pointwise_kernel.assign(w[1])
        else:
            layer.kernel.assign(w)
        if layer.use_bias:
            layer.bias.assign(b)
    return dataclasses.replace(model, obj=copy)


def qat_start(owned: OwnedParams) -> tuple[object, dict[str, tuple[float, float]], list[str]]:
    """Where QAT starts from edgeprep's PTQ: a copy of the (CLE-equalized) model whose layers hold AdaRound's
    kernels and the corrected biases — BatchNorm left in place, each kernel divided by its BN's scale so that the
    fold gives the PTQ values back — and the searched activation ranges. Also returns what could not be carried
    (a corrected bias on a layer with neither a bias nor a BN shift to hold it)."""
    import keras

    from edgeprep.bn.maths import bn_affine
    from edgeprep.qat.model import kernel_kind

    qat = owned.qat
    work = qat.model
    copy = keras.models.clone_model(work)
    copy.set_weights(work.get_weights())
    layers = {layer.name: layer for layer in copy.layers}
    notes = []
    for s in (s for s in qat.steps if s.kind == "linear" and s.name in qat.overrides):
        w, b = qat.overrides[s.name]
        layer, kind = layers[s.name], kernel_kind(s.layer)
        kernels = list(w) if kind == "separable" else [w]
        bn = layers[s.fold.name] if s.fold is not None else None
        if bn is not None:     # fold: w * scale, bias * scale + shift (per output channel): undo it
            scale, shift = bn_affine(bn.gamma.numpy() if bn.scale else None, bn.beta.numpy() if bn.center else None,
                                     qat.vars[f"{bn.name}:mean"].numpy(), qat.vars[f"{bn.name}:var"].numpy(),
                                     bn.epsilon)
            scale = np.where(np.abs(scale) > 1e-12, scale, 1e-12)
            last = kernels[-1]
            view = last.shape[-2:] if kind == "depthwise" else last.shape[-1:]
            kernels[-1] = (last / scale.reshape(view)).astype(np.float32)
            if layer.use_bias:
                layer.bias.assign(((b - shift) / scale).astype(np.float32))
            elif bn.center:    # no bias of its own: the BN's shift carries the correction
                bn.beta.assign((bn.beta.numpy() + b - shift).astype(np.float32))
            elif np.any(np.abs(b - shift) > 1e-7):
                notes.append(f"{s.name}: its corrected bias has nowhere to go (no bias, BN without a shift)")
        elif layer.use_bias:
            layer.bias.assign(np.asarray(b, np.float32))
        elif np.any(np.abs(b) > 1e-7):
            notes.append(f"{s.name}: its corrected bias has nowhere to go (the layer has no bias)")
        if kind == "separable":
            layer.depthwise_kernel.assign(kernels[0])
            layer.pointwise_kernel.assign(kernels[1])
        else:
            layer.kernel.assign(kernels[0])
    ranges = {k[:-4]: (float(qat.vars[k].numpy()), float(qat.vars[k[:-4] + ":max"].numpy()))
              for k in qat.vars if k.endswith(":min")}
    return copy, ranges, notes


def activations_for(cfg: QuantizeConfig, fmt: str) -> str:
    """Which parameter set a format's int8 uses: Core ML (its weights quantized by its own converter, fp16
    activations) the weights-only one, the others ``[quantize.ptq] activations``."""
    return "int16" if get_backend(fmt).qat_reconverts else cfg.ptq.activations


def export_owned(owned: OwnedParams, model: ModelHandle, fmt: str, path: Path, workdir: Path, target,
                 calibration: Dataset, layer_error_samples: int = 0) -> tuple[Artifact, Built | None, ModelHandle]:
    """One int8 artifact from the owned parameters, as ``run``, ``quantize`` and ``convert`` all make it: the
    fake-quant graph exported (TFLite, OpenVINO; with its ``Built``), or the model with the quantized kernels
    converted by a backend that quantizes weights itself (Core ML; ``Built`` None). Also returns the model the
    artifact was converted from."""
    from edgeprep.stages.convert import convert, target_options

    backend = get_backend(fmt)
    activations = target.quantize.ptq.activations
    algorithms = describe(owned)
    if backend.qat_reconverts:
        snapped = snapped_model(owned, model)
        source = snapped or model
        art = convert(source, out=path, workdir=workdir, calibration=calibration,
                      **target_options(target, fmt, "int8"))
        if snapped is not None:
            art = dataclasses.replace(art, quantization={**art.quantization, "algorithms": algorithms})
        else:
            art = dataclasses.replace(art, notes=art.notes + (
                "edgeprep PTQ's kernels could not be written into this model (BatchNorm not folded, or a corrected "
                "bias on a layer without one): the converter quantized the original weights",))
        return art, None, source
    acts = "int16 (16x8)" if activations == "int16" and backend.int16_activations else \
        "float (this backend has no int16 path: weights-only int8)" if activations == "int16" else \
        f"int8 ({owned.account['settings']['ranges']} ranges)"
    description = {"weights": "int8 per-channel (Dense per-tensor)", "activations": acts, "algorithms": algorithms}
    built = export_int8(owned.qat, fmt, target.options_for(fmt), path, model.input_shape, workdir, method="ptq",
                        description=description, layer_error_samples=layer_error_samples,
                        options_for=target.options_for)
    keep = target.quantize.keep_float
    if keep and not target.quantize.keep_float_auto:     # layers named by the user (or a converter's node names)
        names = {s.name for s in owned.qat.steps}
        unknown = [k for k in keep if layer_of(k, names) is None]
        if unknown:
            from edgeprep.errors import ConfigError

            raise ConfigError(f"keep_float names no layer of this model: {', '.join(unknown[:3])}",
                              "use Keras layer names (or node names from the per-layer error report)")
        built = dataclasses.replace(built, artifact=built.requantize(tuple(keep)))
    return built.artifact, built, model


def export_int8(qat, fmt: str, options, path: Path, input_shape: tuple, workdir: Path, *, method: str,
                description: dict, layer_error_samples: int, options_for) -> Built:
    """Write ``fmt``'s int8 artifact of the fake-quant graph ``qat`` at ``path`` (its float twin too when
    per-layer error is measured), with a rebuild that keeps named layers in float."""
    from edgeprep.stages.convert import open_artifact

    backend = get_backend(fmt)

    def build(keep: frozenset) -> Artifact:
        keep = keep | _fused_activations(qat, keep)
        ours = backend.recognizes   # rebuilt with layers kept float: replaces the earlier one
        with atomic_path(path, ours) as tmp:
            backend.export_qat(qat, input_shape, tmp, workdir, options, keep=keep)
            for made, final in zip(backend.companion_files(tmp), backend.companion_files(path)):
                publish(made, final, lambda _p: True, "")     # before the main file: it marks completion
        art = open_artifact(path, options_for)
        quant = {**description, "io": "float32" if getattr(qat, "activation_bits", 8) == 16 else
                 backend.int8_io(options), "method": method}
        floated = _floated_hard_swish(qat, backend, path) - keep
        if keep or floated:
            # hard-swish layers the export ran in float on purpose ([tflite] float_hard_swish) are listed with
            # the kept ones: the all_int8 check of QAT artifacts accepts the float ops of listed layers
            quant["kept_float"] = sorted(keep | floated)
        notes = art.notes
        if floated:
            quant["float_hard_swish"] = len(floated)
            notes += (f"hard-swish of {len(floated)} layer(s) run in float between int8 tensors, as the format's "
                      "options ask (TFLite: [tflite] float_hard_swish; XNNPACK has no int8 HARD_SWISH)",)
        return dataclasses.replace(art, precision="int8", quantization=quant, notes=notes)

    art = build(frozenset())
    float_path = None
    if layer_error_samples:
        float_path = backend.export_qat(qat, input_shape, workdir / f"{method}-float{backend.suffix}", workdir,
                                        options, quantize=False)
    names = {s.name for s in qat.steps}

    def requantize(nodes):
        return build(frozenset(layer_of(n, names) for n in nodes) - {None})
    return Built(art, float_path, requantize)


def _floated_hard_swish(qat, backend, path: Path) -> frozenset:
    """The hard-swish activation layers whose op the export left in float (TFLite's ``[tflite]
    float_hard_swish``), read back from the artifact of a backend whose int8 exports are otherwise all integer."""
    from edgeprep.qat.graph import HARD_SWISH

    layers = {s.name for s in qat.steps if s.kind in ("act", "linear") and s.activation in HARD_SWISH}
    if not layers or not backend.all_int8_qat:
        return frozenset()
    return frozenset(p for o in backend.float_compute_ops(path) for p in o.layers & layers)


def _fused_activations(qat, keep: frozenset) -> frozenset:
    """The activation layers whose range point is a kept linear layer's output (a Conv2D followed by its ReLU
    layer): kept with it, else the converter sees float weights between int8 tensors and quantizes them itself."""
    out = set()
    for s in qat.steps:
        if s.name in keep and s.kind == "linear" and not s.quantize_output and len(s.consumers) == 1 \
                and s.consumers[0].kind == "act":
            out.add(s.consumers[0].name)
    return frozenset(out)


def layer_of(node: str, names: set[str]) -> str | None:
    """The Keras layer a converted node belongs to (its name scope), longest match first."""
    parts = [p for seg in node.split(";") for p in seg.split("/")]
    hits = [p for p in parts if p in names]
    return max(hits, key=len) if hits else None
