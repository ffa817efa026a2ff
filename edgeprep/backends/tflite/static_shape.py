"""TFLite models with their shape-computing RESHAPEs folded: ``SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE`` becomes
one ``RESHAPE`` with a constant shape.

Why (issue 16): Keras' ``Flatten`` (and ``Reshape`` with a batch dimension left to the runtime) converts to a RESHAPE
whose target is computed at run time from the input's shape: ``PACK(STRIDED_SLICE(SHAPE(x), [0]), 10)``. XNNPACK
takes a RESHAPE only with a constant target, and none of SHAPE, STRIDED_SLICE or PACK, so those four ops run on the
builtin kernels after the delegated graph (MobileNetV3Small fp32: two partitions around them). Folded, its fp32 is
one partition, fully delegated, and its int8 keeps only the int8 SOFTMAX outside (XNNPACK has no int8 softmax; run
in float between DEQUANTIZE/QUANTIZE it measured no faster, so it stays). At the graph's tail, as there, the time it
saves is small: 0-1 % of either model, 1 thread, x86; where a Flatten sits mid-graph it saves a partition boundary.

Exact: the chain is folded only when each element of its target is a constant or one dimension of the RESHAPE's
own input; a static dimension becomes its value and a dynamic one (the batch: input shape signature ``[-1, ...]``)
becomes ``-1``, at most one of them. RESHAPE infers a ``-1`` from the element count, which gives that same dimension
back at any batch (the element counts of input and target agree, or the original RESHAPE fails too). The output
tensors are those of before, byte for byte; the shape ops nothing else reads are dropped.

``fold_static_reshape(flatbuffer)`` rewrites a converted model, of any precision.
"""

from __future__ import annotations

import numpy as np


def _builtin(code) -> int:
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _constant(model, tensor) -> np.ndarray | None:
    """The int32 value of a constant tensor, or None when it is not one."""
    from tensorflow.lite.python import schema_py_generated as schema

    data = model.buffers[tensor.buffer].data if tensor.buffer else None
    if data is None or len(data) == 0 or tensor.type != schema.TensorType.INT32:
        return None
    return np.frombuffer(bytes(np.asarray(data, np.uint8)), "<i4").reshape(tuple(tensor.shape))


def _signature(tensor) -> list[int]:
    sig = tensor.shapeSignature if tensor.shapeSignature is not None and len(tensor.shapeSignature) else tensor.shape
    return [int(d) for d in sig]


class _Chain:
    """Evaluates a RESHAPE's target from the ops producing it, elements as ints or ``"dynamic"``."""

    def __init__(self, model, sg):
        from tensorflow.lite.python import schema_py_generated as schema

        self.model, self.sg, self.op = model, sg, schema.BuiltinOperator
        self.producer = {t: op for op in sg.operators for t in op.outputs}
        self.used: set[int] = set()          # the ops the evaluation read

    def _code(self, op) -> int:
        return _builtin(self.model.operatorCodes[op.opcodeIndex])

    def vector(self, t: int, dims_of: int) -> list | None:
        """The 1-D int32 tensor ``t``, each element a constant or the index of a dimension of tensor ``dims_of``."""
        const = _constant(self.model, self.sg.tensors[t])
        if const is not None:
            return [int(v) for v in const.reshape(-1)] if const.ndim == 1 else None
        op = self.producer.get(t)
        if op is None or self._code(op) != self.op.PACK or op.builtinOptions is None or op.builtinOptions.axis:
            return None
        values = [self.scalar(i, dims_of) for i in op.inputs]
        if any(v is None for v in values):
            return None
        self.used.add(id(op))
        return values

    def scalar(self, t: int, dims_of: int):
        """A 0-D int32 tensor: a constant, or ``("dim", i)`` for dimension i of tensor ``dims_of``."""
        tensor = self.sg.tensors[t]
        const = _constant(self.model, tensor)
        if const is not None:
            return int(const.reshape(-1)[0]) if const.size == 1 and const.ndim == 0 else None
        op = self.producer.get(t)
        if op is None or self._code(op) != self.op.STRIDED_SLICE or len(op.inputs) != 4:
            return None
        o = op.builtinOptions
        if o is None or o.shrinkAxisMask != 1 or o.ellipsisMask or o.newAxisMask or getattr(o, "offset", False):
            return None
        begin, strides = (_constant(self.model, self.sg.tensors[i]) for i in (op.inputs[1], op.inputs[3]))
        if begin is None or strides is None or begin.shape != (1,) or int(strides[0]) != 1:
            return None
        shape_op = self.producer.get(op.inputs[0])
        if shape_op is None or self._code(shape_op) != self.op.SHAPE or shape_op.inputs[0] != dims_of:
            return None
        rank = len(_signature(self.sg.tensors[dims_of]))
        i = 0 if o.beginMask & 1 else int(begin[0])
        i = i + rank if i < 0 else i
        if not 0 <= i < rank:
            return None
        self.used.update((id(op), id(shape_op)))
        return ("dim", i)


