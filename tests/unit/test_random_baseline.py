"""The holdout's random baseline: uniform draws among the eligible offers, propensity k / n."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

from recsvc.decisioning.baseline import RANDOM_REASON, random_eligible
from recsvc.decisioning.decide import Decision


def _every(n: int, pending: bool = False) -> Decision:
    return Decision(list(range(10, 10 + n)), [0.1 * i for i in range(n)], [float(i) for i in
                    range(n)], [("personal",)] * n, [], "d-1", pending, 99, [1.0] * n)


def test_each_eligible_offer_is_drawn_uniformly_with_propensity_k_over_n() -> None:
    rng = np.random.default_rng(7)
    counts = np.zeros(6, dtype=np.int64)
    for _ in range(6000):
        pick = random_eligible(_every(6), 2, rng)
        assert len(pick.offers) == 2 and len(set(pick.offers)) == 2
        assert pick.propensities == pytest.approx([2 / 6, 2 / 6])
        assert pick.limit == 2 and all(r[-1] == RANDOM_REASON for r in pick.reasons)
        # offer i carries its own p_accept and objective wherever it lands
        assert [10 + round(p * 10) for p in pick.p_accept] == pick.offers
        counts[np.asarray(pick.offers) - 10] += 1
    assert chisquare(counts).pvalue > 0.001


def test_one_offer_answers_log_one_over_eligible_and_empty_stays_empty() -> None:
    assert random_eligible(_every(4), 1).propensities == [0.25]
    assert random_eligible(_every(3), 10).propensities == [1.0, 1.0, 1.0]
    empty = random_eligible(_every(0), 3)
    assert empty.offers == [] and empty.propensities == []


def test_a_pending_decision_keeps_every_candidate_shuffled_for_the_reserve_script() -> None:
    pick = random_eligible(_every(5, pending=True), 2)
    assert sorted(pick.offers) == list(range(10, 15)) and pick.pending and pick.limit == 2
    assert pick.propensities == [pytest.approx(0.4)] * 5
