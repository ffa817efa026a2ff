"""Per-layer error of a Core ML artifact: each Keras layer's output against the reference executor's value of the
MIL variable that holds it.

coremltools names MIL variables after the TensorFlow ops they come from (``<model>_1_<layer>_1_<op>``, with
``_cast_fp16`` appended in fp16 programs), so a layer's output is the last variable of its scope, found by name.
Layers whose ops were fused away (a convolution followed by batch norm keeps only the batch norm's name) or
renamed (the model output) are matched where possible and otherwise left out, as is every layer that feeds a batch
norm (its output exists in no artifact); shapes are checked (NCHW in MIL vs NHWC in Keras) so a mismatch is never
compared.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from device_bench import metrics
from edgeprep.models import ModelHandle

SAMPLES = 32


def match_layers(model_name: str, layer_names: list[str], variables: list[str]) -> dict[str, str]:
    """Layer name -> the MIL variable (last in program order) whose name puts it in that layer's scope."""
    prefix = re.compile(rf"^{re.escape(model_name)}_\d+_")
    by_length = sorted(layer_names, key=len, reverse=True)        # "conv2d_1" before "conv2d"
    found: dict[str, str] = {}
    for var in variables:
        m = prefix.match(var)
        if not m:
            continue
        rest = var[m.end():]
        layer = next((n for n in by_length if re.match(rf"{re.escape(n)}_\d+_", rest)), None)
        if layer is not None:
            found[layer] = var
    return found


def _single_output(layer) -> bool:
    """A layer called once with one output tensor (shared layers and multi-output layers are left out)."""
    try:
        return not isinstance(layer.output, (list, tuple, dict))
    except (AttributeError, ValueError):
        return False


def _aligned(value: np.ndarray, keras_shape: tuple) -> np.ndarray | None:
    """The MIL value in Keras layout, or None when the shapes do not correspond."""
    if value.ndim == 4 and len(keras_shape) == 4 and value.shape == (keras_shape[0], keras_shape[3],
                                                                        keras_shape[1], keras_shape[2]):
        return np.transpose(value, (0, 2, 3, 1))
    if value.shape == tuple(keras_shape):
        return value
    return None


def layer_errors(model: ModelHandle, artifact: Path, x: np.ndarray) -> dict:
    """SQNR (dB) and max |error| of every nameable layer on the samples ``x``, in layer order, and the worst."""
    import keras

    from device_bench.mil import Program

    net = model.obj
    if model.kind != "keras" or not hasattr(net, "layers") or not getattr(net, "inputs", None):
        return {"samples": 0, "layers": [], "reason": "per-layer error needs a Keras model with a layer graph"}
    program = Program(artifact)
    before_bn = {layer.name for layer in net.layers for node in getattr(layer, "_outbound_nodes", [])
                 if isinstance(getattr(node, "operation", None), keras.layers.BatchNormalization)}
    # A layer feeding a BatchNormalization has no output of its own in any artifact: converters fuse the pair, and
    # an artifact converted from the BN-folded model names the folded layer like it but computes conv + BN.
    layers = [layer for layer in net.layers if not isinstance(layer, keras.layers.InputLayer)
              and layer.name not in before_bn
              and len(getattr(layer, "_inbound_nodes", [None])) <= 1 and _single_output(layer)]
    names = [layer.name for layer in layers]
    variables = [name for name, _, _ in program.variables()]
    mapping = match_layers(net.name, names, variables)
    if len(program.outputs) == 1 and len(net.outputs) == 1:
        out_layer = net.outputs[0]._keras_history[0].name if hasattr(net.outputs[0], "_keras_history") else None
        if out_layer in names:
            mapping[out_layer] = program.outputs[0]
    chosen = [n for n in names if n in mapping]
    if not chosen:
        return {"samples": 0, "layers": [], "reason": "no layer output could be matched to a MIL variable by name"}
    probe = keras.Model(net.inputs, [net.get_layer(n).output for n in chosen])
    expected = probe.predict(x, verbose=0)
    expected = expected if isinstance(expected, list) else [expected]
    wanted = {mapping[n] for n in chosen}
    got: dict[str, list] = {v: [] for v in wanted}
    name = program.inputs[0][0]
    for i in range(len(x)):
        values = program.run({name: x[i:i + 1]}, keep=wanted)
        for v in wanted:
            got[v].append(values[v])
    rows = []
    for layer, ref in zip(chosen, expected):
        ref = np.asarray(ref, dtype=np.float32)
        out = _aligned(np.concatenate(got[mapping[layer]]).astype(np.float32), ref.shape)
        if out is None:
            continue
        rows.append({"layer": layer, "tensor": mapping[layer], "sqnr_db": round(metrics.sqnr_db(ref, out), 2),
                     "max_abs_error": metrics.max_abs_error(ref, out)})
    order = {n: i for i, n in enumerate(names)}
    rows.sort(key=lambda r: order[r["layer"]])
    worst = min(rows, key=lambda r: r["sqnr_db"])["layer"] if rows else None
    total = sum(not isinstance(layer, keras.layers.InputLayer) for layer in net.layers)
    return {"samples": int(len(x)), "compared": len(rows), "of": total, "worst": worst, "layers": rows}
