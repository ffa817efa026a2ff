"""Fold stage: BatchNorm layers folded into adjacent linear layers, verified equivalent on data.

``fold_bn(model, FoldConfig(), data=...) -> FoldResult``. The rewrite is declarative, in the manner of TF Model
Optimization: each ``FoldPattern`` names a BN position relative to a linear layer and the linear layer types it
applies to; matching a pattern against the serialized model graph (``bn.rewrite.Graph``) either yields a fold or
the reason it does not apply, and the replacement is always the same — the linear layer with a bias and adjusted
weights (``bn.maths.fold_bn_params`` / ``fold_bn_into_next``) in place of the pair. Patterns are applied until
none matches, so chains fold too. Nested models are rewritten inside; BNs that cannot fold stay, listed with the
reason. The folded model is rebuilt from the edited config, and its outputs are compared with the unfolded fp32
model's: a relative error above ``max_rel_error`` refuses the fold.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any, Callable, Literal

import numpy as np

from edgeprep._util import quiet
from edgeprep.bn.graph import BNParams, bn_layers, float32_copy, non_fp32_policies, rebuild, walk
from edgeprep.bn.maths import fold_bn_into_next, fold_bn_params
from edgeprep.bn.rewrite import OUTPUT, Graph, Node
from edgeprep.data import Dataset
from edgeprep.errors import VerificationError


class FoldRefused(VerificationError):
    """The folded model does not compute what the unfolded one does within the tolerance."""

    exit_code = 1


@dataclass(frozen=True)
class FoldConfig:
    max_rel_error: float = 1e-4      # max |folded - unfolded| / max |unfolded| over the verification samples
    verify_samples: int = 256

    def __post_init__(self) -> None:
        if not self.max_rel_error > 0:
            raise ValueError("max_rel_error must be > 0")
        if self.verify_samples < 1:
            raise ValueError("verify_samples must be >= 1")


@dataclass(frozen=True)
class LinearSpec:
    """Where a linear layer type keeps its kernel and which kernel axes index input/output channels."""

    kernel: str                          # weight attribute
    out_axes: tuple[int, ...]
    in_axis: int | None                  # None: a BN before it cannot move into it
    data_format: bool = True             # has channels_last/channels_first (else channels are the last axis)


LINEAR: dict[str, LinearSpec] = {
    "Conv1D": LinearSpec("kernel", (-1,), -2),
    "Conv2D": LinearSpec("kernel", (-1,), -2),
    "DepthwiseConv2D": LinearSpec("kernel", (2, 3), 2),             # kh, kw, in, multiplier
    "SeparableConv2D": LinearSpec("pointwise_kernel", (-1,), None),  # BN after: folds into the pointwise part
    "Dense": LinearSpec("kernel", (-1,), -2, data_format=False),
}


@dataclass(frozen=True)
class FoldPattern:
    """A BatchNormalization ``position`` ("after" or "before") a layer of one of ``linear`` types."""

    name: str
    position: Literal["after", "before"]
    linear: tuple[str, ...]


PATTERNS = (
    FoldPattern("bn-after-linear", "after", tuple(LINEAR)),
    FoldPattern("bn-before-linear", "before", tuple(k for k, v in LINEAR.items() if v.in_axis is not None)),
)


@dataclass(frozen=True)
class FoldedBN:
    bn: str                  # path of the removed BN layer
    into: str                # path of the layer that absorbed it
    layer_type: str
    position: Literal["after", "before"]


@dataclass(frozen=True)
class KeptBN:
    bn: str
    reason: str


@dataclass(frozen=True)
class Equivalence:
    samples: int
    source: str
    max_abs_error: float
    max_rel_error: float
    threshold: float

    @property
    def passed(self) -> bool:
        return self.max_rel_error <= self.threshold


@dataclass(frozen=True)
class FoldReport:
    status: Literal["folded", "nothing to fold", "refused"]
    bn_layers: int
    folded: tuple[FoldedBN, ...]
    kept: tuple[KeptBN, ...]
    equivalence: Equivalence | None
    dtype_policy: str
    parameters_before: int
    parameters_after: int
    message: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["folded"], d["kept"] = [asdict(f) for f in self.folded], [asdict(k) for k in self.kept]
        if self.equivalence is not None:
            d["equivalence"]["passed"] = self.equivalence.passed
        return d


@dataclass(frozen=True)
class FoldResult:
    model: Any               # the folded fp32 Keras model (the unfolded fp32 copy when refused or nothing folded)
    report: FoldReport

    def raise_if_refused(self) -> None:
        if self.report.status == "refused":
            raise FoldRefused(self.report.message, "the unfolded model is unchanged; report this model, or "
                              "recalibrate BN statistics that are extreme (see 'edgeprep calibrate')")


# --- matching ---------------------------------------------------------------------------------------------------

def _data_channel_axis(node: Node, spec: LinearSpec, rank: int) -> int:
    if spec.data_format and node.config.get("data_format") == "channels_first":
        return 1
    return rank - 1


def _bn_axis(bn: Node, rank: int) -> int:
    return int(bn.config.get("axis", -1)) % rank


def _rank(bn: Node) -> int | None:
    shape = (bn.entry.get("build_config") or {}).get("input_shape")
    return len(shape) if shape else None


def _linear_problem(linear: Node, bn: Node, position: str) -> str | None:
    """Why ``bn`` cannot fold into ``linear`` from ``position``, or None when it can."""
    spec = LINEAR[linear.class_name]
    label = f"{linear.class_name} '{linear.name}'"
    if linear.calls > 1:
        return f"{label} is shared ({linear.calls} calls): folding would change its other calls"
    if linear.config.get("lora_rank") or (linear.config.get("quantization_config") or None):
        return f"{label} is LoRA-enabled or quantized"
    rank = _rank(bn)
    if rank is None:
        return "the BN's input rank is unknown (the layer was never built)"
    if _bn_axis(bn, rank) != _data_channel_axis(linear, spec, rank):
        return (f"the BN normalizes axis {_bn_axis(bn, rank)} but {label} has its channels on axis "
                f"{_data_channel_axis(linear, spec, rank)}")
    if position == "after":
        act = linear.config.get("activation", "linear")
        if act not in (None, "linear"):
            return f"{label} applies activation '{act}' before the BN"
        return None
    if linear.config.get("groups", 1) != 1:
        return f"{label} is a grouped convolution"
    size = linear.config.get("kernel_size")
    if size is not None and linear.config.get("padding") != "valid" and any(k != 1 for k in size):
        return (f"{label} zero-pads its input ('{linear.config.get('padding')}' padding, {tuple(size)} kernel), "
                "where the BN's shift would be lost")
    return None


def _match(graph: Graph, bn: Node) -> tuple[FoldPattern, Node] | str:
    """The first pattern ``bn`` matches and its linear layer, or why none does."""
    if bn.calls > 1:
        return f"the BN layer is shared ({bn.calls} calls)"
    why = []
    prev = graph.producer(bn)
    if prev is None:
        why.append("it follows the model input")
    elif prev.class_name not in PATTERNS[0].linear:
        kind = " (an activation)" if prev.class_name in ("ReLU", "Activation", "LeakyReLU", "ELU", "PReLU",
                                                           "Softmax") else \
            " (a nested model: folds do not cross model boundaries)" if prev.is_model else ""
        why.append(f"it follows {prev.class_name} '{prev.name}'{kind}, not a layer it folds into")
    elif prev.calls > 1:
        why.append(f"{prev.class_name} '{prev.name}' is shared ({prev.calls} calls): folding would change its "
                   "other calls")
    elif len(graph.consumers.get(prev.name, [])) > 1:
        others = [c for c in graph.consumers[prev.name] if c != bn.name]
        why.append(f"the output of {prev.class_name} '{prev.name}' also feeds "
                   f"{', '.join(repr(o) if o != OUTPUT else o for o in others)} (multiple consumers)")
    else:
        problem = _linear_problem(prev, bn, "after")
        if problem is None:
            return PATTERNS[0], prev
        why.append(problem)
    nxt = graph.only_consumer(bn)
    users = graph.consumers.get(bn.name, [])
    if nxt is None:
        why.append(f"its output feeds {len(users)} consumers" if len(users) > 1 else "its output is a model output")
    elif nxt.class_name not in PATTERNS[1].linear:
        why.append(f"the next layer, {nxt.class_name} '{nxt.name}', cannot absorb it")
    elif len(nxt.inputs) != 1:
        why.append(f"the next layer, {nxt.class_name} '{nxt.name}', has several inputs")
    else:
        problem = _linear_problem(nxt, bn, "before")
        if problem is None:
            return PATTERNS[1], nxt
        why.append(f"the next layer cannot absorb it: {problem}")
    return "; ".join(why)


# --- rewriting --------------------------------------------------------------------------------------------------

class _Weights:
    """The weights of layers being rewritten, by path, starting from the source model's (composable folds)."""

    def __init__(self, source):
        self.layers = dict(walk(source))
        self.edited: dict[str, dict[str, np.ndarray | None]] = {}

    def of(self, path: str, spec: LinearSpec) -> dict[str, np.ndarray | None]:
        if path not in self.edited:
            layer = self.layers[path]
            bias = getattr(layer, "bias", None)
            self.edited[path] = {"kernel": np.asarray(_kernel_var(layer, spec.kernel).numpy()),
                                 "bias": None if bias is None else np.asarray(bias.numpy())}
        return self.edited[path]

    def bn(self, path: str) -> BNParams:
        return BNParams.of(self.layers[path])


