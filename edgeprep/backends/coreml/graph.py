"""The op graph of a Core ML ML Program (for the export-integrity scan), read from its spec without loading it."""

from __future__ import annotations

from pathlib import Path

from edgeprep.backends.graph import OpGraph, OpKinds

OP_KINDS = OpKinds(linear=frozenset({"conv", "linear", "matmul", "conv_transpose"}),
                   scale=frozenset({"mul", "real_div"}), bias=frozenset({"add", "sub"}))


def read_graph(path: Path) -> OpGraph:
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
    return OpGraph.build("coreml", OP_KINDS, raw, {i.name for i in fn.inputs}, consts)


__all__ = ["OP_KINDS", "read_graph"]
