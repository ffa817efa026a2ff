"""The regression gate: pure functions from (report, baseline, gates) to verdicts.

Each check returns ``Verdict`` values with status ``pass``, ``fail`` or ``error``. It fails closed: a threshold
that is set but whose metric is missing on either side (an artifact not benchmarked, a baseline without that
artifact, measurements taken with different threads) is an ``error``, never a pass. So is a measured value that is
not a finite number (NaN or infinite, as Python's json reads ``NaN`` and ``Infinity``), on either side: every
comparison with NaN is false, so ``value > limit`` would let it pass. ``evaluate`` judges no further an artifact with
any such value (in ``size_bytes``, ``metrics``, ``bench`` or its raw latencies), and each check refuses one too.

Latency is judged on the ratio of median latencies (report / baseline) with a percentile-bootstrap confidence
interval. The bootstrap is hierarchical: a benchmark runs in several fresh processes, and processes are resampled
before iterations, because on a shared machine the spread between processes (placement, frequency, neighbours)
is far larger than within one. A latency regression fails only when it is above the
threshold *and* significant: the lower end of the interval at ``latency_confidence`` is above
``1 + max_latency_regression_pct / 100``. So run-to-run noise, which widens the interval, cannot fail a build, and
a clearly slower model, whose whole interval sits above the threshold, always does.

Every threshold is compared by one judge, ``Goal.met``: a metric at most (``max``) or at least (``min``) a limit,
within ``TOLERANCE``, a non-finite value never meeting it. Verify checks each artifact with it (``goals``,
``THRESHOLD_CHECKS``, ``judge`` for the artifact's status); the gate compares through it too, after computing its
baseline-relative values (size growth, ``accuracy_drop`` against the baseline, the latency ratio's lower bound).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeprep.config.gates import Gates, Thresholds

MIN_SAMPLES = 10       # fewer latency samples than this on either side cannot be judged


@dataclass(frozen=True)
class Verdict:
    artifact: str
    check: str
    status: str                     # "pass" | "fail" | "error"
    value: float | None = None
    baseline: float | None = None
    threshold: float | None = None
    detail: str = ""
    interval: tuple[float, float] | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["interval"] = list(self.interval) if self.interval else None
        return d


def _number(value) -> bool:
    """A real number (a bool is not one)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _finite(value) -> bool:
    """A measured value the gate can judge: a real number, not NaN or infinite."""
    return _number(value) and math.isfinite(value)


def _unjudgeable(key: str, check: str, what: str, value, side: str) -> Verdict | None:
    """An ``error`` verdict when ``value`` (present) is not a finite number; None when it can be judged."""
    if value is None or _finite(value):
        return None
    return Verdict(key, check, "error", detail=f"{what} in {side} is {value!r}, not a finite number: a gate never "
                                               "passes a non-finite measurement; measure it again")


def _latency_problem(samples) -> str | None:
    """Why raw latencies cannot be judged (not numbers, NaN or infinite, zero or negative), or None."""
    try:
        groups = _groups(samples)
    except (TypeError, ValueError):
        return "raw latencies that are not numbers"
    values = np.concatenate(groups) if groups else np.empty(0)
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        return f"{bad} of {values.size} raw latencies NaN or infinite"
    if np.any(values <= 0):
        return f"{int(np.count_nonzero(values <= 0))} of {values.size} raw latencies zero or negative"
    if any(g.size == 0 for g in groups):
        return "a benchmark process without latencies"
    return None


def non_finite(entry: dict | None, samples=None) -> list[str]:
    """Where an artifact entry holds a measured value that is not a finite number, in ``size_bytes``, ``metrics``
    and ``bench``, and its raw latencies (``samples``, else those inlined in ``bench.latencies_ms``, if any)."""
    found: dict[str, list] = {}

    def walk(value, where: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k != "latencies_ms":
                    walk(v, f"{where}.{k}")
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v, f"{where}[]")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and not _finite(value):
            found.setdefault(where, []).append(value)

    entry = entry or {}
    for name in ("size_bytes", "metrics", "bench"):
        walk(entry.get(name), name)
    out = [f"{where} = {values[0]}" if len(values) == 1 else f"{where} ({len(values)} values NaN or infinite)"
           for where, values in found.items()]
    if samples is None:
        samples = (entry.get("bench") or {}).get("latencies_ms")
    problem = None if samples is None else _latency_problem(samples)
    if problem and ("NaN" in problem or "not numbers" in problem):
        out.append(problem)
    return out


