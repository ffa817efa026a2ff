"""Checks on QAT artifacts, with the signature of ``edgeprep.stages.verify.ArtifactCheck``:
``(artifact, outputs | None, reference | None) -> list of check entries``.

``AllInt8`` — ``all_int8``: a QAT artifact of a format whose QAT export is integer throughout
(``Backend.all_int8_qat``: TFLite) computes every op in int8, as ``Backend.float_compute_ops`` reads it back. The
QAT graph puts a quantizer on every tensor the converter emits; an op left in float means a tensor without one (a
defect of the export, as the MUL and ADD of a Rescaling were), so it fails the check and the run exits 1. Float
ops inside layers kept in float on purpose are listed but accepted: layers the QAT plan cannot quantize
(``quantize.qat.plan.kept_float``, with the reason) when ``[tflite] float_fallback`` is true (the default, as for
PTQ), and layers the user or the keep-float search asked for (the artifact's ``quantization.kept_float``). So are
the ops such a layer feeds until the next quantizer: a layer kept float by keep-float leaves its output float
(TFLite quantizes any op whose tensors all have ranges), so the op reading it runs in float too.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeprep.backends import get_backend
from edgeprep.backends.graph import FloatOp


def _counts(ops: list[FloatOp]) -> str:
    counts: dict[str, int] = {}
    for o in ops:
        counts[o.op] = counts.get(o.op, 0) + 1
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))


@dataclass(frozen=True)
class AllInt8:
    """The ``all_int8`` check of QAT TFLite artifacts (see the module docstring); other artifacts get none.

    ``kept_float``: the layers the QAT plan runs in float (``graph.summary(steps)["kept_float"]`` names);
    ``float_fallback``: the target's ``[tflite] float_fallback`` (false: their float ops fail the check too).
    """

    kept_float: tuple[str, ...] = ()
    float_fallback: bool = True

    @classmethod
    def from_plan(cls, steps, float_fallback: bool = True) -> "AllInt8":
        from edgeprep.qat.graph import summary

        return cls(tuple(k["layer"] for k in summary(steps)["kept_float"]), float_fallback)

    def __call__(self, artifact, outputs, reference) -> list[dict]:
        quant = artifact.quantization or {}
        backend = get_backend(artifact.format)
        if not backend.all_int8_qat or artifact.precision != "int8" or quant.get("method") != "qat":
            return []
        asked = set(quant.get("kept_float") or ())
        accepted_layers = asked | (set(self.kept_float) if self.float_fallback else set())
        ops = backend.float_compute_ops(artifact.path)
        accepted, unexpected, from_kept = [], [], set()     # from_kept: float tensors written by accepted ops
        for o in ops:                                       # in execution order: producers come first
            ok = bool(o.layers & accepted_layers) or any(i in from_kept for i in o.inputs)
            (accepted if ok else unexpected).append(o)
            if ok:
                from_kept.update(o.outputs)
        if unexpected:
            shown = "; ".join(f"{o.op} ({o.tensor.split(';')[0]})" for o in unexpected[:8])
            more = f"; and {len(unexpected) - 8} more" if len(unexpected) > 8 else ""
            detail = (f"{len(unexpected)} compute op(s) run in float ({_counts(unexpected)}) outside any layer kept "
                      f"float: {shown}{more}. A QAT TFLite artifact must be int8 throughout: this is an export "
                      "defect to report, or keep those layers float on purpose (--keep-float)")
            if not self.float_fallback and set(self.kept_float) & {p for o in unexpected for p in o.layers}:
                detail += "; [tflite] float_fallback = false refuses the layers the QAT plan cannot quantize"
        else:
            detail = "every compute op is int8"
        if accepted:
            kept = sorted(accepted_layers & {p for o in accepted for p in o.layers})
            detail += (f"; {len(accepted)} float op(s) ({_counts(accepted)}) in or fed by layers kept float on "
                       f"purpose: {', '.join(kept)}")
        return [{"name": "all_int8", "value": len(unexpected), "threshold": 0, "passed": not unexpected,
                 "detail": detail}]


__all__ = ["AllInt8"]
