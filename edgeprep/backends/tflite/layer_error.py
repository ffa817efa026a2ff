"""Per-layer error of a quantized TFLite model against the fp32 TFLite model of the same network.

Both interpreters keep every intermediate tensor (``experimental_preserve_all_tensors``); integer tensors are
dequantized with their scale and zero point. Ops are paired by op type, fused activation and output shape along
the two execution orders (``edgeprep.backends.layer_error.align``): the fused activation is part of the op, since a
CONV_2D+RELU6 computes a different tensor than a CONV_2D followed by an ADD and a RELU6.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeprep.backends.layer_error import LayerError, SQNRAccumulator, align, display_name

TFLITE_SKIP = {"QUANTIZE", "DEQUANTIZE", "DELEGATE", "SHAPE", "STRIDED_SLICE", "PACK", "GATHER", "CAST"}


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
    accs = [SQNRAccumulator() for _ in pairs]
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


__all__ = ["TFLITE_SKIP", "tflite_errors"]
