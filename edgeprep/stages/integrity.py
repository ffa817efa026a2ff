"""Export integrity: did each artifact keep the folded, recalibrated BatchNorm the float model has?

Two checks join every artifact's verification (same shape as the gate checks):

- ``no_foldable_bn_ops``: BatchNorm-type ops left in the artifact where they could have been folded. Converters
  name them differently and often lower them: TFLite has no BN op (an unfolded BN becomes ``MUL`` + ``ADD`` by
  constants; ``FlexFusedBatchNormV3`` if it was kept as a TensorFlow op), OpenVINO IR has ``BatchNormInference``
  or ``Multiply`` + ``Add``, Core ML has ``batch_norm`` or ``mul`` + ``add``. So each format's graph is read back
  into one small op graph and the same rule applies to all: an explicit BN op, or a multiply by a constant,
  whose input comes straight (through constant bias adds) from a conv / fully-connected / matmul op that feeds
  nothing else, is a BN that was foldable and was not folded. The artifact's op counts are in its inspection.
- ``bn_statistics_kept`` (when BN statistics were recalibrated): the artifact's outputs must be closer to the
  recalibrated float model than to the model with the stale statistics. It is reported only where it can tell:
  when recalibration moved the outputs by more than the artifact's own precision noise.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgeprep._util import quiet

LINEAR_OPS = {"tflite": {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_3D", "TRANSPOSE_CONV",
                         "BATCH_MATMUL"},
              "openvino": {"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData",
                           "GroupConvolutionBackpropData"},
              "coreml": {"conv", "linear", "matmul", "conv_transpose"}}
MUL_OPS = {"tflite": {"MUL", "DIV"}, "openvino": {"Multiply", "Divide"}, "coreml": {"mul", "real_div"}}
ADD_OPS = {"tflite": {"ADD", "SUB"}, "openvino": {"Add", "Subtract"}, "coreml": {"add", "sub"}}


def is_bn_op(op_type: str) -> bool:
    """Explicit BatchNorm ops in any format: FusedBatchNormV3 (TF/Flex), BatchNormInference (OpenVINO),
    batch_norm (Core ML)."""
    return "batchnorm" in op_type.lower().replace("_", "")


@dataclass
class Op:
    type: str
    name: str
    inputs: list[str]                 # tensor ids of non-constant inputs
    const_inputs: int
    outputs: list[str]


@dataclass
class OpGraph:
    format: str
    ops: list[Op] = field(default_factory=list)
    _producer: dict[str, Op] = field(default_factory=dict)
    _consumers: Counter = field(default_factory=Counter)

    @classmethod
    def build(cls, fmt: str, raw: list[tuple[str, str, list[str], list[str]]], graph_inputs: set[str],
              const_ops: set[str]) -> "OpGraph":
        """From ``(type, name, input tensors, output tensors)`` in execution order: tensors nobody produces (other
        than graph inputs) and outputs of ops fed only by constants are constants."""
        produced = {t for _, _, _, outs in raw for t in outs}
        const = {t for _, _, ins, _ in raw for t in ins if t not in produced and t not in graph_inputs}
        g = cls(fmt)
        for typ, name, ins, outs in raw:
            live = [t for t in ins if t not in const]
            if typ in const_ops or (ins and not live):
                const.update(outs)
                continue
            op = Op(typ, name, live, len(ins) - len(live), outs)
            g.ops.append(op)
            for t in outs:
                g._producer[t] = op
            g._consumers.update(live)
        return g

    def consumers(self, op: Op) -> int:
        return sum(self._consumers[t] for t in op.outputs)

    def producer(self, op: Op) -> Op | None:
        return self._producer.get(op.inputs[0]) if len(op.inputs) == 1 else None


@dataclass(frozen=True)
class BNOpScan:
    format: str
    bn_ops: int                       # explicit BatchNorm ops
    affine_ops: int                   # multiplies by a constant (an unfused BN, or a scale layer)
    foldable: tuple[str, ...]         # those of either kind right after a linear op with no other consumer

    def describe(self) -> str:
        where = f": {', '.join(self.foldable[:5])}" + (" …" if len(self.foldable) > 5 else "") \
            if self.foldable else ""
        return (f"{len(self.foldable)} foldable BN-type ops left{where} ({self.bn_ops} BatchNorm ops, "
                f"{self.affine_ops} constant multiplies in the {self.format} graph)")


def scan(graph: OpGraph) -> BNOpScan:
    linear, mul, add = LINEAR_OPS[graph.format], MUL_OPS[graph.format], ADD_OPS[graph.format]
    bn = affine = 0
    foldable = []
    for op in graph.ops:
        explicit = is_bn_op(op.type)
        scale = op.type in mul and len(op.inputs) == 1 and op.const_inputs >= 1
        if not (explicit or scale):
            continue
        bn += explicit
        affine += scale
        prev = graph.producer(op)
        while prev is not None and prev.type in add and prev.const_inputs and graph.consumers(prev) == 1:
            prev = graph.producer(prev)      # through a constant bias add
        if prev is not None and prev.type in linear and graph.consumers(prev) == 1:
            foldable.append(f"{op.type} {op.name}")
    return BNOpScan(graph.format, bn, affine, tuple(foldable))


def _tflite_graph(path: Path) -> OpGraph:
    """Read from the flatbuffer (the interpreter hides fused activations: CONV_2D+RELU is not foldable)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(Path(path).read_bytes(), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    acts = {v: k for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}
    graph = model.subgraphs[0]
    raw = []
    for i, op in enumerate(graph.operators):
        code = model.operatorCodes[op.opcodeIndex]
        typ = code.customCode.decode() if code.customCode else names.get(
            max(code.builtinCode, code.deprecatedBuiltinCode), "UNKNOWN")
        act = acts.get(getattr(op.builtinOptions, "fusedActivationFunction", None), "NONE")
        typ = typ if act == "NONE" else f"{typ}+{act}"
        raw.append((typ, f"#{i}", [str(t) for t in op.inputs if t >= 0], [str(t) for t in op.outputs]))
    return OpGraph.build("tflite", raw, {str(t) for t in graph.inputs}, set())


def _openvino_graph(path: Path) -> OpGraph:
    import openvino as ov

    model = ov.Core().read_model(str(path))
    raw = []
    for op in model.get_ordered_ops():
        ins = [f"{v.get_node().get_friendly_name()}:{v.get_index()}" for v in op.input_values()]
        outs = [f"{op.get_friendly_name()}:{i}" for i in range(op.get_output_size())]
        raw.append((op.get_type_name(), op.get_friendly_name(), ins, outs))
    inputs = {f"{p.get_node().get_friendly_name()}:0" for p in model.inputs}
    return OpGraph.build("openvino", raw, inputs, {"Constant"})


def _coreml_graph(path: Path) -> OpGraph:
    import coremltools as ct

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    raw = []
    fn = spec.mlProgram.functions["main"]
    block = next(iter(fn.block_specializations.values()))
    for op in block.operations:
        ins = [b.name for arg in op.inputs.values() for b in arg.arguments if b.WhichOneof("binding") == "name"]
        inline = sum(1 for arg in op.inputs.values() for b in arg.arguments if b.WhichOneof("binding") == "value")
        outs = [o.name for o in op.outputs]
        raw.append((op.type, outs[0] if outs else op.type, ins + [f"<inline {i}>" for i in range(inline)], outs))
    consts = {t for t, *_ in raw if t == "const" or t.startswith("constexpr")}
    return OpGraph.build("coreml", raw, {i.name for i in fn.inputs}, consts)


READERS: dict[str, Callable[[Path], OpGraph]] = {"tflite": _tflite_graph, "openvino": _openvino_graph,
                                                 "coreml": _coreml_graph}


def read_graph(fmt: str, path: Path) -> OpGraph:
    with quiet():
        return READERS[fmt](Path(path))


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(np.asarray(a, np.float64)))))