def _groups(samples) -> list[np.ndarray]:
    """Latencies as one array per benchmark process (a flat list is one process)."""
    if len(samples) and isinstance(samples[0], (list, tuple, np.ndarray)):
        return [np.asarray(g, dtype=np.float64) for g in samples]
    return [np.asarray(samples, dtype=np.float64)]


def _bootstrap_medians(groups: list[np.ndarray], rng: np.random.Generator, resamples: int) -> np.ndarray:
    """Medians of hierarchical bootstrap resamples: pick processes with replacement, then iterations within each,
    so the interval carries the spread between processes as well as within them."""
    out = np.empty(resamples)
    for i in range(resamples):
        picked = rng.integers(0, len(groups), len(groups))
        out[i] = np.median(np.concatenate([rng.choice(groups[j], groups[j].size) for j in picked]))
    return out


def median_ratio(current, baseline, confidence: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float, float]:
    """(median(current) / median(baseline), lower, upper): a bootstrap interval at ``confidence``.

    ``current`` and ``baseline`` are flat lists of latencies, or lists of them, one per benchmark process."""
    cur, base = _groups(current), _groups(baseline)
    rng = np.random.default_rng(seed)
    ratios = _bootstrap_medians(cur, rng, resamples) / _bootstrap_medians(base, rng, resamples)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(ratios, [alpha, 1.0 - alpha])
    return float(np.median(np.concatenate(cur)) / np.median(np.concatenate(base))), float(lo), float(hi)


# ---------------------------------------------------------------- the one threshold judge

TOLERANCE = 1e-9       # how far past its limit a value may sit and still pass: float noise, not a regression
KINDS = ("max", "min")


@dataclass(frozen=True)
class Goal:
    """A threshold as data: ``metric`` at most (``max``) or at least (``min``) ``limit``; its check is named
    ``<kind>_<metric>``, as the target's ``[gates]`` key (``max_accuracy_drop`` is ``Goal("accuracy_drop", "max",
    limit)``)."""

    metric: str
    kind: str
    limit: float

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"a goal's kind is one of {', '.join(KINDS)}, got {self.kind!r}")
        if not _number(self.limit):     # a NaN limit is a number no value meets, as every comparison with NaN fails
            raise ValueError(f"{self.name}: the limit is {self.limit!r}, not a number; a threshold that is not set is "
                             "no goal")

    @classmethod
    def named(cls, name: str, limit: float) -> Goal:
        """The goal of a ``[gates]`` key: ``Goal.named("min_agreement", 0.99)``."""
        kind, _, metric = name.partition("_")
        return cls(metric, kind, limit)

    @property
    def name(self) -> str:
        return f"{self.kind}_{self.metric}"

    def met(self, value) -> bool:
        """Whether ``value`` meets the goal, within ``TOLERANCE``. A value that is not a finite number (None, NaN,
        infinite, not a number) never does."""
        if not _finite(value):
            return False
        return bool(value <= self.limit + TOLERANCE if self.kind == "max" else value >= self.limit - TOLERANCE)

    def status(self, value) -> str:
        """The gate verdict's status: ``pass`` or ``fail``."""
        return "pass" if self.met(value) else "fail"


# The thresholds a target sets that each artifact is checked against on its own (by verify, and again by the gate),
# in the order their checks are written; the others (finite_outputs, the export-integrity checks, a failed benchmark)
# can fail an artifact but do not verify it against anything the user asked for.
THRESHOLD_CHECKS = ("max_accuracy_drop", "min_agreement", "min_sqnr_db", "max_size_bytes")


