"""Per-layer error of a quantized OpenVINO IR against the fp32 IR of the same model.

Every compute node's output is added as a model output and both models run on the CPU plugin in f32 inference
precision; nodes are paired by op type and output shape along the two execution orders
(``edgeprep.backends.layer_error.align``). Node ids (``ov_node_ids``) are what keep-float and NNCF's ignored scope
take (``resolve_ov_nodes``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeprep.backends.layer_error import LayerError, SQNRAccumulator, align, display_name

OPENVINO_COMPUTE = {"Convolution", "GroupConvolution", "MatMul", "Add", "Subtract", "Multiply", "Relu", "Clamp",
                    "ReduceMean", "MaxPool", "AvgPool", "Softmax", "Concat", "Swish", "HSwish", "Sigmoid", "Tanh",
                    "Gelu", "PRelu", "Elu", "Exp", "Log", "Sin", "Cos", "Divide", "Sqrt", "Power", "MVN"}


def _ov_compute_ops(model) -> list:
    return [op for op in model.get_ordered_ops() if op.get_type_name() in OPENVINO_COMPUTE
            and op.get_output_size() >= 1 and op.get_output_partial_shape(0).is_static]


def _ov_tokens(ops) -> list[tuple]:
    return [(op.get_type_name(), tuple(int(d) for d in op.get_output_shape(0))[1:]) for op in ops]


def _ov_outputs(model, ops, x: np.ndarray) -> list[np.ndarray]:
    import openvino as ov

    model.add_outputs([op.output(0) for op in ops])
    names = [o.get_node().input_value(0).get_node().get_friendly_name() for o in model.outputs]
    index = [names.index(op.get_friendly_name()) for op in ops]   # an op that already was an output is not added
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    req = compiled.create_infer_request()
    batch = int(compiled.inputs[0].get_partial_shape()[0].get_length()) \
        if compiled.inputs[0].get_partial_shape()[0].is_static else len(x)
    values: list[list[np.ndarray]] = [[] for _ in ops]
    for i in range(0, len(x), batch):
        req.infer({0: x[i:i + batch]})
        for k in range(len(ops)):
            values[k].append(req.get_output_tensor(index[k]).data.copy())
    return [np.concatenate(v) for v in values]


def ov_node_ids(ops) -> list[str]:
    """Stable ids of compute ops: the friendly name when the converter kept a real one, else ``Type#k`` (the k-th
    op of that type in execution order), because generated names (``Convolution_27203``) change per conversion."""
    import re

    counts: dict[str, int] = {}
    ids = []
    for op in ops:
        t = op.get_type_name()
        k = counts.get(t, 0)
        counts[t] = k + 1
        name = op.get_friendly_name()
        ids.append(f"{t}#{k}" if re.fullmatch(r"[A-Za-z]+_\d+", name) else name)
    return ids


def resolve_ov_nodes(model, names) -> list[str]:
    """Friendly names in ``model`` for node ids from ``ov_node_ids`` (other names pass through)."""
    ops = _ov_compute_ops(model)
    table = dict(zip(ov_node_ids(ops), (op.get_friendly_name() for op in ops)))
    return [table.get(n, n) for n in names]


def openvino_errors(quantized: Path, reference: Path, x: np.ndarray) -> list[LayerError]:
    """Per-layer SQNR of a quantized OpenVINO IR against the float IR of the same model."""
    import openvino as ov

    core = ov.Core()
    qm, fm = core.read_model(str(quantized)), core.read_model(str(reference))
    q_ops, f_ops = _ov_compute_ops(qm), _ov_compute_ops(fm)
    pairs = align(_ov_tokens(f_ops), _ov_tokens(q_ops))
    if not pairs:
        return []
    f_vals = _ov_outputs(fm, [f_ops[i] for i, _ in pairs], x)
    q_vals = _ov_outputs(qm, [q_ops[j] for _, j in pairs], x)
    out = []
    ids = ov_node_ids(f_ops)
    for k, (i, j) in enumerate(pairs):
        acc = SQNRAccumulator()
        acc.add(f_vals[k], q_vals[k])
        node = ids[i]
        tensor_names = sorted(f_ops[i].output(0).get_names(), key=len)   # the TF tensor name, when kept
        shown = next((n for n in tensor_names if "/" in n), f_ops[i].get_friendly_name())
        out.append(LayerError(display_name(shown), node, q_ops[j].get_type_name(),
                              tuple(int(d) for d in q_ops[j].get_output_shape(0))[1:], acc.sqnr, j))
    return out


__all__ = ["OPENVINO_COMPUTE", "openvino_errors", "ov_node_ids", "resolve_ov_nodes"]
