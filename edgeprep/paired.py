"""Side-by-side latency comparison: pure functions that judge interleaved benchmark pairs, and when to stop.

A baseline artifact and a candidate are benchmarked in the same session, one fresh process each per round, in
alternating order (A B, B A, A B, ...: a drift of the machine in time falls on both alike). Each round gives one
paired ratio, ``median(candidate) / median(baseline)`` of its two processes; the rounds' log ratios are independent
draws whose mean is the log of the typical ratio. Its interval is Student's t at ``confidence`` (exact for normal
log ratios at any number of rounds, where a bootstrap of a handful of processes is too narrow: it has few distinct
resamples and no small-sample correction).

``decide`` says what the interval allows against the limit ``1 + max_latency_regression_pct / 100``: "regression"
when the whole interval is above it, "within" when the whole interval is below it, else "undecided". The sampler
(``Sampling``, ``next_step``) adds rounds until the answer is known or the budget is spent; a comparison still
undecided then is reported as such, never as a pass. Looking after every round and stopping at the first decision
raises the error rates of a single look. Simulated with log-normal rounds of 10 % spread (``tests/test_paired.py``,
200 trials each), the defaults (8 to 60 rounds, 95 % per look) caught +10 % against a 5 % limit in 195 trials
(1 passed, 4 undecided) after a median of 15 rounds, and passed 194 change-free candidates (no false alarm, 6
undecided); a candidate right on the limit fails in about 1 of 7. On real rounds of one process holding both
artifacts (``make bench ONLY=gate_power``, a heavily loaded machine, log-ratio spread 0.07) +10 % was caught in 60 of
60 replayed trials, x1.00 passed in 60, after a median of 9-10 rounds (about 4 s).
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass

DECISIONS = ("regression", "within", "undecided")


@dataclass(frozen=True)
class Sampling:
    """When to stop adding rounds: not before ``min_rounds``, at most ``max_rounds`` or ``max_seconds``; and how long
    a round times at least (``round_seconds``)."""

    min_rounds: int = 8
    max_rounds: int = 60
    max_seconds: float = 180.0
    confidence: float = 0.95          # per look (the sampler looks after every round)
    # Each round keeps iterating until this much measured time has passed (both artifacts together), beyond the
    # [bench] runs: 100 runs of a 0.05 ms model are 5 ms of timing, and their medians' ratio spread by 0.10-0.12
    # (log) from one fresh process to the next; 2,000 runs (0.1 s) spread by 0.007-0.014 (measured, 2 threads)
    round_seconds: float = 0.25

    def __post_init__(self) -> None:
        if self.min_rounds < 3:
            raise ValueError("min_rounds must be >= 3 (an interval needs a spread)")
        if self.max_rounds < self.min_rounds:
            raise ValueError("max_rounds must be >= min_rounds")
        if self.max_seconds <= 0:
            raise ValueError("max_seconds must be > 0")
        if not 0.5 <= self.confidence < 1:
            raise ValueError("confidence must be in [0.5, 1)")
        if self.round_seconds < 0:
            raise ValueError("round_seconds must be >= 0")


@dataclass(frozen=True)
class PairedRatio:
    """The typical candidate/baseline latency ratio over ``rounds`` paired rounds, with its interval."""

    ratio: float
    lower: float
    upper: float
    rounds: int
    confidence: float

    def to_dict(self) -> dict:
        return {"ratio": round(self.ratio, 5), "interval": [round(self.lower, 5), round(self.upper, 5)],
                "rounds": self.rounds, "confidence": self.confidence}


def _t_cdf(x: float, df: int) -> float:
    """Student's t distribution function at ``x >= 0``: 1/2 plus the density's integral from 0 (Simpson's rule on
    4,000 intervals of the substitution t = x u, exact to about 1e-9 for the quantiles used here)."""
    import numpy as np

    u = np.linspace(0.0, 1.0, 4001)
    t = x * u
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    f = np.exp(log_c - (df + 1) / 2 * np.log1p(t * t / df)) * x
    h = 1.0 / 4000
    return 0.5 + float(h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum()))


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """Student's t quantile for ``p`` in (0.5, 1): bisection on the distribution function (no SciPy on devices
    or in the dependencies)."""
    if df < 1 or not 0.5 < p < 1:
        raise ValueError("t_quantile needs df >= 1 and 0.5 < p < 1")
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def paired_ratio(candidate: list[float], baseline: list[float], confidence: float) -> PairedRatio:
    """The ratio of the per-round medians ``candidate[i] / baseline[i]`` (geometric mean) and its t interval."""
    if len(candidate) != len(baseline) or len(candidate) < 2:
        raise ValueError("paired_ratio needs at least two rounds, one candidate and one baseline median each")
    if not all(v > 0 and math.isfinite(v) for v in (*candidate, *baseline)):
        raise ValueError("latency medians must be finite and positive")
    logs = [math.log(c / b) for c, b in zip(candidate, baseline)]
    n = len(logs)
    mean = statistics.fmean(logs)
    half = t_quantile(0.5 + confidence / 2, n - 1) * statistics.stdev(logs) / math.sqrt(n)
    return PairedRatio(math.exp(mean), math.exp(mean - half), math.exp(mean + half), n, confidence)


def decide(r: PairedRatio, limit: float) -> str:
    """"regression" (the whole interval above ``limit``), "within" (the whole interval below it), "undecided"."""
    if r.lower > limit:
        return "regression"
    if r.upper < limit:
        return "within"
    return "undecided"


def next_step(candidate: list[float], baseline: list[float], limit: float, sampling: Sampling,
              elapsed_seconds: float) -> tuple[str, PairedRatio | None]:
    """("continue", ratio so far) while more rounds are needed and affordable; else (decision, ratio): the
    decision at the first look that makes one, or "undecided" when the rounds or the seconds run out."""
    n = len(candidate)
    ratio = paired_ratio(candidate, baseline, sampling.confidence) if n >= 2 else None
    if n >= sampling.min_rounds:
        verdict = decide(ratio, limit)
        if verdict != "undecided":
            return verdict, ratio
    if n >= sampling.max_rounds or elapsed_seconds >= sampling.max_seconds:
        return "undecided", ratio
    return "continue", ratio


def simulate(draw_round, limit: float, sampling: Sampling, seconds_per_round: float = 0.0) -> tuple[str, PairedRatio]:
    """Run the sampler on rounds from ``draw_round()`` -> (candidate median, baseline median); for replays of
    recorded rounds and for the tests. ``seconds_per_round`` feeds the time budget."""
    cand: list[float] = []
    base: list[float] = []
    while True:
        c, b = draw_round()
        cand.append(c)
        base.append(b)
        step, ratio = next_step(cand, base, limit, sampling, seconds_per_round * len(cand))
        if step != "continue":
            return step, ratio
