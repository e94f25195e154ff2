"""What is published scores exactly as implicit's own ``recommend`` (bias columns included)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from training.fit import FitError, Params, fit

pytestmark = pytest.mark.integration


def matrix() -> csr_matrix:
    rng = np.random.default_rng(0)
    users, items = 400, 60
    dense = (rng.random((users, items)) < 0.08) * rng.integers(1, 5, (users, items))
    return csr_matrix(dense.astype(np.float32))


@pytest.mark.parametrize("algorithm", ["als", "bpr"])
def test_numpy_scores_of_published_factors_equal_model_recommend(algorithm: str) -> None:
    user_items = matrix()
    params = Params(factors=8, regularization=0.05, alpha=2.0,
                    iterations=15 if algorithm == "als" else 50, negative_impressions=False)
    factors, model = fit(user_items, algorithm, params, seed=1, learning_rate=0.05,
                         segment="s")
    extra = 1 if algorithm == "bpr" else 0  # BPR's item-bias column is published too
    assert factors.items.shape[1] == 8 + extra
    for user in range(user_items.shape[0]):
        ids, scores = model.recommend(user, user_items[user], N=10,
                                      filter_already_liked_items=True)
        mine = factors.items @ factors.users[user]
        mine[user_items[user].indices] = -np.inf
        top = np.argsort(-mine, kind="stable")[:10]
        np.testing.assert_allclose(np.sort(mine[top])[::-1], scores, rtol=1e-4, atol=1e-5)
        # Where the order differs, it is a float-level tie: our score of implicit's pick
        # equals the score implicit gave it.
        np.testing.assert_allclose(mine[ids], scores, rtol=1e-4, atol=1e-5)


def test_non_finite_factors_fail_the_segment_loudly() -> None:
    huge = matrix() * np.float32(3e38)
    with pytest.raises(FitError, match="segment 'loud'"):
        fit(huge, "als", Params(4, 0.01, 1e30, 3, False), 1, 0.05, "loud")


def test_fits_are_deterministic_for_a_seed() -> None:
    params = Params(8, 0.05, 2.0, 10, False)
    first, _ = fit(matrix(), "als", params, 3, 0.05, "s")
    second, _ = fit(matrix(), "als", params, 3, 0.05, "s")
    np.testing.assert_array_equal(first.users, second.users)
    np.testing.assert_array_equal(first.items, second.items)