def _kernel_var(layer, attr: str):
    var = getattr(layer, f"_{attr}", None)     # Conv/Dense keep the variable behind a `kernel` property
    return getattr(layer, attr) if var is None else var


def _apply(weights: _Weights, pattern: FoldPattern, bn_path: str, linear: Node, linear_path: str) -> None:
    spec = LINEAR[linear.class_name]
    w = weights.of(linear_path, spec)
    p = weights.bn(bn_path)
    if pattern.position == "after":
        w["kernel"], w["bias"] = fold_bn_params(w["kernel"], w["bias"], p.gamma, p.beta, p.mean, p.var, p.eps,
                                                spec.out_axes)
    else:
        w["kernel"], w["bias"] = fold_bn_into_next(w["kernel"], w["bias"], p.gamma, p.beta, p.mean, p.var, p.eps,
                                                   spec.in_axis, spec.out_axes)
    linear.config["use_bias"] = True


def _rewrite(graph: Graph, prefix: str, weights: _Weights, folded: list, kept: dict) -> None:
    """Apply the patterns to one (sub)model graph until none matches; then descend into nested models."""
    while True:
        progress = False
        for node in list(graph.nodes.values()):
            if node.class_name != "BatchNormalization":
                continue
            found = _match(graph, node)
            if isinstance(found, str):
                kept[prefix + node.name] = found
                continue
            pattern, linear = found
            _apply(weights, pattern, prefix + node.name, linear, prefix + linear.name)
            graph.bypass(node)
            kept.pop(prefix + node.name, None)
            folded.append(FoldedBN(prefix + node.name, prefix + linear.name, linear.class_name, pattern.position))
            progress = True
            break
        if not progress:
            break
    for sub in graph.submodels():
        _rewrite(Graph(sub.config, sub.class_name == "Sequential"), f"{prefix}{sub.name}/", weights, folded, kept)


