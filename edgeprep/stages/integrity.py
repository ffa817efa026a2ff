"""Export integrity: did each artifact keep the folded, recalibrated BatchNorm the float model has?

Two checks join every artifact's verification (same shape as the gate checks):

- ``no_foldable_bn_ops``: BatchNorm-type ops left in the artifact where they could have been folded. Converters
  name them differently and often lower them: TFLite has no BN op (an unfolded BN becomes ``MUL`` + ``ADD`` by
  constants; ``FlexFusedBatchNormV3`` if it was kept as a TensorFlow op), OpenVINO IR has ``BatchNormInference``
  or ``Multiply`` + ``Add``, Core ML has ``batch_norm`` or ``mul`` + ``add``. So each format's backend reads its
  graph back into one small op graph (``Backend.read_graph``, which carries the format's op kinds) and the same
  rule applies to all: an explicit BN op, or a multiply by a constant, whose input comes straight (through
  constant bias adds) from a conv / fully-connected / matmul op that feeds nothing else, is a BN that was foldable
  and was not folded. The artifact's op counts are in its inspection.
- ``bn_statistics_kept`` (when BN statistics were recalibrated): the artifact's outputs must be closer to the
  recalibrated float model than to the model with the stale statistics. It is reported only where it can tell:
  when recalibration moved the outputs by more than the artifact's own precision noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprep._util import quiet
from edgeprep.backends import get_backend
from edgeprep.backends.graph import OpGraph


def is_bn_op(op_type: str) -> bool:
    """Explicit BatchNorm ops in any format: FusedBatchNormV3 (TF/Flex), BatchNormInference (OpenVINO),
    batch_norm (Core ML)."""
    return "batchnorm" in op_type.lower().replace("_", "")


@dataclass(frozen=True)
class BNOpScan:
    format: str
    bn_ops: int                       # explicit BatchNorm ops
    affine_ops: int                   # multiplies by a constant (an unfused BN, or a scale layer)
    foldable: tuple[str, ...]         # those of either kind right after a linear op with no other consumer

    def describe(self) -> str:
        where = f": {', '.join(self.foldable[:5])}" + (" …" if len(self.foldable) > 5 else "") \
            if self.foldable else ""
        return (f"{len(self.foldable)} foldable BN-type ops left{where} ({self.bn_ops} BatchNorm ops, "
                f"{self.affine_ops} constant multiplies in the {self.format} graph)")


def scan(graph: OpGraph) -> BNOpScan:
    linear, mul, add = graph.kinds.linear, graph.kinds.scale, graph.kinds.bias
    bn = affine = 0
    foldable = []
    for op in graph.ops:
        explicit = is_bn_op(op.type)
        scale = op.type in mul and len(op.inputs) == 1 and op.const_inputs >= 1
        if not (explicit or scale):
            continue
        bn += explicit
        affine += scale
        prev = graph.producer(op)
        while prev is not None and prev.type in add and prev.const_inputs and graph.consumers(prev) == 1:
            prev = graph.producer(prev)      # through a constant bias add
        if prev is not None and prev.type in linear and graph.consumers(prev) == 1:
            foldable.append(f"{op.type} {op.name}")
    return BNOpScan(graph.format, bn, affine, tuple(foldable))


def read_graph(fmt: str, path: Path) -> OpGraph:
    """The artifact's op graph, read by its format's backend (``Backend.read_graph``)."""
    with quiet():
        return get_backend(fmt).read_graph(Path(path))


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(np.asarray(a, np.float64)))))


@dataclass(frozen=True)
class ExportIntegrity:
    """The export-integrity checks of one run. ``stale_outputs``: the float model with its stored (stale)
    statistics on the verification samples, when calibration changed them; None otherwise."""

    stale_outputs: np.ndarray | None = None

    def __call__(self, artifact, outputs: np.ndarray | None, reference) -> list[dict]:
        result = scan(read_graph(artifact.format, artifact.path))
        checks = [{"name": "no_foldable_bn_ops", "value": len(result.foldable), "threshold": 0,
                   "passed": not result.foldable, "detail": result.describe()}]
        if outputs is not None and reference is not None and self.stale_outputs is not None:
            check = statistics_check(outputs, reference.outputs, self.stale_outputs)
            if check is not None:
                checks.append(check)
        return checks


def statistics_check(outputs: np.ndarray, recalibrated: np.ndarray, stale: np.ndarray) -> dict | None:
    """``bn_statistics_kept``: RMS error to the recalibrated float model over RMS error to the stale one (< 1:
    the artifact computes with the new statistics). None when recalibration moved the outputs less than the
    artifact's own noise (then the two cannot be told apart)."""
    n = min(len(outputs), len(recalibrated), len(stale))
    out = np.asarray(outputs[:n], np.float64).reshape(n, -1)
    e_new = _rms(out - recalibrated[:n].reshape(n, -1))
    e_old = _rms(out - stale[:n].reshape(n, -1))
    moved = _rms(recalibrated[:n].reshape(n, -1) - stale[:n].reshape(n, -1))
    if moved <= min(e_new, e_old) or e_old == 0.0 and e_new == 0.0:
        return None
    ratio = e_new / e_old if e_old > 0 else float("inf")
    return {"name": "bn_statistics_kept", "value": round(ratio, 6), "threshold": 1.0, "passed": ratio < 1.0,
            "detail": f"RMS error {e_new:.3g} to the recalibrated float model, {e_old:.3g} to the stale one "
                      f"(recalibration moved the outputs by {moved:.3g} RMS)"}
