"""The float reference of an ONNX model: ONNX Runtime on the original graph, fed in the data's layout.

``OnnxReference.run`` transposes each batch from the layout the data (and every artifact) uses to the ONNX input's
own layout, an exact permutation, and runs the user's .onnx in ONNX Runtime. When BatchNorm statistics are
re-estimated on the Keras graph, ``with_statistics`` writes them into a copy of the ONNX graph (the original file is
never changed): the reference stays ONNX Runtime, computing the recalibrated model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeprep.onnx.graph import BNBinding
from edgeprep.onnx.layout import InputPlan


def session(source: str | bytes) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class Agreement:
    """Keras graph vs ONNX Runtime at load, on ``samples`` inputs of ``source``."""

    samples: int
    source: str
    max_abs: float
    max_rel: float            # max |error| / max |reference|
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_rel) and self.max_rel <= self.tolerance)

    def describe(self) -> dict:
        return {"samples": self.samples, "inputs": self.source, "max_abs_error": self.max_abs,
                "max_relative_error": self.max_rel, "tolerance_relative": self.tolerance, "passed": self.passed}


@dataclass(frozen=True)
class OnnxReference:
    """What a ``ModelHandle`` converted from ONNX keeps of the original: the session and how it was converted."""

    path: Path
    session: Any = field(repr=False)
    input_name: str
    plan: InputPlan
    bn: tuple[BNBinding, ...] = ()
    ops: tuple[tuple[str, int], ...] = ()
    folded_nodes: int = 0
    agreement: Agreement | None = None
    statistics: str = "as stored in the .onnx"

    def run(self, x: np.ndarray) -> np.ndarray:
        """ONNX Runtime outputs for a batch in the plan's layout."""
        if self.plan.to_onnx is not None:
            x = np.ascontiguousarray(np.transpose(x, self.plan.to_onnx))
        batch = self.session.get_inputs()[0].shape[0]
        if isinstance(batch, int) and batch > 0 and batch != len(x):    # a static batch axis: feed it its size
            return np.concatenate([self.session.run(None, {self.input_name: x[i:i + batch]})[0]
                                   for i in range(0, len(x), batch)])
        return self.session.run(None, {self.input_name: x})[0]

    def with_statistics(self, keras_model) -> "OnnxReference | None":
        """This reference with the BatchNorm parameters of ``keras_model``'s layers written into a copy of the graph
        (those of its layers that still exist: a folded model has none, and gets this reference unchanged). None
        when a parameter is not an initializer of the graph (then the Keras model is its own reference)."""
        layers = {layer.name: layer for layer in keras_model.layers}
        found = [b for b in self.bn if b.layer in layers and type(layers[b.layer]).__name__ == "BatchNormalization"]
        if not found:
            return self
        import onnx
        from onnx import numpy_helper

        proto = onnx.load(str(self.path))
        inits = {i.name: i for i in proto.graph.initializer}
        if any(n not in inits for b in found for n in (b.scale, b.bias, b.mean, b.var)):
            return None
        changed = False
        for b in found:
            gamma, beta, mean, var = (np.asarray(w, np.float32) for w in layers[b.layer].get_weights())
            for init_name, value in ((b.scale, gamma), (b.bias, beta), (b.mean, mean), (b.var, var)):
                old = numpy_helper.to_array(inits[init_name])
                if not np.array_equal(old, value):
                    inits[init_name].CopyFrom(numpy_helper.from_array(value.reshape(old.shape), init_name))
                    changed = True
        if not changed:
            return self
        return replace(self, session=session(proto.SerializeToString()),
                       statistics="re-estimated on the calibration data (written into a copy of the ONNX graph)")

    def describe(self) -> dict:
        return {**self.plan.describe(), "route": "edgeprep ONNX -> Keras 3 converter; every format from the Keras "
                "graph; float reference ONNX Runtime on the .onnx",
                "converted_ops": dict(self.ops), "constant_nodes_folded": self.folded_nodes,
                "batchnorm_nodes": len(self.bn),
                "float_reference": "ONNX Runtime on the .onnx; after BatchNorm re-estimation, on a copy of it with the "
                                   "re-estimated statistics",
                **({"keras_vs_onnxruntime": self.agreement.describe()} if self.agreement else {})}
