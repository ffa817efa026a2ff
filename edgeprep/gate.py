"""The regression gate: pure functions from (report, baseline, gates) to verdicts.

Each check returns ``Verdict`` values with status ``pass``, ``fail`` or ``error``. It fails closed: a threshold
that is set but whose metric is missing on either side (an artifact not benchmarked, a baseline without that
artifact, measurements taken with different threads) is an ``error``, never a pass.

Latency is judged on the ratio of median latencies (report / baseline) with a percentile-bootstrap confidence
interval. The bootstrap is hierarchical: a benchmark runs in several fresh processes, and processes are resampled
before iterations, because on a shared machine the spread between processes (placement, frequency, neighbours)
is far larger than within one. A latency regression fails only when it is above the
threshold *and* significant: the lower end of the interval at ``latency_confidence`` is above
``1 + max_latency_regression_pct / 100``. So run-to-run noise, which widens the interval, cannot fail a build, and
a clearly slower model, whose whole interval sits above the threshold, always does.
"""

from __future__ import annotations

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


def check_size(key: str, size: int, base_size: int | None, t: Thresholds) -> list[Verdict]:
    out = []
    if t.max_size_bytes is not None:
        out.append(Verdict(key, "max_size_bytes", "pass" if size <= t.max_size_bytes else "fail", size, base_size,
                           t.max_size_bytes, f"{size:,} bytes (limit {t.max_size_bytes:,})"))
    if t.max_size_growth_pct is not None:
        if base_size is None:
            out.append(Verdict(key, "max_size_growth_pct", "error", detail="no size in the baseline"))
        else:
            growth = 100.0 * (size - base_size) / base_size
            out.append(Verdict(key, "max_size_growth_pct", "pass" if growth <= t.max_size_growth_pct + 1e-9
                               else "fail", round(growth, 3), base_size, t.max_size_growth_pct,
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
                   Verdict(key, "max_accuracy_drop", "pass" if drop <= t.max_accuracy_drop + 1e-9 else "fail",
                           drop, None, t.max_accuracy_drop, f"{drop:+.2f} points below the float model"))
    if t.min_agreement is not None:
        v = m.get("agreement")
        out.append(missing("min_agreement", "top-1 agreement") if v is None else
                   Verdict(key, "min_agreement", "pass" if v >= t.min_agreement else "fail", v, None,
                           t.min_agreement, f"agreement {v:.4f}"))
    if t.min_sqnr_db is not None:
        v = m.get("sqnr_db")
        out.append(missing("min_sqnr_db", "SQNR") if v is None else
                   Verdict(key, "min_sqnr_db", "pass" if v >= t.min_sqnr_db else "fail", v, None, t.min_sqnr_db,
                           f"SQNR {v:.1f} dB"))
    if t.max_accuracy_drop_vs_baseline is not None:
        acc, base = m.get("accuracy"), b.get("accuracy")
        if acc is None or base is None:
            out.append(missing("max_accuracy_drop_vs_baseline",
                               "accuracy " + ("of the report" if acc is None else "in the baseline")))
        else:
            drop = round(100.0 * (base - acc), 4)
            out.append(Verdict(key, "max_accuracy_drop_vs_baseline",
                               "pass" if drop <= t.max_accuracy_drop_vs_baseline + 1e-9 else "fail", acc, base,
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
        count = sum(g.size for g in _groups(samples))
        if count < MIN_SAMPLES:
            return [Verdict(key, name, "error", detail=f"{count} latency samples in {side}; at least "
                                                       f"{MIN_SAMPLES} are needed to judge a regression")]
    point, lo, hi = median_ratio(current, baseline, confidence, resamples)
    limit = 1.0 + t.max_latency_regression_pct / 100.0
    status = "fail" if lo > limit else "pass"
    med_c, med_b = (float(np.median(np.concatenate(_groups(x)))) for x in (current, baseline))
    processes = f"{len(_groups(current))} vs {len(_groups(baseline))} processes"
    detail = (f"median {med_c:.4g} ms vs {med_b:.4g} ms: x{point:.3f} [{lo:.3f}, {hi:.3f}] at {confidence:.0%} "
              f"({processes}); fails only if the whole interval is above x{limit:.3f}")
    return [Verdict(key, name, status, round(100.0 * (point - 1.0), 3), None, t.max_latency_regression_pct,
                    detail, (round(lo, 5), round(hi, 5)))]


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
    growth = 100.0 * (cur - base) / base
    return [Verdict(key, name, "pass" if growth <= t.max_instructions_regression_pct else "fail",
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


def _key(entry: dict) -> str:
    return Path(entry["path"]).name


def evaluate(report: dict, baseline: dict | None, gates: Gates, latencies: dict[str, list],
             base_latencies: dict[str, list]) -> dict:
    """Every verdict for ``report`` against ``baseline`` under ``gates``; the gate result as a JSON-ready dict."""
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
        bench, base_bench = a.get("bench"), (b or {}).get("bench")
        verdicts += check_size(key, a["size_bytes"], b["size_bytes"] if b else None, t)
        verdicts += check_accuracy(key, a.get("metrics"), (b or {}).get("metrics"), t)
        verdicts += _same_setup(key, bench, base_bench)
        verdicts += check_latency(key, latencies.get(key), base_latencies.get(key), t, gates.latency_confidence,
                                  gates.bootstrap_resamples)
        verdicts += check_instructions(key, bench, base_bench, t)
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
