"""The side-by-side latency sampler of ``gate --rebench`` (``edgeprep.paired``): pure functions on synthetic rounds
of known ratio."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeprep.paired import Sampling, decide, next_step, paired_ratio, simulate, t_quantile


def test_t_quantiles_match_the_published_table():
    # Student's t table (two-sided 95 % and 99 %): df 1, 4, 9, 30
    for p, df, want in ((0.975, 1, 12.706), (0.975, 4, 2.776), (0.975, 9, 2.262), (0.975, 30, 2.042),
                        (0.995, 4, 4.604), (0.995, 9, 3.250), (0.995, 30, 2.750), (0.95, 9, 1.833)):
        assert t_quantile(p, df) == pytest.approx(want, abs=6e-4), (p, df)
    with pytest.raises(ValueError):
        t_quantile(0.4, 3)


def test_the_paired_ratio_is_the_geometric_mean_with_a_t_interval():
    cand, base = [1.10, 1.32, 1.21], [1.0, 1.2, 1.1]          # every round exactly x1.1: no spread
    r = paired_ratio(cand, base, 0.95)
    assert r.ratio == pytest.approx(1.1) and r.lower == pytest.approx(1.1) and r.upper == pytest.approx(1.1)
    logs = [math.log(2.0), math.log(1.0), math.log(0.5), math.log(1.0)]
    r = paired_ratio([math.exp(v) for v in logs], [1.0] * 4, 0.95)
    half = t_quantile(0.975, 3) * np.std(logs, ddof=1) / 2
    assert r.ratio == pytest.approx(1.0) and r.lower == pytest.approx(math.exp(-half))
    assert r.upper == pytest.approx(math.exp(half)) and r.rounds == 4
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0], 0.95)
    with pytest.raises(ValueError):
        paired_ratio([1.0, float("nan")], [1.0, 1.0], 0.95)


def test_decide_needs_the_whole_interval_on_one_side():
    r = paired_ratio([1.2, 1.25, 1.22, 1.21], [1.0] * 4, 0.95)
    assert decide(r, 1.05) == "regression" and decide(r, 1.5) == "within" and decide(r, 1.22) == "undecided"


def lognormal_rounds(ratio: float, sigma: float, seed: int):
    rng = np.random.default_rng(seed)
    return lambda: (ratio * math.exp(rng.normal(0.0, sigma)), 1.0)


@pytest.mark.parametrize("ratio, want", [(1.3, "regression"), (1.0, "within")])
def test_a_clear_answer_stops_at_the_first_rounds_that_allow_it(ratio, want):
    sampling = Sampling()
    decision, r = simulate(lognormal_rounds(ratio, 0.03, 1), 1.05, sampling)
    assert decision == want and r.rounds == sampling.min_rounds


def test_a_candidate_on_the_limit_runs_out_of_rounds_or_seconds_undecided():
    sampling = Sampling(max_rounds=30)
    decision, r = simulate(lognormal_rounds(1.05, 0.08, 2), 1.05, sampling)
    assert decision == "undecided" and r.rounds == 30 and r.lower < 1.05 < r.upper
    decision, r = simulate(lognormal_rounds(1.05, 0.08, 2), 1.05, sampling, seconds_per_round=20.0)
    assert decision == "undecided" and r.rounds == math.ceil(sampling.max_seconds / 20.0)
    # never judged before min_rounds, even when the first rounds look decisive
    assert next_step([1.3, 1.3, 1.31], [1.0, 1.0, 1.0], 1.05, sampling, 0.0)[0] == "continue"


def test_error_rates_over_many_trials_of_real_sized_noise():
    """10 % spread per round (between-process noise on an idle 2-core machine is 5-10 %): a +10 % regression at a
    5 % limit is caught in most trials and a change-free candidate is almost never failed."""
    sampling = Sampling()
    outcomes = {ratio: [simulate(lognormal_rounds(ratio, 0.10, seed), 1.05, sampling)[0] for seed in range(200)]
                for ratio in (1.0, 1.10)}
    assert outcomes[1.0].count("regression") <= 2                # false alarms <= 1 %
    assert outcomes[1.0].count("within") >= 185
    assert outcomes[1.10].count("regression") >= 190             # >= 95 % caught
    assert outcomes[1.10].count("within") <= 2                   # a regression passed: <= 1 %


def test_sampling_settings_are_validated():
    for bad in ({"min_rounds": 2}, {"min_rounds": 10, "max_rounds": 5}, {"max_seconds": 0}, {"confidence": 1.0},
                {"round_seconds": -0.1}):
        with pytest.raises(ValueError):
            Sampling(**bad)
