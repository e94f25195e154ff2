"""De-biased metrics with LOGGED propensities and the exploration slice, against a world whose
true value of a ranking is known.

The world: 30,000 customers, 40 offers, a true acceptance probability p(u, i) per customer and
offer. A biased logging policy shows each offer with a KNOWN probability q(u, i) in [0.04, 0.95]
that leans on an offer "popularity" unrelated to p and, within an offer, AWAY from the customers
who would accept it (so one propensity per offer, the estimate, cannot undo it). 30% of the
customers are an exploration slice instead: each of their offers shown with q0 = 8 / 40 (uniform).
Every accept is held out. The true value of a ranking R is its expected precision@10 if every
offer were shown, V(R) = mean_u sum_(i in R_u) p(u, i) / 10.

What is checked, for the oracle ranking (by p) against the incumbent's (by its own targeting):
- the self-normalised estimator's scale depends on the held-out set, not on the ranking, so the
  quantity it recovers is the RATIO V(oracle) / V(incumbent) (what selection compares);
- the exploration slice's precision is unbiased in absolute terms: E = q0 * V_slice(R).
Tolerance: 4 standard errors, the SE measured from 20 disjoint batches of customers (the spread of
the estimate itself, so the test neither passes by luck nor flakes: a 4-sigma miss has probability
below 1e-4), and the test first asserts that 4 SE is small against the effect it must tell apart.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from training.evaluate import (
    K,
    Metrics,
    clipped_inverse,
    inverse_propensity,
    score_metrics,
    with_exploration,
)

N, M, Q0, MAX_WEIGHT, BATCHES = 30_000, 40, 8 / 40, 25.0, 20
Top = npt.NDArray[np.int64]


def _sigmoid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    result: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-x))
    return result


@pytest.fixture(scope="module")
def world() -> dict[str, npt.NDArray[np.float64]]:
    rng = np.random.default_rng(5)
    logit = -2.5 + rng.normal(size=(N, 4)) @ rng.normal(size=(M, 4)).T / 2 \
        + rng.normal(0, 0.5, M)
    p = _sigmoid(logit)
    targeting = _sigmoid(-2.0 + 1.2 * rng.normal(0, 1, M) - (logit - logit.mean()))
    q = np.clip(_sigmoid(np.log(targeting / (1 - targeting)) + 0.5 * rng.normal(size=(N, M))),
                0.04, 0.95)
    explore = rng.random(N) < 0.3
    q[explore] = Q0
    shown = rng.random((N, M)) < q
    accepted = shown & (rng.random((N, M)) < p)
    return {"p": p, "q": q, "shown": shown.astype(np.float64), "explore": explore.astype(float),
            "accepted": accepted.astype(np.float64), "targeting": targeting}


def _tops(world: dict[str, npt.NDArray[np.float64]]) -> tuple[Top, Top]:
    oracle = np.argsort(-world["p"], axis=1, kind="stable")[:, :K]
    incumbent = np.argsort(-world["targeting"], axis=1, kind="stable")[:, :K]
    return oracle.astype(np.int64), incumbent.astype(np.int64)


def _true(world: dict[str, npt.NDArray[np.float64]], top: Top) -> float:
    return float(np.take_along_axis(world["p"], top, axis=1).sum(axis=1).mean() / K)


def _measure(world: dict[str, npt.NDArray[np.float64]], top: Top, customers: npt.NDArray[np.int64]
             ) -> dict[str, float]:
    """Every estimate of one ranking over the given customers."""
    accepted = world["accepted"][customers] > 0
    rows, cols = np.nonzero(accepted)
    rows, cols = rows.astype(np.int64), cols.astype(np.int64)
    q = world["q"][customers]
    shown = world["shown"][customers]
    explore = world["explore"][customers] > 0
    logged = score_metrics(top[customers], rows, cols, M,
                           pair_weights=clipped_inverse(q[rows, cols], MAX_WEIGHT))
    estimated = score_metrics(top[customers], rows, cols, M,
                              inverse_propensity(shown.sum(axis=0), len(customers), MAX_WEIGHT))
    sliced: Metrics = with_exploration(logged, top[customers], rows, cols, explore[rows],
                                       np.flatnonzero(explore).astype(np.int64), M)
    assert logged.debiased_precision_at_10 is not None
    assert estimated.debiased_precision_at_10 is not None
    assert sliced.exploration_precision_at_10 is not None
    return {"naive": logged.precision_at_10, "logged": logged.debiased_precision_at_10,
            "estimated": estimated.debiased_precision_at_10,
            "exploration": sliced.exploration_precision_at_10}


def _batched(world: dict[str, npt.NDArray[np.float64]],
             statistic: Callable[[npt.NDArray[np.int64]], float]) -> tuple[float, float]:
    """The statistic over all customers, and its standard error from disjoint batches."""
    everyone = np.arange(N, dtype=np.int64)
    parts = [statistic(b) for b in np.array_split(everyone, BATCHES)]
    return statistic(everyone), float(np.std(parts, ddof=1) / np.sqrt(BATCHES))


def test_logged_propensities_recover_the_true_ratio_of_two_rankings(
        world: dict[str, npt.NDArray[np.float64]]) -> None:
    oracle, incumbent = _tops(world)
    truth = _true(world, oracle) / _true(world, incumbent)
    assert truth > 4  # the oracle is far better; the incumbent's targeting avoids acceptors

    def ratio(kind: str) -> Callable[[npt.NDArray[np.int64]], float]:
        return lambda c: _measure(world, oracle, c)[kind] / _measure(world, incumbent, c)[kind]

    logged, logged_se = _batched(world, ratio("logged"))
    naive = ratio("naive")(np.arange(N, dtype=np.int64))
    estimated = ratio("estimated")(np.arange(N, dtype=np.int64))
    tolerance = 4 * logged_se
    assert tolerance < 0.15 * truth  # the test can tell a biased estimate from the truth
    assert abs(logged - truth) < tolerance
    # The naive metric rewards replaying the old targeting; one estimated propensity per offer
    # undoes the offer part of the bias, not the targeting of customers within an offer.
    assert abs(naive - truth) > 3 * abs(logged - truth)
    assert abs(naive - truth) > tolerance
    assert abs(estimated - truth) > abs(logged - truth)


def test_the_exploration_slice_is_an_unbiased_estimate_of_the_true_precision(
        world: dict[str, npt.NDArray[np.float64]]) -> None:
    explore = world["explore"] > 0
    for top in _tops(world):
        truth = float(np.take_along_axis(world["p"], top, axis=1)[explore].sum(axis=1).mean()
                      / K)
        estimate, se = _batched(world, lambda c, t=top: _measure(world, t, c)["exploration"]
                                / Q0)
        assert 4 * se < 0.2 * truth
        assert abs(estimate - truth) < 4 * se, (estimate, truth, se)


def test_the_exploration_slice_counts_only_explored_held_out_pairs() -> None:
    """Customer 0 is in the slice with an explored accept (offer 1) and a logged one (offer 0):
    only offer 1 is relevant there; customer 1 is not in the slice."""
    top = np.array([[0, 1, 2], [1, 0, 2]], dtype=np.int64)
    rows, cols = np.array([0, 0, 1], dtype=np.int64), np.array([0, 1, 1], dtype=np.int64)
    explored = np.array([False, True, True])
    base = score_metrics(top, rows, cols, 3)
    sliced = with_exploration(base, top, rows, cols, explored, np.array([0], np.int64), 3)
    assert sliced.exploration_customers == 1
    assert sliced.exploration_precision_at_10 == pytest.approx(0.1)
    assert sliced.exploration_ndcg_at_10 == pytest.approx(1 / np.log2(3))
    assert sliced.precision_at_10 == base.precision_at_10  # the naive side is unchanged
    assert with_exploration(base, top, rows, cols, explored, np.array([], np.int64), 3) == base
