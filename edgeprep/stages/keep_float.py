"""Per-layer error of quantized artifacts, and the keep-float search, as pipeline steps.

``layer_errors`` measures every layer of one quantized artifact against the float model of the same format
(``Backend.layer_errors``; see ``edgeprep.backends.layer_error``). ``keep_float_search`` re-quantizes with the
layers that lose the most SQNR kept in float — 1, 2, 4, ... layers — until every numeric int8 gate of the target
(``max_accuracy_drop``, ``min_agreement``, ``min_sqnr_db``) is met (top-1 agreement with the float model stands in
for accuracy when there are no labels).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from edgeprep._util import quiet
from edgeprep.artifact import Artifact
from edgeprep.backends import get_backend
from edgeprep.config.gates import Thresholds
from edgeprep.data import Dataset
from edgeprep.errors import ConfigError


def layer_errors(artifact: Artifact, float_path: Path | bytes | None, data: Dataset, samples: int) -> dict:
    """The ``layer_errors`` object of a report entry: layers ranked worst first (``Backend.layer_errors``, for the
    formats that measure them against their own fp32 artifact)."""
    backend = get_backend(artifact.format)
    if not backend.measures_layer_error:
        return {"status": "skipped", "samples": 0, "layers": [], **backend.unmeasured_layer_errors(artifact)}
    if float_path is None or samples == 0:
        return {"status": "skipped", "samples": 0, "layers": [], "reason": "layer_error_samples = 0"}
    x, _ = data.arrays(min(samples, data.count))
    with quiet():
        errs = backend.layer_errors(artifact.path, float_path, x)
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


GATES = ("max_accuracy_drop", "min_agreement", "min_sqnr_db")   # the numeric int8 gates keep-float works toward


def _gates(thresholds: Thresholds) -> Thresholds:
    """The numeric gates of ``thresholds`` (size is not something keeping layers in float can improve)."""
    return Thresholds(**{g: getattr(thresholds, g) for g in GATES})


def failing(result: dict, thresholds: Thresholds) -> list[str]:
    """The numeric gates ``result`` fails, as "min_agreement 0.9567 < 0.97". Without labels, the accuracy drop is
    judged on the disagreement with the float model (points of top-1 agreement), as the report says."""
    from edgeprep.stages.verify import check

    values = dict(result.get("metrics") or {})
    gates = _gates(thresholds)
    if gates.max_accuracy_drop is not None and values.get("accuracy_drop") is None:
        values["accuracy_drop"] = _drop(result)
    out = []
    for c in check(values, gates, 0):
        if not c["passed"]:
            op = "<" if c["name"].startswith("min_") else ">"
            out.append(f"{c['name']} {c['value']:.4g} {op} {c['threshold']:g}")
    if not any(values.get(k) is not None for k in ("accuracy_drop", "agreement", "sqnr_db")):
        out.append("no metrics measured")
    return out


def keep_float_search(artifact: Artifact, result: dict, report: dict,
                      requantize: Callable[[tuple[str, ...]], Artifact], measure: Callable[[Artifact], dict],
                      thresholds: Thresholds, max_layers: int) -> tuple[Artifact, dict, dict]:
    """Start from ``artifact`` and its verification ``result``; keep 1, 2, 4, ... of the layers that lose the
    most SQNR in float until every numeric int8 gate the target sets (accuracy drop, agreement, SQNR) is met.
    Returns the chosen artifact, its verification result and the ``keep_float`` report object, which says which
    gates drove each step."""
    gates = _gates(thresholds)
    set_gates = {g: getattr(gates, g) for g in GATES if getattr(gates, g) is not None}
    if not set_gates:
        raise ConfigError("keep_float = auto needs an int8 gate to work toward",
                          "set max_accuracy_drop, min_agreement or min_sqnr_db in [gates.int8] of the target")
    order = candidates(report)
    first = failing(result, gates)
    tried = [_step((), result, first)]
    best, best_result, kept, now = artifact, result, (), first
    n = 1
    while now and len(kept) < min(max_layers, len(order)):
        kept = tuple(order[:min(n, max_layers, len(order))])
        art = requantize(kept)
        res = measure(art)
        now = failing(res, gates)
        tried.append(_step(kept, res, now))
        best, best_result = art, res
        n *= 2
    return best, best_result, {"mode": "auto", "gates": set_gates,
                               "max_accuracy_drop": set_gates.get("max_accuracy_drop"),
                               "kept_float": list(kept), "met": not now, "driven_by": first, "failing": now,
                               "metric": _metric(best_result), "tried": tried}


def _step(kept: tuple[str, ...], result: dict, fails: list[str]) -> dict:
    m = result.get("metrics") or {}
    return {"kept_float": list(kept), "drop": _drop(result), "agreement": m.get("agreement"),
            "sqnr_db": m.get("sqnr_db"), "failing": fails}


def summary(keep: dict) -> str:
    """One line for the console: what was kept, and why (the gates that drove it) or why not."""
    gates = ", ".join(f"{k} {v:g}" for k, v in keep.get("gates", {}).items())
    if not keep["kept_float"]:
        return f"kept float: none (met: {gates})" if keep["met"] else \
            f"kept float: none; still failing {', '.join(keep['failing'])}"
    why = f"driven by {', '.join(keep['driven_by'])}"
    if keep["met"]:
        return f"kept float: {', '.join(keep['kept_float'])} ({why}; now meets {gates})"
    return f"kept float: {', '.join(keep['kept_float'])} ({why}; still failing {', '.join(keep['failing'])})"


def _metric(result: dict) -> str:
    m = result.get("metrics") or {}
    return "accuracy drop (points)" if m.get("accuracy_drop") is not None else \
        "disagreement with the float model (points of top-1 agreement)"


def _drop(result: dict) -> float:
    """The accuracy drop, else the same drop with the float model's top-1 as the labels: the float model scores
    1.0 on them and the artifact its agreement."""
    from edgeprep.gate import accuracy_drop

    m = result.get("metrics") or {}
    if m.get("accuracy_drop") is not None:
        return float(m["accuracy_drop"])
    return accuracy_drop(1.0, float(m.get("agreement") or 0.0))


__all__ = ["layer_errors", "keep_float_search", "candidates", "failing", "summary", "GATES"]