def _transfer(source, target, weights: _Weights) -> None:
    """Copy every layer's weights from ``source`` to the rebuilt ``target``; folded layers get their new ones."""
    import keras

    for path, layer in walk(target):
        if isinstance(layer, keras.Model):
            continue
        if path in weights.edited:
            spec = LINEAR[type(layer).__name__]
            _kernel_var(layer, spec.kernel).assign(weights.edited[path]["kernel"])
            layer.bias.assign(weights.edited[path]["bias"])
            for attr in ("depthwise_kernel",):   # SeparableConv2D: the depthwise part is unchanged
                if hasattr(layer, attr):
                    getattr(layer, attr).assign(getattr(weights.layers[path], attr).numpy())
        elif layer.weights:
            layer.set_weights(weights.layers[path].get_weights())


# --- verification and entry point ---------------------------------------------------------------------------------

def _verification_inputs(model, data: Dataset | None, n: int) -> tuple[np.ndarray, str]:
    if data is not None:
        x, _ = data.arrays(n)
        return x, data.source
    shape = tuple(int(d) if d is not None else 8 for d in model.inputs[0].shape[1:])
    rng = np.random.default_rng(0)
    return rng.uniform(0.0, 1.0, (min(n, 64), *shape)).astype(np.float32), "random inputs (no data given)"


