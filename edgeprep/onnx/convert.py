"""Build the Keras 3 Functional model of an ONNX graph (``ops`` converts each node, ``graph`` keeps the layouts).

Every node is converted or the whole conversion is refused with one ``UnsupportedOp`` line naming the op type,
the node and the fix; nothing is written by a refused conversion (this runs in memory, before any stage).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeprep._util import first_line
from edgeprep.errors import EdgeprepError, ModelError
from edgeprep.onnx.graph import BNBinding, UnsupportedOp, Value, Walk, identity, label, to_perm
from edgeprep.onnx.layout import InputPlan
from edgeprep.onnx.ops import FOLD, OPS, SUPPORTED


@dataclass(frozen=True)
class Converted:
    model: object                      # keras.Model
    bn: tuple[BNBinding, ...]          # the BatchNormalization nodes, now Keras layers
    ops: tuple[tuple[str, int], ...]   # ONNX op type -> nodes converted (constant-folded ones not counted)
    folded_nodes: int                  # nodes evaluated as constants (shape arithmetic, Constant)


def convert_graph(proto, plan: InputPlan, name: str) -> Converted:
    import keras
    from onnx import numpy_helper

    graph = proto.graph
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 17)
    walk = Walk(opset=opset, outputs={o.name for o in graph.output})
    for init in graph.initializer:
        walk.values[init.name] = Value(const=numpy_helper.to_array(init))
    for n in graph.node:
        for i in n.input:
            walk.consumers.setdefault(i, []).append(n)
    inputs = [i for i in graph.input if i.name not in walk.values]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ModelError(f"{name}: the ONNX graph has {len(inputs)} inputs and {len(graph.output)} outputs; "
                         "edgeprep converts single-input, single-output vision models",
                         "export a model with one image input and one output")
    inp = keras.Input(plan.shape, name=walk.layer_name(inputs[0].name))
    walk.values[inputs[0].name] = Value(inp, perm=plan.keras_perm)
    ops: dict[str, int] = {}
    folded = 0
    for node in graph.node:
        walk.node = node
        if node.domain not in ("", "ai.onnx"):
            raise walk.unsupported(f"an operator of the custom domain '{node.domain}'")
        if (node.name or id(node)) in walk.skip:
            continue
        ins = [walk.values.get(walk.aliases.get(i, i)) if i else None for i in node.input]
        missing = [i for i, v in zip(node.input, ins) if i and v is None]
        if missing:
            raise walk.unsupported(f"input '{missing[0]}' is produced by no node before it",
                                   "check the model with onnx.checker.check_model")
        consts = FOLD(walk, node, ins)
        if consts is not None:
            folded += 1
            for out, c in zip(node.output, consts):
                walk.values[out] = Value(const=c)
            continue
        fn = OPS.get(node.op_type)
        if fn is None:
            raise UnsupportedOp(f"ONNX op {node.op_type} (node '{label(node)}') is not supported by "
                                "edgeprep's ONNX converter",
                                f"supported: {', '.join(SUPPORTED)}; replace it in the model before export")
        try:
            outs = fn(walk, node, ins)
        except EdgeprepError:
            raise
        except Exception as exc:     # Keras refusing shapes or weights: the graph is inconsistent there
            raise ModelError(f"{name}: cannot convert ONNX node '{label(node)}' ({node.op_type}): {first_line(exc)}",
                             "check the model with onnx.checker.check_model(model, full_check=True)") from None
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
        for out, v in zip(node.output, outs):
            walk.values[out] = v
    walk.node = graph.node[-1] if graph.node else None
    result = walk.values.get(walk.aliases.get(graph.output[0].name, graph.output[0].name))
    if result is None or result.is_const:
        raise ModelError(f"{name}: the ONNX graph's output is a constant or is never computed")
    result = to_perm(walk, result, identity(result.rank))
    model = keras.Model(inp, result.tensor, name=walk.layer_name(name))
    return Converted(model, tuple(walk.bn), tuple(sorted(ops.items())), folded)