def goals(thresholds: Thresholds) -> list[Goal]:
    """The goals of the per-artifact thresholds (``THRESHOLD_CHECKS``) that are set; a threshold left out is none."""
    return [Goal.named(name, getattr(thresholds, name)) for name in THRESHOLD_CHECKS
            if getattr(thresholds, name) is not None]


def accuracy_drop(reference_accuracy: float, accuracy: float) -> float:
    """Points of top-1 accuracy (fractions in [0, 1]) that ``accuracy`` is below ``reference_accuracy``, to 4
    decimals: negative when it is above."""
    return round(100.0 * (reference_accuracy - accuracy), 4)


def thresholds_in(checks: list[dict]) -> int:
    """How many of ``checks`` are target thresholds."""
    return sum(1 for c in checks if c["name"] in THRESHOLD_CHECKS)


def judge(measured: bool, checks: list[dict]) -> str:
    """An artifact's verification status from whether its numerics were measured and the checks evaluated on it:
    ``failed`` when any check failed, else ``unmeasured`` (numerics unknown, whatever passed), ``verified`` (at
    least one target threshold checked, all passed) or ``measured`` (no threshold to pass or fail)."""
    if any(not c["passed"] for c in checks):
        return "failed"
    if not measured:
        return "unmeasured"
    return "verified" if thresholds_in(checks) else "measured"


# ---------------------------------------------------------------- the gate's checks

def check_size(key: str, size: int, base_size: int | None, t: Thresholds) -> list[Verdict]:
    out = []
    if t.max_size_bytes is not None:
        out.append(_unjudgeable(key, "max_size_bytes", "the size", size, "this report") or
                   Verdict(key, "max_size_bytes", Goal.named("max_size_bytes", t.max_size_bytes).status(size), size,
                           base_size, t.max_size_bytes, f"{size:,} bytes (limit {t.max_size_bytes:,})"))
    if t.max_size_growth_pct is not None:
        name = "max_size_growth_pct"
        bad = (_unjudgeable(key, name, "the size", size, "this report")
               or _unjudgeable(key, name, "the size", base_size, "the baseline"))
        if base_size is None:
            out.append(Verdict(key, "max_size_growth_pct", "error", detail="no size in the baseline"))
        elif bad:
            out.append(bad)
        elif base_size <= 0:
            out.append(Verdict(key, name, "error", detail=f"the size in the baseline is {base_size} bytes: no growth "
                                                          "can be measured from it; update the baseline"))
        else:
            growth = 100.0 * (size - base_size) / base_size
            out.append(Verdict(key, name, Goal.named(name, t.max_size_growth_pct).status(growth),
                               round(growth, 3), base_size, t.max_size_growth_pct,
                               f"{size:,} bytes vs {base_size:,} in the baseline ({growth:+.1f} %)"))
    return out