def equivalence(reference, folded, x: np.ndarray, source: str, threshold: float) -> Equivalence:
    a = np.concatenate([np.asarray(reference(x[i:i + 128], training=False)) for i in range(0, len(x), 128)])
    b = np.concatenate([np.asarray(folded(x[i:i + 128], training=False)) for i in range(0, len(x), 128)])
    err = float(np.max(np.abs(a.astype(np.float64) - b)))
    scale = float(np.max(np.abs(a))) or 1.0
    return Equivalence(len(x), source, err, err / scale, threshold)


def fold_bn(model, config: FoldConfig = FoldConfig(), *, data: Dataset | None = None,
            progress: Callable[[str], None] | None = None) -> FoldResult:
    """Fold the BN layers of the Keras ``model`` (an fp32 copy; ``model`` is not changed).

    Equivalence is checked on the first ``config.verify_samples`` samples of ``data`` (random inputs without it).
    A model without BN layers comes back unchanged with status "nothing to fold".
    """
    import keras

    policies = non_fp32_policies(model)
    with quiet():
        source = float32_copy(model)
    total = len(bn_layers(source))
    params = int(source.count_params())
    policy = ", ".join(policies) or "float32"
    if total == 0:
        return FoldResult(source, FoldReport("nothing to fold", 0, (), (), None, policy, params, params,
                                             "nothing to fold: the model has no BatchNormalization layers"))
    serialized = copy.deepcopy(keras.saving.serialize_keras_object(source))
    weights = _Weights(source)
    folded: list[FoldedBN] = []
    kept: dict[str, str] = {}
    _rewrite(Graph.of(serialized), "", weights, folded, kept)
    kept_list = tuple(KeptBN(k, v) for k, v in kept.items())
    if not folded:
        return FoldResult(source, FoldReport("nothing to fold", total, (), kept_list, None, policy, params, params,
                                             f"nothing to fold: none of the {total} BN layers can fold"))
    with quiet():
        target = rebuild(source, serialized)
        _transfer(source, target, weights)
        x, where = _verification_inputs(source, data, config.verify_samples)
        eq = equivalence(source, target, x, where, config.max_rel_error)
    if not eq.passed:
        msg = (f"fold refused: the folded model differs from the unfolded one by {eq.max_rel_error:.3g} relative "
               f"(max abs {eq.max_abs_error:.3g}) on {eq.samples} samples, above the fp32 limit "
               f"{config.max_rel_error:g}")
        return FoldResult(source, FoldReport("refused", total, tuple(folded), kept_list, eq, policy, params, params,
                                             msg))
    after = int(target.count_params())
    msg = (f"folded {len(folded)} of {total} BN layers (max rel error {eq.max_rel_error:.2e} on {eq.samples} "
           f"samples)" + (f"; {len(kept_list)} kept" if kept_list else ""))
    return FoldResult(target, FoldReport("folded", total, tuple(folded), kept_list, eq, policy, params, after, msg))