def _fold(model, sg) -> int:
    from tensorflow.lite.python import schema_py_generated as schema

    chain = _Chain(model, sg)
    count = 0
    for op in sg.operators:
        if _builtin(model.operatorCodes[op.opcodeIndex]) != schema.BuiltinOperator.RESHAPE or len(op.inputs) != 2:
            continue
        x, target = op.inputs
        if _constant(model, sg.tensors[target]) is not None:
            continue
        values = chain.vector(target, x)
        if values is None:
            continue
        dims = _signature(sg.tensors[x])
        shape = [v if isinstance(v, int) else dims[v[1]] for v in values]
        if sum(v < 0 for v in shape) > 1 or any(v < -1 for v in shape):
            continue
        buf = schema.BufferT()
        buf.data = np.asarray(shape, "<i4").view(np.uint8)
        model.buffers.append(buf)
        t = schema.TensorT()
        t.shape = np.asarray([len(shape)], np.int32)
        t.type = schema.TensorType.INT32
        t.buffer = len(model.buffers) - 1
        t.name = f"{sg.tensors[op.outputs[0]].name.decode()}/shape".encode()
        sg.tensors.append(t)
        op.inputs = [x, len(sg.tensors) - 1]
        count += 1
    if count:
        _drop_dead(sg, {id(o) for o in sg.operators if id(o) in chain.used})
    return count


def _drop_dead(sg, candidates: set[int]) -> None:
    """Drop the candidate ops whose outputs nothing reads (and no subgraph output is), until none is left."""
    while True:
        read = {t for op in sg.operators for t in op.inputs} | set(sg.outputs)
        dead = [op for op in sg.operators if id(op) in candidates and not any(t in read for t in op.outputs)]
        if not dead:
            return
        gone = {id(op) for op in dead}
        sg.operators = [op for op in sg.operators if id(op) not in gone]


def fold_static_reshape(flatbuffer: bytes) -> tuple[bytes, int]:
    """The model with every RESHAPE whose target is computed from its input's shape given a constant target, and
    how many were. A model without one comes back unchanged."""
    from tensorflow.lite.python import schema_py_generated as schema

    from edgeprep.backends.tflite.ptq import _read, _write

    model = _read(flatbuffer)
    if not any(_builtin(c) == schema.BuiltinOperator.RESHAPE for c in model.operatorCodes):
        return flatbuffer, 0
    count = sum(_fold(model, sg) for sg in model.subgraphs)
    if not count:
        return flatbuffer, 0
    return _write(model), count


def note(count: int) -> str:
    """What the artifact's notes say about it."""
    return (f"RESHAPE x{count} given a constant target (was computed by SHAPE/STRIDED_SLICE/PACK from its input's "
            "shape): XNNPACK takes a RESHAPE with a constant target only, and none of the shape ops")


__all__ = ["fold_static_reshape", "note"]
