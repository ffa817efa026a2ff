"""What a backend reads back from an artifact's graph, as format-free values.

``OpGraph``: the artifact's ops in execution order with their tensor links, constants folded away, and the
format's op kinds (``OpKinds``: which op types are linear, multiply or add), for format-free rules such as the
export-integrity scan (``edgeprep.stages.integrity``). ``FloatOp``: one compute op that runs in float in an
artifact meant to be integer throughout (the QAT ``all_int8`` check, ``edgeprep.qat.checks``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class OpKinds:
    """A format's op types by role: conv / fully-connected / matmul (``linear``), multiply or divide by a
    constant (``scale``), add or subtract a constant (``bias``)."""

    linear: frozenset[str] = frozenset()
    scale: frozenset[str] = frozenset()
    bias: frozenset[str] = frozenset()


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
    kinds: OpKinds = OpKinds()
    ops: list[Op] = field(default_factory=list)
    _producer: dict[str, Op] = field(default_factory=dict)
    _consumers: Counter = field(default_factory=Counter)

    @classmethod
    def build(cls, fmt: str, kinds: OpKinds, raw: list[tuple[str, str, list[str], list[str]]],
              graph_inputs: set[str], const_ops: set[str]) -> "OpGraph":
        """From ``(type, name, input tensors, output tensors)`` in execution order: tensors nobody produces (other
        than graph inputs) and outputs of ops fed only by constants are constants."""
        produced = {t for _, _, _, outs in raw for t in outs}
        const = {t for _, _, ins, _ in raw for t in ins if t not in produced and t not in graph_inputs}
        g = cls(fmt, kinds)
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
class FloatOp:
    op: str                  # the format's op name: MUL, ADD, ...
    tensor: str              # the name of its (first) output tensor: the Keras layer scopes it came from
    layers: frozenset        # the name-scope parts of its output tensors (layer names among them)
    inputs: tuple = ()       # tensor indices it reads (float activations among them)
    outputs: tuple = ()      # tensor indices it writes


__all__ = ["FloatOp", "Op", "OpGraph", "OpKinds"]