def check_accuracy(key: str, metrics: dict | None, base_metrics: dict | None, t: Thresholds) -> list[Verdict]:
    out = []
    m, b = metrics or {}, base_metrics or {}

    def missing(check: str, what: str) -> Verdict:
        return Verdict(key, check, "error", detail=f"{what} is missing: verify with --data (and the model)")

    if t.max_accuracy_drop is not None:
        drop = m.get("accuracy_drop")
        out.append(missing("max_accuracy_drop", "the accuracy drop vs the float model") if drop is None else
                   _unjudgeable(key, "max_accuracy_drop", "the accuracy drop", drop, "this report") or
                   Verdict(key, "max_accuracy_drop", Goal.named("max_accuracy_drop", t.max_accuracy_drop).status(drop),
                           drop, None, t.max_accuracy_drop, f"{drop:+.2f} points below the float model"))
    if t.min_agreement is not None:
        v = m.get("agreement")
        out.append(missing("min_agreement", "top-1 agreement") if v is None else
                   _unjudgeable(key, "min_agreement", "top-1 agreement", v, "this report") or
                   Verdict(key, "min_agreement", Goal.named("min_agreement", t.min_agreement).status(v), v, None,
                           t.min_agreement, f"agreement {v:.4f}"))
    if t.min_sqnr_db is not None:
        v = m.get("sqnr_db")
        out.append(missing("min_sqnr_db", "SQNR") if v is None else
                   _unjudgeable(key, "min_sqnr_db", "SQNR", v, "this report") or
                   Verdict(key, "min_sqnr_db", Goal.named("min_sqnr_db", t.min_sqnr_db).status(v), v, None,
                           t.min_sqnr_db, f"SQNR {v:.1f} dB"))
    if t.max_accuracy_drop_vs_baseline is not None:
        acc, base = m.get("accuracy"), b.get("accuracy")
        name = "max_accuracy_drop_vs_baseline"
        bad = (_unjudgeable(key, name, "top-1 accuracy", acc, "this report")
               or _unjudgeable(key, name, "top-1 accuracy", base, "the baseline"))
        if acc is None or base is None:
            out.append(missing("max_accuracy_drop_vs_baseline",
                               "accuracy " + ("of the report" if acc is None else "in the baseline")))
        elif bad:
            out.append(bad)
        else:
            drop = accuracy_drop(base, acc)
            out.append(Verdict(key, name, Goal.named(name, t.max_accuracy_drop_vs_baseline).status(drop), acc, base,
                               t.max_accuracy_drop_vs_baseline,
                               f"top-1 {acc:.4f} vs {base:.4f} in the baseline ({drop:+.2f} points lower)"))
    return out


def check_latency(key: str, current: list | None, baseline: list | None, t: Thresholds,
                  confidence: float = 0.95, resamples: int = 2000) -> list[Verdict]:
    if t.max_latency_regression_pct is None:
        return []
    name = "max_latency_regression_pct"
    for side, samples in (("this report", current), ("the baseline", baseline)):
        if samples is None:
            return [Verdict(key, name, "error", detail=f"no raw latencies in {side}: benchmark it (edgeprep bench "
                                                       "or [bench] in the target)")]
        problem = _latency_problem(samples)
        if problem:
            return [Verdict(key, name, "error", detail=f"{problem} in {side}: a gate never passes a non-finite or "
                                                       "impossible measurement; benchmark it again")]
        count = sum(g.size for g in _groups(samples))
        if count < MIN_SAMPLES:
            return [Verdict(key, name, "error", detail=f"{count} latency samples in {side}; at least "
                                                       f"{MIN_SAMPLES} are needed to judge a regression")]
    point, lo, hi = median_ratio(current, baseline, confidence, resamples)
    if not all(map(math.isfinite, (point, lo, hi))):     # cannot happen with positive finite samples: fail closed
        return [Verdict(key, name, "error", detail=f"the latency ratio is not finite (x{point} [{lo}, {hi}])")]
    limit = 1.0 + t.max_latency_regression_pct / 100.0
    status = Goal("latency_ratio_lower_bound", "max", limit).status(lo)   # significant: the whole interval above
    med_c, med_b = (float(np.median(np.concatenate(_groups(x)))) for x in (current, baseline))
    processes = f"{len(_groups(current))} vs {len(_groups(baseline))} processes"
    detail = (f"median {med_c:.4g} ms vs {med_b:.4g} ms: x{point:.3f} [{lo:.3f}, {hi:.3f}] at {confidence:.0%} "
              f"({processes}); fails only if the whole interval is above x{limit:.3f}")
    return [Verdict(key, name, status, round(100.0 * (point - 1.0), 3), None, t.max_latency_regression_pct,
                    detail, (round(lo, 5), round(hi, 5)))]


