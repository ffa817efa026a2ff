"""Per-layer error: the SQNR of every layer's output in a quantized artifact against the float model, ranked.

The float side is the same model converted to the same format at fp32, so both graphs have the same layers after
the converter's own fusions (Conv+BN+ReLU is one op in both). Layers are paired by aligning the two op sequences
(op type, TFLite's fused activation, and output shape, in execution order) — names are used for display and for
keep-float, never trusted for pairing, because converters rename fused ops and QAT graphs carry extra nodes. The
fused activation is part of the op: a CONV_2D+RELU6 (``relu6(conv + 3)``, a hard-sigmoid with its ``+ 3`` in the
bias) computes a different tensor than a CONV_2D whose ``+ 3`` and ReLU6 follow as an ADD, and pairing the two
compares different quantities (about 0 dB whatever the quantization).

This module holds what every format shares: the ``LayerError`` value, the SQNR accumulator, the alignment, display
names and the ranking. Reading each format's intermediate tensors is the backend's (``Backend.layer_errors``:
``edgeprep.backends.tflite.layer_error``, ``edgeprep.backends.openvino.layer_error``).
SQNR is ``10 log10(sum ref^2 / sum (ref - q)^2)`` over all samples, as for the model output.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass

import numpy as np

from device_bench.metrics import SQNR_EXACT_DB


@dataclass(frozen=True)
class LayerError:
    name: str        # readable layer name
    node: str        # the node's name in the float model of this format: what keep_float takes
    op: str
    shape: tuple[int, ...]
    sqnr_db: float
    position: int    # execution order in the quantized artifact

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


class SQNRAccumulator:
    """Signal and noise energy summed over chunks of one tensor; ``sqnr`` in dB (capped at ``SQNR_EXACT_DB``)."""

    def __init__(self) -> None:
        self.signal = 0.0
        self.noise = 0.0

    def add(self, ref: np.ndarray, q: np.ndarray) -> None:
        ref = ref.astype(np.float64).reshape(-1)
        q = q.astype(np.float64).reshape(-1)
        self.signal += float(np.sum(ref * ref))
        self.noise += float(np.sum((ref - q) ** 2))

    @property
    def sqnr(self) -> float:
        if self.noise == 0.0:
            return SQNR_EXACT_DB
        if self.signal == 0.0:
            return -SQNR_EXACT_DB
        return round(min(SQNR_EXACT_DB, 10.0 * math.log10(self.signal / self.noise)), 3)


def align(a: list[tuple], b: list[tuple]) -> list[tuple[int, int]]:
    """Index pairs (i, j) with a[i] == b[j] along the longest common alignment of two op sequences."""
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return [(blk.a + k, blk.b + k) for blk in sm.get_matching_blocks() for k in range(blk.size)]


def display_name(name: str) -> str:
    """``model_1/conv2d_3/Relu;model_1/conv2d_3/BiasAdd`` -> ``conv2d_3/Relu``."""
    first = name.split(";")[0]
    parts = [p for p in first.split("/") if p]
    return "/".join(parts[1:]) if len(parts) > 2 else first


def ranked(errors: list[LayerError]) -> list[LayerError]:
    """Worst (lowest SQNR) first; ties keep execution order."""
    return sorted(errors, key=lambda e: (e.sqnr_db, e.position))


__all__ = ["LayerError", "SQNRAccumulator", "align", "display_name", "ranked"]
