"""Int8 TFLite models with their HARD_SWISH ops run in float: ``DEQUANTIZE -> HARD_SWISH (fp32) -> QUANTIZE``.

Why (issue 16): LiteRT's XNNPACK delegate takes HARD_SWISH in fp32 only. An int8 HARD_SWISH runs on the reference
kernels and cuts the delegated graph: MobileNetV3Small's 19 made 20 partitions and its int8 3.1x slower than its
fp32 (fmnist model, 1 thread, x86). With each HARD_SWISH between a DEQUANTIZE and a QUANTIZE, XNNPACK takes all
three and the model is one partition: int8 0.61x fp32 (the same network with ReLU instead of hard-swish: 0.57x).
The other fix, hard-swish lowered before conversion to int8 ops XNNPACK takes (``(x / 6) * relu6(x + 3)``, a form
the converter does not fuse back into HARD_SWISH), also made one partition but measured 0.86x: three int8
elementwise ops per hard-swish cost more than the float conversions.

Numerics: the int8 tensors around each HARD_SWISH keep their calibrated scales, so the model computes what the int8
HARD_SWISH did, with hard-swish itself exact instead of on the int8 kernel's lookup arithmetic.

``float_hard_swish(flatbuffer)`` rewrites a converted model (both int8 engines use it: the converter's PTQ in
``backend.py`` and the fake-quant graph's export in ``qat.py``); the new float tensors are named after the
HARD_SWISH output (``<output>/float``, ``<output>/float_input``), so each maps to its Keras layer.
"""

from __future__ import annotations


def _builtin(code) -> int:
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _code_index(model, builtin: int, version: int) -> int:
    from tensorflow.lite.python import schema_py_generated as schema

    for i, code in enumerate(model.operatorCodes):
        if _builtin(code) == builtin and not code.customCode:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    code.version = version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _float_like(tensor, name: str):
    from tensorflow.lite.python import schema_py_generated as schema

    t = schema.TensorT()
    t.shape, t.shapeSignature = tensor.shape, tensor.shapeSignature
    t.type = schema.TensorType.FLOAT32
    t.buffer = 0                    # buffer 0 is the empty one: an activation tensor
    t.name = name.encode()
    return t


def _op(code: int, inputs: list[int], outputs: list[int]):
    from tensorflow.lite.python import schema_py_generated as schema

    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = code, inputs, outputs
    return op


def float_hard_swish(flatbuffer: bytes) -> tuple[bytes, int]:
    """The model with every int8 HARD_SWISH run in float between a DEQUANTIZE and a QUANTIZE, and how many were.
    A model without one comes back unchanged."""
    from tensorflow.lite.python import schema_py_generated as schema

    from edgeprep.backends.tflite.ptq import _read, _write

    model = _read(flatbuffer)
    hard_swish = {i for i, c in enumerate(model.operatorCodes) if _builtin(c) == schema.BuiltinOperator.HARD_SWISH}
    int8 = schema.TensorType.INT8
    if not hard_swish:
        return flatbuffer, 0
    count = 0
    for sg in model.subgraphs:
        ops = []
        for op in sg.operators:
            x, y = (op.inputs[0], op.outputs[0]) if op.opcodeIndex in hard_swish else (-1, -1)
            if x < 0 or sg.tensors[x].type != int8 or sg.tensors[y].type != int8:
                ops.append(op)
                continue
            name = sg.tensors[y].name.decode()
            sg.tensors += [_float_like(sg.tensors[x], f"{name}/float_input"),
                           _float_like(sg.tensors[y], f"{name}/float")]
            xf, yf = len(sg.tensors) - 2, len(sg.tensors) - 1
            op.inputs, op.outputs = [xf], [yf]
            # version 2 of both is their int8 form (version 1: uint8)
            ops += [_op(_code_index(model, schema.BuiltinOperator.DEQUANTIZE, 2), [x], [xf]), op,
                    _op(_code_index(model, schema.BuiltinOperator.QUANTIZE, 2), [yf], [y])]
            count += 1
        sg.operators = ops
    if not count:
        return flatbuffer, 0
    for i in hard_swish:            # version 1 is HARD_SWISH's float form
        model.operatorCodes[i].version = 1
    return _write(model), count


def note(count: int) -> str:
    """What the artifact's notes say about it."""
    return (f"HARD_SWISH x{count} run in float between int8 tensors (DEQUANTIZE, HARD_SWISH, QUANTIZE): XNNPACK "
            "takes HARD_SWISH in float only, and an int8 one splits the delegated graph ([tflite] float_hard_swish)")


__all__ = ["float_hard_swish", "note"]