def check_latency_paired(key: str, comparison, t: Thresholds) -> list[Verdict]:
    """The latency verdict of a side-by-side comparison (``edgeprep.stages.compare``, ``gate --rebench``): a
    regression fails, a ratio whose interval lies below the limit passes, and one still undecided when the rounds
    ran out is an error, never a pass. ``comparison`` is a ``Comparison`` or the reason none could be made."""
    if t.max_latency_regression_pct is None:
        return []
    name = "max_latency_regression_pct"
    if isinstance(comparison, str):
        return [Verdict(key, name, "error", detail=f"side-by-side benchmark failed: {comparison}")]
    r, limit = comparison.ratio, comparison.limit
    status = {"regression": "fail", "within": "pass", "undecided": "error"}[comparison.decision]
    detail = (f"side by side, {r.rounds} rounds in {comparison.seconds:.0f} s: x{r.ratio:.3f} "
              f"[{r.lower:.3f}, {r.upper:.3f}] at {r.confidence:.0%} per look against x{limit:.3f}: "
              + {"regression": "the whole interval is above the limit",
                 "within": "the whole interval is below the limit",
                 "undecided": "the interval still straddles the limit when the rounds ran out (give --rebench-seconds "
                              "more time, or the candidate really is at the limit)"}[comparison.decision])
    return [Verdict(key, name, status, round(100.0 * (r.ratio - 1.0), 3), None, t.max_latency_regression_pct,
                    detail, (round(r.lower, 5), round(r.upper, 5)))]


def check_instructions(key: str, bench: dict | None, base_bench: dict | None, t: Thresholds) -> list[Verdict]:
    if t.max_instructions_regression_pct is None:
        return []
    name = "max_instructions_regression_pct"
    cur = ((bench or {}).get("instructions") or {}).get("instructions_per_inference")
    base = ((base_bench or {}).get("instructions") or {}).get("instructions_per_inference")
    if not cur or not base:
        side = "this report" if not cur else "the baseline"
        return [Verdict(key, name, "error", detail=f"no instruction count in {side}: bench with --instructions "
                                                   "(or [bench] instructions = true)")]
    bad = (_unjudgeable(key, name, "the instruction count", cur, "this report")
           or _unjudgeable(key, name, "the instruction count", base, "the baseline"))
    if bad:
        return [bad]
    if base < 0 or cur < 0:
        return [Verdict(key, name, "error", detail=f"a negative instruction count ({cur:,} vs {base:,})")]
    growth = 100.0 * (cur - base) / base
    return [Verdict(key, name, Goal.named(name, t.max_instructions_regression_pct).status(growth),
                    round(growth, 3), base, t.max_instructions_regression_pct,
                    f"{cur:,} vs {base:,} instructions per inference ({growth:+.1f} %)")]


def _same_setup(key: str, bench: dict | None, base: dict | None) -> list[Verdict]:
    """Latencies measured with other threads or another runner are not comparable: an error, not a verdict."""
    if not bench or not base or bench.get("status") != "ok" or base.get("status") != "ok":
        return []
    for field in ("runner", "threads"):
        if bench.get(field) != base.get(field):
            return [Verdict(key, "comparable", "error", detail=f"{field} differ: {bench.get(field)!r} here, "
                                                               f"{base.get(field)!r} in the baseline")]
    return []


def check_recorded(key: str, entry: dict) -> list[Verdict]:
    """The report's own checks the gate does not recompute (export integrity, finite outputs, QAT's all_int8, a
    failed benchmark): one failed there fails the gate too. Threshold checks are judged again above, with the
    gate's thresholds."""
    out = []
    for c in (entry.get("verification") or {}).get("checks") or []:
        if c["name"] not in THRESHOLD_CHECKS and not c.get("passed"):
            out.append(Verdict(key, c["name"], "fail", c.get("value"), None, c.get("threshold"),
                               f"failed in the report: {c.get('detail') or c['name']}"))
    return out


def _key(entry: dict) -> str:
    return Path(entry["path"]).name


