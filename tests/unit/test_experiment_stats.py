"""The scorecard's statistics on synthetic data whose answer is known: the estimates land on the
truth and the 95% intervals cover it at about their nominal rate."""

from __future__ import annotations

import numpy as np
import pytest

from recsvc.experiments import stats
from recsvc.experiments.arms import CHALLENGER, CONTROL, TREATMENT, assign, holdout_split

RUNS = 400  # simulated experiments per coverage check: 95% +- ~2.2% (one standard error)


def _coverage(hits: list[bool]) -> float:
    return sum(hits) / len(hits)


def test_relative_lift_of_rates_finds_a_known_lift_and_covers_it() -> None:
    rng = np.random.default_rng(1)
    control_rate, treated_rate = 0.10, 0.13  # true relative lift 0.3, absolute 0.03
    n = 4000
    rel, ab = [], []
    for _ in range(RUNS):
        t = int(rng.binomial(n, treated_rate))
        c = int(rng.binomial(n, control_rate))
        rel.append(stats.rate_relative_lift((t, n), (c, n)))
        ab.append(stats.rate_uplift((t, n), (c, n)))
    assert np.mean([e.value for e in rel]) == pytest.approx(0.3, abs=0.02)
    assert np.mean([e.value for e in ab]) == pytest.approx(0.03, abs=0.002)
    assert 0.92 <= _coverage([e.covers(0.3) for e in rel]) <= 0.98
    assert 0.92 <= _coverage([e.covers(0.03) for e in ab]) <= 0.98


def test_wilson_interval_covers_a_small_rate() -> None:
    rng = np.random.default_rng(2)
    hits = [stats.rate(int(rng.binomial(300, 0.02)), 300).covers(0.02) for _ in range(RUNS)]
    assert 0.92 <= _coverage(hits) <= 0.99


def test_mean_uplift_of_value_retained_covers_the_known_difference() -> None:
    rng = np.random.default_rng(3)
    hits, values = [], []
    for _ in range(RUNS):
        # value retained net of cost: mostly zero, sometimes a retained customer's value
        t = rng.binomial(1, 0.2, 1500) * rng.gamma(2.0, 50.0, 1500) - 4.0
        c = rng.binomial(1, 0.15, 1500) * rng.gamma(2.0, 50.0, 1500)
        estimate = stats.mean_uplift(t, c)
        values.append(estimate.value)
        hits.append(estimate.covers(0.2 * 100 - 4.0 - 0.15 * 100))  # = 1.0
    assert np.mean(values) == pytest.approx(1.0, abs=0.5)
    assert 0.92 <= _coverage(hits) <= 0.98


def test_nps_of_a_known_mix_and_its_interval() -> None:
    rng = np.random.default_rng(4)
    # 50% promoters (9-10), 30% passives (7-8), 20% detractors (0-6): NPS = 30
    def answers(n: int) -> np.ndarray:
        kind = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
        return np.where(kind == 0, rng.integers(9, 11, n),
                        np.where(kind == 1, rng.integers(7, 9, n), rng.integers(0, 7, n)))
    assert stats.nps([10, 9, 8, 7, 6, 0]).value == pytest.approx(0.0)
    runs = [stats.nps(answers(800)) for _ in range(RUNS)]
    assert np.mean([e.value for e in runs]) == pytest.approx(30.0, abs=1.0)
    assert 0.92 <= _coverage([e.covers(30.0) for e in runs]) <= 0.98
    uplift = [stats.nps_uplift(answers(800), answers(800)) for _ in range(RUNS)]
    assert 0.92 <= _coverage([e.covers(0.0) for e in uplift]) <= 0.98


def _logged(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A uniform logging policy over 5 offers with acceptance 0.1..0.5; the candidate shows
    offer 4 with probability 0.8 and offer 3 with 0.2: its true value is 0.48."""
    accept = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    shown = rng.integers(0, 5, n)
    rewards = rng.random(n) < accept[shown]
    candidate = np.array([0.0, 0.0, 0.0, 0.2, 0.8])
    return rewards.astype(float), candidate[shown], np.full(n, 0.2)


def test_ips_and_snips_recover_a_known_policy_value_and_cover_it() -> None:
    rng = np.random.default_rng(5)
    truth = 0.2 * 0.4 + 0.8 * 0.5
    ips_runs, snips_runs = [], []
    for _ in range(RUNS):
        rewards, target, logging = _logged(rng, 3000)
        ips_runs.append(stats.ips(rewards, target, logging))
        snips_runs.append(stats.snips(rewards, target, logging))
    assert np.mean([e.value for e in ips_runs]) == pytest.approx(truth, abs=0.01)
    assert np.mean([e.value for e in snips_runs]) == pytest.approx(truth, abs=0.01)
    assert 0.92 <= _coverage([e.covers(truth) for e in ips_runs]) <= 0.98
    assert 0.92 <= _coverage([e.covers(truth) for e in snips_runs]) <= 0.98


def test_clipping_caps_the_weights_and_bad_propensities_are_refused() -> None:
    weights = stats.clipped_weights([1.0, 0.5, 1.0], [0.01, 0.5, 0.0], clip=10.0)
    assert weights.tolist() == [10.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="propensities"):
        stats.clipped_weights([1.5], [0.5], clip=10.0)


def test_arms_are_stable_and_take_their_share() -> None:
    split = holdout_split(control_share=0.1, challenger_share=0.2)
    ids = [f"C{i:07d}" for i in range(20000)]
    arms = [assign("exp-1", i, split) for i in ids]
    assert arms == [assign("exp-1", i, split) for i in ids]  # same on every replica/restart
    share = {a: arms.count(a) / len(ids) for a in (CONTROL, CHALLENGER, TREATMENT)}
    assert share[CONTROL] == pytest.approx(0.1, abs=0.01)
    assert share[CHALLENGER] == pytest.approx(0.2, abs=0.01)
    reshuffled = [assign("exp-2", i, split) for i in ids]
    assert sum(a != b for a, b in zip(arms, reshuffled, strict=True)) > 5000  # a new salt
    with pytest.raises(ValueError, match="sum to"):
        holdout_split(0.7, 0.5)
