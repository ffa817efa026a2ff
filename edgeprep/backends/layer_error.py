"""Per-layer error: the SQNR of every layer's output in a quantized artifact against the float model, ranked.

The float side is the same model converted to the same format at fp32, so both graphs have the same layers after
the converter's own fusions (Conv+BN+ReLU is one op in both). Layers are paired by aligning the two op sequences
(op type, TFLite's fused activation, and output shape, in execution order) — names are used for display and for
keep-float, never trusted for pairing, because converters rename fused ops and QAT graphs carry extra nodes. The
fused activation is part of the op: a CONV_2D+RELU6 (``relu6(conv + 3)``, a hard-sigmoid with its ``+ 3`` in the
bias) computes a different tensor than a CONV_2D whose ``+ 3`` and ReLU6 follow as an ADD, and pairing the two
compares different quantities (about 0 dB whatever the quantization).

TFLite: both interpreters keep every intermediate tensor (``experimental_preserve_all_tensors``), integer tensors
are dequantized with their scale and zero point. OpenVINO: every compute node's output is added as a model output.
SQNR is ``10 log10(sum ref^2 / sum (ref - q)^2)`` over all samples, as for the model output.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from device_bench.metrics import SQNR_EXACT_DB

TFLITE_SKIP = {"QUANTIZE", "DEQUANTIZE", "DELEGATE", "SHAPE", "STRIDED_SLICE", "PACK", "GATHER", "CAST"}
OPENVINO_COMPUTE = {"Convolution", "GroupConvolution", "MatMul", "Add", "Subtract", "Multiply", "Relu", "Clamp",
                    "ReduceMean", "MaxPool", "AvgPool", "Softmax", "Concat", "Swish", "HSwish", "Sigmoid", "Tanh",
                    "Gelu", "PRelu", "Elu", "Exp", "Log", "Sin", "Cos", "Divide", "Sqrt", "Power", "MVN"}


@dataclass(frozen=True)
class LayerError:
    name: str        # readable layer name
    node: str        # the node's name in the float model of this format: what keep_float takes
    op: str
    shape: tuple[int, ...]
    sqnr_db: float
    position: int    # execution order in the quantized artifact

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


class _Acc:
    def __init__(self) -> None:
        self.signal = 0.0
        self.noise = 0.0

    def add(self, ref: np.ndarray, q: np.ndarray) -> None:
        ref = ref.astype(np.float64).reshape(-1)
        q = q.astype(np.float64).reshape(-1)
        self.signal += float(np.sum(ref * ref))
        self.noise += float(np.sum((ref - q) ** 2))

    @property
    def sqnr(self) -> float:
        if self.noise == 0.0:
            return SQNR_EXACT_DB
        if self.signal == 0.0:
            return -SQNR_EXACT_DB
        return round(min(SQNR_EXACT_DB, 10.0 * math.log10(self.signal / self.noise)), 3)


def align(a: list[tuple], b: list[tuple]) -> list[tuple[int, int]]:
    """Index pairs (i, j) with a[i] == b[j] along the longest common alignment of two op sequences."""
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return [(blk.a + k, blk.b + k) for blk in sm.get_matching_blocks() for k in range(blk.size)]


def display_name(name: str) -> str:
    """``model_1/conv2d_3/Relu;model_1/conv2d_3/BiasAdd`` -> ``conv2d_3/Relu``."""
    first = name.split(";")[0]
    parts = [p for p in first.split("/") if p]
    return "/".join(parts[1:]) if len(parts) > 2 else first


# --- TFLite -----------------------------------------------------------------------------------------------------

class _TFLiteGraph:
    def __init__(self, path_or_bytes) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        kw = {"model_content": bytes(path_or_bytes)} if isinstance(path_or_bytes, (bytes, bytearray)) \
            else {"model_path": str(path_or_bytes)}
        self.it = Interpreter(**kw, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        self.it.allocate_tensors()
        self.details = self.it.get_tensor_details()
        fused = _fused_activations(path_or_bytes)
        self.input = self.it.get_input_details()[0]
        self.dynamic = int(self.input["shape_signature"][0]) == -1
        self.ops, self.acts = [], []
        for op in self.it._get_ops_details():
            outs = [i for i in op["outputs"] if i >= 0]
            if op["op_name"] in TFLITE_SKIP or not outs:
                continue
            t = self.details[outs[0]]
            if not (np.issubdtype(t["dtype"], np.floating) or t["dtype"] in (np.int8, np.uint8, np.int16)):
                continue
            self.ops.append((op["op_name"], outs[0]))
            self.acts.append(fused[op["index"]] if op["index"] < len(fused) else "NONE")

    def tokens(self) -> list[tuple]:
        return [(name, act, tuple(int(d) for d in self.details[t]["shape"][1:]))
                for (name, t), act in zip(self.ops, self.acts)]

    def run(self, x: np.ndarray, tensors: list[int]):
        """Yield, per chunk of ``x``, the float values of ``tensors``."""
        from device_bench.runners.base import dequantize, quantize
        from device_bench.runners.litert import _spec

        spec = _spec(self.input)
        step = len(x) if self.dynamic else 1
        for i in range(0, len(x), step):
            chunk = x[i:i + step]
            if self.dynamic:
                self.it.resize_tensor_input(self.input["index"], list(chunk.shape))
                self.it.allocate_tensors()
            fed = quantize(chunk, spec) if spec.scale is not None else chunk.astype(spec.dtype)
            self.it.set_tensor(self.input["index"], fed)
            self.it.invoke()
            out = []
            for t in tensors:
                v = self.it.get_tensor(t)
                d = self.details[t]
                scale, zp = d["quantization"]
                if np.issubdtype(v.dtype, np.integer) and scale:
                    from device_bench.runners.base import TensorSpec

                    v = dequantize(v, TensorSpec("", (), v.dtype.name, float(scale), int(zp)))
                out.append(v)
            yield out


def _fused_activations(path_or_bytes) -> list[str]:
    """Each operator's fused activation (``NONE``, ``RELU``, ``RELU6``, ...), read from the flatbuffer: the
    interpreter does not expose builtin options."""
    from ai_edge_litert import schema_py_generated as schema

    buf = bytes(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray)) else Path(path_or_bytes).read_bytes()
    names = {v: k for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}
    graph = schema.Model.GetRootAs(buf, 0).Subgraphs(0)
    out = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        table = op.BuiltinOptions()
        opts = schema.BuiltinOptionsCreator(op.BuiltinOptionsType(), table) if table is not None else None
        out.append(names.get(getattr(opts, "fusedActivationFunction", None), "NONE"))
    return out


def tflite_errors(quantized, reference, x: np.ndarray) -> list[LayerError]:
    """Per-layer SQNR of the ``quantized`` TFLite model against the float ``reference`` (paths or bytes)."""
    q, f = _TFLiteGraph(quantized), _TFLiteGraph(reference)
    pairs = align(f.tokens(), q.tokens())
    accs = [_Acc() for _ in pairs]
    f_t = [f.ops[i][1] for i, _ in pairs]
    q_t = [q.ops[j][1] for _, j in pairs]
    for ref_vals, q_vals in zip(_concat_runs(f, x, f_t), _concat_runs(q, x, q_t)):
        for acc, r, v in zip(accs, ref_vals, q_vals):
            acc.add(r, v)
    out = []
    for (i, j), acc in zip(pairs, accs):
        node = f.details[f.ops[i][1]]["name"]
        out.append(LayerError(display_name(node), node, q.ops[j][0],
                              tuple(int(d) for d in q.details[q.ops[j][1]]["shape"][1:]), acc.sqnr, j))
    return out


def _concat_runs(graph: _TFLiteGraph, x: np.ndarray, tensors: list[int]):
    """Run in chunks of 64 samples (static-batch graphs one by one inside) and yield per-chunk values."""
    for i in range(0, len(x), 64):
        chunk = x[i:i + 64]
        parts = list(graph.run(chunk, tensors))
        yield [np.concatenate([p[k] for p in parts]) for k in range(len(tensors))]


# --- OpenVINO ---------------------------------------------------------------------------------------------------

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
        acc = _Acc()
        acc.add(f_vals[k], q_vals[k])
        node = ids[i]
        tensor_names = sorted(f_ops[i].output(0).get_names(), key=len)   # the TF tensor name, when kept
        shown = next((n for n in tensor_names if "/" in n), f_ops[i].get_friendly_name())
        out.append(LayerError(display_name(shown), node, q_ops[j].get_type_name(),
                              tuple(int(d) for d in q_ops[j].get_output_shape(0))[1:], acc.sqnr, j))
    return out


def ranked(errors: list[LayerError]) -> list[LayerError]:
    """Worst (lowest SQNR) first; ties keep execution order."""
    return sorted(errors, key=lambda e: (e.sqnr_db, e.position))