@dataclass(frozen=True)
class ExportIntegrity:
    """The export-integrity checks of one run. ``stale_outputs``: the float model with its stored (stale)
    statistics on the verification samples, when calibration changed them; None otherwise."""

    stale_outputs: np.ndarray | None = None

    def __call__(self, artifact, outputs: np.ndarray | None, reference) -> list[dict]:
        result = scan(read_graph(artifact.format, artifact.path))
        checks = [{"name": "no_foldable_bn_ops", "value": len(result.foldable), "threshold": 0,
                   "passed": not result.foldable, "detail": result.describe()}]
        if outputs is not None and reference is not None and self.stale_outputs is not None:
            check = statistics_check(outputs, reference.outputs, self.stale_outputs)
            if check is not None:
                checks.append(check)
        return checks


def statistics_check(outputs: np.ndarray, recalibrated: np.ndarray, stale: np.ndarray) -> dict | None:
    """``bn_statistics_kept``: RMS error to the recalibrated float model over RMS error to the stale one (< 1:
    the artifact computes with the new statistics). None when recalibration moved the outputs less than the
    artifact's own noise (then the two cannot be told apart)."""
    n = min(len(outputs), len(recalibrated), len(stale))
    out = np.asarray(outputs[:n], np.float64).reshape(n, -1)
    e_new = _rms(out - recalibrated[:n].reshape(n, -1))
    e_old = _rms(out - stale[:n].reshape(n, -1))
    moved = _rms(recalibrated[:n].reshape(n, -1) - stale[:n].reshape(n, -1))
    if moved <= min(e_new, e_old) or e_old == 0.0 and e_new == 0.0:
        return None
    ratio = e_new / e_old if e_old > 0 else float("inf")
    return {"name": "bn_statistics_kept", "value": round(ratio, 6), "threshold": 1.0, "passed": ratio < 1.0,
            "detail": f"RMS error {e_new:.3g} to the recalibrated float model, {e_old:.3g} to the stale one "
                      f"(recalibration moved the outputs by {moved:.3g} RMS)"}
