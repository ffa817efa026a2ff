"""TFLite graphs read back from the flatbuffer: the op graph of the export-integrity scan, and the ops that run in
float (the ``all_int8`` check of QAT artifacts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeprep.backends.graph import FloatOp, OpGraph, OpKinds

OP_KINDS = OpKinds(linear=frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_3D", "TRANSPOSE_CONV",
                                     "BATCH_MATMUL"}),
                   scale=frozenset({"MUL", "DIV"}), bias=frozenset({"ADD", "SUB"}))


def read_graph(path: Path) -> OpGraph:
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
    return OpGraph.build("tflite", OP_KINDS, raw, {str(t) for t in graph.inputs}, set())


def float_ops(path: Path) -> list[FloatOp]:
    """The compute ops of a TFLite model that read or write a float tensor, in execution order. QUANTIZE and
    DEQUANTIZE are conversions at int8 boundaries, and ops on integer index tensors (SHAPE) are not float compute:
    the same rule as the inspection's ``float_ops`` (``edgeprep.backends.tflite.ptq.float_ops``)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgeprep.backends.tflite.ptq import BOUNDARY_OPS

    it = Interpreter(model_path=str(path),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    details = it.get_tensor_details()
    out = []
    for op in it._get_ops_details():
        if op["op_name"] in BOUNDARY_OPS or op["op_name"] == "DELEGATE":
            continue
        tensors = [i for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0]
        if not any(np.issubdtype(details[i]["dtype"], np.floating) for i in tensors):
            continue
        names = [details[i]["name"] for i in op["outputs"] if i >= 0]
        parts = frozenset(p for n in names for seg in n.split(";") for p in seg.split("/") if p)
        out.append(FloatOp(op["op_name"], names[0] if names else "", parts,
                           tuple(i for i in op["inputs"] if i >= 0), tuple(i for i in op["outputs"] if i >= 0)))
    return out


__all__ = ["OP_KINDS", "float_ops", "read_graph"]
