"""``[quantize.ptq] engine = "auto"``: which PTQ makes a format's int8 artifact, chosen on the calibration data.

The candidates, cheapest first: edgeprep's PTQ with int8 activations and the converter's own PTQ (both int8), then,
only when neither meets every int8 gate on the calibration data and the backend has a 16-bit activation path,
edgeprep's PTQ with int16 activations (TFLite 16x8: more accurate, slower). Each candidate is converted into the
work directory and run on the calibration samples against the float model's outputs there; the choice is the
cheapest tier whose candidate meets every int8 gate (the one nearer the float model within a tier), or, when none
does, the candidate nearest the float model. The run then measures the chosen artifact on the evaluation data like
any other, so the reported figures are not the ones that chose (unless the calibration data is the evaluation
data, which the record says).

``choose`` is the rule, pure; ``choose_int8`` builds, measures and writes the winner at ``out``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable

from edgeprep.artifact import Artifact
from edgeprep.backends import get_backend
from edgeprep.data import Dataset
from edgeprep.models import ModelHandle


@dataclasses.dataclass(frozen=True)
class Candidate:
    name: str             # "edgeprep", "vendor", "edgeprep-int16"
    tier: int             # 0: int8 activations; 1: 16-bit activations (slower)
    metrics: dict | None  # agreement, sqnr_db, accuracy_drop, ... on the calibration data; None: not measured
    passed: bool          # every int8 gate met on the calibration data


def _sqnr(c: Candidate) -> float:
    v = (c.metrics or {}).get("sqnr_db")
    return v if isinstance(v, (int, float)) and math.isfinite(v) else -math.inf


def _agreement(c: Candidate) -> float:
    v = (c.metrics or {}).get("agreement")
    return v if isinstance(v, (int, float)) and math.isfinite(v) else -math.inf


def choose(candidates: list[Candidate]) -> tuple[int, str]:
    """The index of the chosen candidate and why. Pure."""
    if not candidates:
        raise ValueError("no candidate to choose from")
    nearer = lambda i: (_sqnr(candidates[i]), _agreement(candidates[i]))     # noqa: E731
    passing = [i for i, c in enumerate(candidates) if c.passed]
    if passing:
        tier = min(candidates[i].tier for i in passing)
        best = max((i for i in passing if candidates[i].tier == tier), key=nearer)
        return best, "meets every int8 gate on the calibration data" + (
            ", the nearest the float model of those that do" if len(passing) > 1 else "")
    best = max(range(len(candidates)), key=nearer)
    return best, "no candidate meets every int8 gate on the calibration data: the nearest the float model"


def needs_escalation(candidates: list[Candidate]) -> bool:
    """Whether the int8 candidates leave a reason to try 16-bit activations: none meets every gate."""
    return not any(c.passed for c in candidates)


def choose_int8(model: ModelHandle, fmt: str, out: Path, workdir: Path, target, calibration: Dataset,
                owned: Callable[[str], object], cal_ref, threads: int | None,
                step: Callable[[str], None] = lambda _m: None) -> tuple[Artifact, object, dict]:
    """Build the candidates of ``fmt``'s int8 artifact, measure each on ``cal_ref`` (float outputs on the first
    samples of ``calibration``), write the chosen one at ``out`` and return it with its ``Built`` (None for the
    converter's own PTQ) and the record for the report. ``owned(activations)`` gives edgeprep's PTQ parameters (or
    None when they cannot be computed for this model)."""
    from edgeprep.stages import ptq
    from edgeprep.stages.convert import convert, target_options
    from edgeprep.stages.verify import verify

    backend = get_backend(fmt)
    thresholds = target.gates.for_precision("int8")
    int16 = dataclasses.replace(target, quantize=dataclasses.replace(
        target.quantize, ptq=dataclasses.replace(target.quantize.ptq, activations="int16")))
    int8 = dataclasses.replace(target, quantize=dataclasses.replace(
        target.quantize, ptq=dataclasses.replace(target.quantize.ptq, activations="int8")))

    def build_edgeprep(t, activations: str, path: Path):
        params = owned(activations)
        if params is None:
            return None
        art, built, _ = ptq.export_owned(params, model, fmt, path, workdir, t, calibration)
        return art, built

    def build_vendor(path: Path):
        return convert(model, out=path, workdir=workdir, calibration=calibration,
                       **target_options(target, fmt, "int8")), None

    builders = {"edgeprep": (0, lambda p: build_edgeprep(int8, ptq.activations_for(int8.quantize, fmt), p)),
                "vendor": (0, build_vendor)}
    if backend.int16_activations and not backend.qat_reconverts:
        builders["edgeprep-int16"] = (1, lambda p: build_edgeprep(int16, "int16", p))
    from edgeprep.errors import ConversionError

    candidates: list[Candidate] = []
    refused: dict[str, ConversionError] = {}
    for name, (tier, build) in builders.items():
        if tier == 1 and not needs_escalation(candidates):
            break
        path = workdir / "ptq-choice" / name / out.name
        path.parent.mkdir(parents=True, exist_ok=True)
        step(f"candidate {name}: converting and measuring on {cal_ref.samples} calibration samples")
        try:
            made = build(path)
        except ConversionError as exc:      # this engine cannot make the artifact: the others may
            refused[name] = exc
            step(f"candidate {name}: {exc}")
            continue
        if made is None:
            continue
        result = verify(made[0], cal_ref, calibration, thresholds, threads)
        passed = result["status"] in ("verified", "measured")      # measured: no gate set, none missed
        candidates.append(Candidate(name, tier, result["metrics"], passed))
    if not candidates and refused:
        raise next(iter(refused.values()))
    index, why = choose(candidates)
    winner = candidates[index]
    # rebuilt at its final path, so its rebuild with layers kept float (keep-float search) writes there too
    if winner.name == "vendor":
        art, built = build_vendor(out)
    else:
        art, built = build_edgeprep(int16 if winner.tier else int8,
                                    "int16" if winner.tier else ptq.activations_for(int8.quantize, fmt), out)
    record = {"chosen": winner.name, "why": why, "selected_on": f"{cal_ref.samples} samples of {calibration.source}",
              "candidates": [{"name": c.name, "activations": "int16" if c.tier else "int8", "passed": c.passed,
                              **{k: (c.metrics or {}).get(k) for k in ("agreement", "sqnr_db", "accuracy_drop")}}
                             for c in candidates]}
    if refused:
        record["refused"] = {name: str(exc) for name, exc in refused.items()}
    art = dataclasses.replace(art, quantization={**art.quantization, "engine": record["chosen"]})
    return art, built, record


def line(label: str, record: dict) -> str:
    """The console line of a choice."""
    def fig(c):
        s = f"{c['sqnr_db']:.1f} dB" if isinstance(c.get("sqnr_db"), (int, float)) else "-"
        a = f"{c['agreement']:.3f}" if isinstance(c.get("agreement"), (int, float)) else "-"
        return f"{c['name']} {a}/{s}{'' if c['passed'] else ' (gates missed)'}"
    return (f"{label}: PTQ engine {record['chosen']} chosen on the calibration data (agreement/SQNR: "
            + ", ".join(fig(c) for c in record["candidates"]) + ")")


__all__ = ["Candidate", "choose", "choose_int8", "line", "needs_escalation"]
