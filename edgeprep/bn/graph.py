"""Keras model helpers shared by the BatchNorm stages: finding BN layers (nested models included), their
parameters, and an fp32 copy of a model whatever dtype policy it was trained with.

Statistics and folding always run on the fp32 copy: a model trained with ``mixed_float16`` computes its
activations in fp16, where variances of large activations overflow and small ones underflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from edgeprep._util import first_line
from edgeprep.errors import ModelError
from edgeprep.models import ModelHandle


def require_keras(model: ModelHandle, stage: str) -> None:
    if not model.is_keras:
        raise ModelError(f"{stage} needs a Keras model (.keras or .h5); {model.path} is a {model.kind} model",
                         "pass the .keras file it was exported from (converters fold BatchNorm in SavedModel and "
                         "ONNX graphs themselves, and every artifact's export-integrity check still runs)")


def walk(model, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(path, layer)`` for every layer, descending into nested models; paths are ``outer/inner/layer``."""
    import keras

    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        yield path, layer
        if isinstance(layer, keras.Model):
            yield from walk(layer, path + "/")


def is_bn(layer) -> bool:
    import keras

    return isinstance(layer, keras.layers.BatchNormalization)


def bn_layers(model) -> list[tuple[str, Any]]:
    return [(p, layer) for p, layer in walk(model) if is_bn(layer)]


def call_count(layer) -> int:
    """How many times the layer is called in the model graph (more than once: a shared layer)."""
    return max(1, len(getattr(layer, "_inbound_nodes", []) or []))


@dataclass(frozen=True)
class BNParams:
    """A BN layer's parameters as float64 numpy vectors (``gamma``/``beta`` None when scale/center are off)."""

    gamma: np.ndarray | None
    beta: np.ndarray | None
    mean: np.ndarray
    var: np.ndarray
    eps: float
    axis: int          # normalized axis as given to the layer (may be negative)

    @classmethod
    def of(cls, layer) -> "BNParams":
        def vec(v):
            return None if v is None else np.asarray(v.numpy(), np.float64)
        return cls(vec(layer.gamma if layer.scale else None), vec(layer.beta if layer.center else None),
                   vec(layer.moving_mean), vec(layer.moving_variance), float(layer.epsilon), int(layer.axis))


def policy_name(model) -> str:
    policy = getattr(model, "dtype_policy", None)
    return getattr(policy, "name", None) or str(getattr(model, "dtype", "float32"))


def non_fp32_policies(model) -> list[str]:
    """Dtype policies other than float32 used by any layer (e.g. ``mixed_float16``)."""
    found = {policy_name(layer) for _, layer in walk(model)} | {policy_name(model)}
    return sorted(p for p in found if p not in ("float32", "None"))


def _force_float32(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(node.get("config"), dict):
            return {**node, "config": {**node["config"], "name": "float32"}}
        return {k: (("float32" if isinstance(v, str) and v in ("mixed_float16", "mixed_bfloat16", "float16",
                                                                "bfloat16") else _force_float32(v))
                    if k == "dtype" else _force_float32(v)) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_force_float32(v) for v in node)
    return node


def rebuild(model, serialized: dict):
    """A new model from a (possibly edited) serialized config."""
    import keras

    try:
        return keras.saving.deserialize_keras_object(serialized)
    except Exception as exc:
        raise ModelError(f"cannot rebuild the model '{model.name}' from its config ({first_line(exc)})",
                         "BatchNorm stages need a Functional or Sequential model whose layers are serializable"
                         ) from None


def float32_copy(model):
    """An independent fp32 copy of ``model`` (same weights): statistics and folds are computed on it."""
    import keras

    clone = rebuild(model, _force_float32(keras.saving.serialize_keras_object(model)))
    clone.set_weights([np.asarray(w, np.float32) if np.issubdtype(np.asarray(w).dtype, np.floating) else w
                       for w in model.get_weights()])
    return clone


def channel_axis(layer, ndim: int) -> int:
    """The non-negative channel axis of a BN layer for inputs of rank ``ndim``."""
    return int(layer.axis) % ndim
