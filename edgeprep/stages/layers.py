"""Per-layer error of quantized artifacts, and the keep-float search, as pipeline steps.

``layer_errors`` measures every layer of one quantized artifact against the float model of the same format
(see ``edgeprep.quant.layer_error``). ``keep_float_search`` re-quantizes with the layers that lose the most
SQNR kept in float — 1, 2, 4, ... layers — until the target's int8 ``max_accuracy_drop`` is met on the
evaluation data (top-1 agreement with the float model stands in for accuracy when there are no labels).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from edgeprep._util import quiet
from edgeprep.backends import Artifact
from edgeprep.data import Dataset
from edgeprep.errors import ConfigError

MEASURED = ("tflite", "openvino")


def layer_errors(artifact: Artifact, float_path: Path | bytes | None, data: Dataset, samples: int) -> dict:
    """The ``layer_errors`` object of a report entry: layers ranked worst first."""
    from edgeprep.quant import layer_error as le

    if artifact.format == "coreml":
        return {"status": "skipped", "samples": 0, "layers": [],
                "reason": "Core ML layers are compared with the float Keras model under verification.layers (by "
                          "edgeprep's reference executor, where it can run the artifact); here: the SQNR of every "
                          "compressed weight tensor", "weights": artifact.quantization.get("weight_sqnr", [])}
    if float_path is None or samples == 0:
        return {"status": "skipped", "samples": 0, "layers": [], "reason": "layer_error_samples = 0"}
    x, _ = data.arrays(min(samples, data.count))
    with quiet():
        errs = le.tflite_errors(artifact.path, float_path, x) if artifact.format == "tflite" \
            else le.openvino_errors(artifact.path, Path(float_path), x)
    ordered = sorted(errs, key=lambda e: e.position)
    rows, prev = [], None
    for e in ordered:
        d = e.to_dict()
        d["sqnr_delta_db"] = round((prev - e.sqnr_db) if prev is not None else 0.0, 3)
        prev = e.sqnr_db
        rows.append(d)
    rows.sort(key=lambda d: (d["sqnr_db"], d["position"]))
    return {"status": "measured", "samples": int(len(x)), "reference": f"{artifact.format} fp32 of the same model",
            "layers": rows, "worst": rows[0]["name"] if rows else None}


def candidates(report: dict) -> list[str]:
    """Nodes ordered by the SQNR they lose (the drop against the previous layer), biggest loss first."""
    rows = [r for r in report.get("layers", []) if r["op"] not in ("RESHAPE", "Reshape", "MAX_POOL_2D", "MaxPool")]
    rows.sort(key=lambda r: (-r["sqnr_delta_db"], r["sqnr_db"]))
    seen, out = set(), []
    for r in rows:
        if r["node"] not in seen:
            seen.add(r["node"])
            out.append(r["node"])
    return out


def keep_float_search(artifact: Artifact, result: dict, report: dict,
                      requantize: Callable[[tuple[str, ...]], Artifact], measure: Callable[[Artifact], dict],
                      max_drop: float | None, max_layers: int) -> tuple[Artifact, dict, dict]:
    """Start from ``artifact`` and its verification ``result``; returns the chosen artifact, its verification
    result and the ``keep_float`` report object."""
    if max_drop is None:
        raise ConfigError("keep_float = auto needs the target's int8 max_accuracy_drop",
                          "set [gates.int8] max_accuracy_drop (points) in the target profile")
    order = candidates(report)
    tried = [{"kept_float": [], "drop": _drop(result)}]
    best, best_result, kept = artifact, result, ()
    n = 1
    while _drop(best_result) > max_drop + 1e-9 and len(kept) < min(max_layers, len(order)):
        kept = tuple(order[:min(n, max_layers, len(order))])
        art = requantize(kept)
        res = measure(art)
        tried.append({"kept_float": list(kept), "drop": _drop(res)})
        best, best_result = art, res
        n *= 2
    met = _drop(best_result) <= max_drop + 1e-9
    return best, best_result, {"mode": "auto", "max_accuracy_drop": max_drop, "kept_float": list(kept),
                               "met": met, "metric": _metric(best_result), "tried": tried}


def _metric(result: dict) -> str:
    m = result.get("metrics") or {}
    return "accuracy drop (points)" if m.get("accuracy_drop") is not None else \
        "disagreement with the float model (points of top-1 agreement)"


def _drop(result: dict) -> float:
    m = result.get("metrics") or {}
    if m.get("accuracy_drop") is not None:
        return float(m["accuracy_drop"])
    return round(100.0 * (1.0 - float(m.get("agreement") or 0.0)), 4)


__all__ = ["layer_errors", "keep_float_search", "candidates", "MEASURED"]
