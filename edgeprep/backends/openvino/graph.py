"""The op graph of an OpenVINO IR (for the export-integrity scan)."""

from __future__ import annotations

from pathlib import Path

from edgeprep.backends.graph import OpGraph, OpKinds

OP_KINDS = OpKinds(linear=frozenset({"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData",
                                     "GroupConvolutionBackpropData"}),
                   scale=frozenset({"Multiply", "Divide"}), bias=frozenset({"Add", "Subtract"}))


def read_graph(path: Path) -> OpGraph:
    import openvino as ov

    model = ov.Core().read_model(str(path))
    raw = []
    for op in model.get_ordered_ops():
        ins = [f"{v.get_node().get_friendly_name()}:{v.get_index()}" for v in op.input_values()]
        outs = [f"{op.get_friendly_name()}:{i}" for i in range(op.get_output_size())]
        raw.append((op.get_type_name(), op.get_friendly_name(), ins, outs))
    inputs = {f"{p.get_node().get_friendly_name()}:0" for p in model.inputs}
    return OpGraph.build("openvino", OP_KINDS, raw, inputs, {"Constant"})


__all__ = ["OP_KINDS", "read_graph"]