def evaluate(report: dict, baseline: dict | None, gates: Gates, latencies: dict[str, list],
             base_latencies: dict[str, list], compared: dict | None = None) -> dict:
    """Every verdict for ``report`` against ``baseline`` under ``gates``; the gate result as a JSON-ready dict.
    ``compared`` (``gate --rebench``) holds, per artifact key, a side-by-side ``Comparison`` (or why none could be
    made) that judges latency instead of the stored latencies."""
    verdicts: list[Verdict] = []
    base_by_key = {_key(a): a for a in (baseline or {}).get("artifacts", [])}
    seen = set()
    for a in report["artifacts"]:
        key = _key(a)
        if key in seen:
            verdicts.append(Verdict(key, "artifacts", "error", detail="two artifacts share this file name"))
            continue
        seen.add(key)
        t = gates.for_precision(a["precision"])
        b = base_by_key.get(key)
        if baseline is not None and b is None and _needs_baseline(t):
            verdicts.append(Verdict(key, "baseline", "error", detail="not in the baseline: update the baseline "
                                                                    "(--update-baseline) if it is new"))
        bad = [f"{what} in this report" for what in non_finite(a, latencies.get(key))]
        bad += [f"{what} in the baseline" for what in non_finite(b, base_latencies.get(key))] if b else []
        if bad:     # NaN or infinite: nothing about this artifact can be judged, not even the checks that look fine
            verdicts.append(Verdict(key, "measurements", "error", detail=f"not finite: {'; '.join(bad[:4])}"
                                    f"{f' (and {len(bad) - 4} more)' if len(bad) > 4 else ''}: a gate never passes "
                                    "a non-finite measurement; measure it again (edgeprep verify / bench)"))
            continue
        bench, base_bench = a.get("bench"), (b or {}).get("bench")
        verdicts += check_size(key, a["size_bytes"], b["size_bytes"] if b else None, t)
        verdicts += check_accuracy(key, a.get("metrics"), (b or {}).get("metrics"), t)
        verdicts += _same_setup(key, bench, base_bench)
        if compared is not None and key in compared:
            verdicts += check_latency_paired(key, compared[key], t)
        else:
            verdicts += check_latency(key, latencies.get(key), base_latencies.get(key), t, gates.latency_confidence,
                                      gates.bootstrap_resamples)
        verdicts += check_instructions(key, bench, base_bench, t)
        verdicts += check_recorded(key, a)
    for key in base_by_key:
        if key not in seen:
            verdicts.append(Verdict(key, "artifacts", "error", detail="in the baseline but missing from the report"))
    if not verdicts:
        verdicts.append(Verdict("*", "gates", "error", detail="the target's [gates] set no threshold to check"))
    statuses = {v.status for v in verdicts}
    status = "error" if "error" in statuses else ("failed" if "fail" in statuses else "passed")
    return {"status": status, "verdicts": [v.to_dict() for v in verdicts],
            "counts": {s: sum(v.status == s for v in verdicts) for s in ("pass", "fail", "error")}}


def _needs_baseline(t: Thresholds) -> bool:
    return any(getattr(t, f) is not None for f in ("max_size_growth_pct", "max_accuracy_drop_vs_baseline",
                                                    "max_latency_regression_pct", "max_instructions_regression_pct"))


def to_markdown(result: dict) -> str:
    """The verdicts as a Markdown section for a pull-request comment (failures and errors first)."""
    icon = {"pass": "✅", "fail": "❌", "error": "⚠️"}
    order = {"fail": 0, "error": 1, "pass": 2}
    lines = [f"## Gate vs {result.get('baseline', 'baseline')}: **{result['status'].upper()}**", "",
             f"{result['counts']['pass']} passed, {result['counts']['fail']} regressed, "
             f"{result['counts']['error']} could not be judged.", "",
             "| | artifact | check | detail |", "|---|---|---|---|"]
    for v in sorted(result["verdicts"], key=lambda v: order[v["status"]]):
        lines.append(f"| {icon[v['status']]} | {v['artifact']} | {v['check']} | {v['detail']} |")
    return "\n".join(lines) + "\n"


def require_finite(report: dict, latencies: dict[str, list], where: str) -> None:
    """Refuse a report with a non-finite measured value (``DataError``, naming the artifact and the value) where
    no check will judge it, e.g. before it becomes the first baseline: a NaN baseline would poison every gate."""
    from edgeprep.errors import DataError

    for a in report["artifacts"]:
        bad = non_finite(a, latencies.get(_key(a)))
        if bad:
            raise DataError(f"{where}: {_key(a)}: not finite: {'; '.join(bad[:4])}",
                            "measure it again (edgeprep verify / bench); a NaN or infinite value is never a baseline")
