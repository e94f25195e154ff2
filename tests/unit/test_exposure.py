"""Learning from logged exposure: de-biased metrics, the exposure model of shown cells and the
biased world's ground truth, each against a known answer."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from recsvc.core.errors import DataError
from training.config import TrainConfig, load_config
from training.evaluate import inverse_propensity, score_metrics
from training.exposure import ExposureParams, fit_exposure
from training.synth import datagen, world
from training.tune import candidate_params


def test_debiased_metrics_weight_each_held_out_accept_by_its_inverse_propensity() -> None:
    """Customer 0 finds its held-out offer (weight 1) first; customer 1 misses its (weight 3)."""
    top = np.array([[0, 2, -1], [0, 2, -1]])
    rows, cols = np.array([0, 1]), np.array([0, 1])
    naive = score_metrics(top, rows, cols, 3)
    weighted = score_metrics(top, rows, cols, 3, np.array([1.0, 3.0, 1.0]))
    assert (naive.precision_at_10, naive.ndcg_at_10) == pytest.approx((0.05, 0.5))
    assert weighted.precision_at_10 == naive.precision_at_10  # the naive side is unchanged
    # SNIPS: sum w * gain / sum w = (1 * 0.1) / 4 and (1 * 1.0) / 4.
    assert weighted.debiased_precision_at_10 == pytest.approx(0.025)
    assert weighted.debiased_ndcg_at_10 == pytest.approx(0.25)
    ones = score_metrics(top, rows, cols, 3, np.ones(3))
    assert (ones.debiased_precision_at_10, ones.debiased_ndcg_at_10) == \
        pytest.approx((naive.precision_at_10, naive.ndcg_at_10))


def test_inverse_propensity_is_clipped_at_max_weight() -> None:
    weights = inverse_propensity(np.array([100.0, 10.0, 0.0]), 100, max_weight=20.0)
    assert weights.tolist() == [1.0, 10.0, 20.0]


def test_exposure_model_divides_by_impressions_where_popularity_counts_accepts() -> None:
    """Offer 0 was shown to all 1,000 customers and accepted by 300; offer 1 was shown to 50 and
    accepted by 40. Counting accepts prefers offer 0; acceptance given exposure prefers offer 1,
    and an offer never shown to a customer is not held against it."""
    rows = np.r_[np.arange(1000), np.arange(50)].astype(np.int32)
    cols = np.r_[np.zeros(1000), np.ones(50)].astype(np.int32)
    accepted = np.r_[np.arange(1000) < 300, np.arange(50) < 40]
    factors = fit_exposure(rows, cols, accepted, (1000, 2),
                           ExposureParams(factors=2, regularization=5.0, bias_regularization=1.0,
                                          iterations=5), seed=1)
    assert np.bincount(cols[accepted]).tolist() == [300, 40]
    # A customer who saw only offer 0 still ranks offer 1 first (its bias column: the rate).
    scores = factors.items @ factors.users[999]
    assert scores[1] > scores[0]
    assert factors.items[:, -1] == pytest.approx([0.3, 40 / 51], abs=0.03)
    assert factors.users.shape == (1000, 3) and (factors.users[:, -1] == 1.0).all()


def test_exposure_model_learns_two_tastes_from_shown_and_declined_offers() -> None:
    """Half the customers accept offers 0-2 and decline 3-5 when shown, the other half the
    reverse; each customer saw 4 of the 6. The unseen offers rank by the customer's taste."""
    rng = np.random.default_rng(3)
    n = 400
    rows_l, cols_l, acc_l = [], [], []
    for customer in range(n):
        likes = set(range(3)) if customer % 2 == 0 else set(range(3, 6))
        for offer in rng.choice(6, size=4, replace=False):
            rows_l.append(customer)
            cols_l.append(int(offer))
            acc_l.append(int(offer) in likes)
    rows, cols = np.array(rows_l, dtype=np.int32), np.array(cols_l, dtype=np.int32)
    factors = fit_exposure(rows, cols, np.array(acc_l), (n, 6), ExposureParams(), seed=1)
    scores = factors.users @ factors.items.T
    unseen = np.ones((n, 6), dtype=bool)
    unseen[rows, cols] = False
    right = 0
    for customer in range(n):
        for offer in np.flatnonzero(unseen[customer]):
            liked = (offer < 3) == (customer % 2 == 0)
            others = [o for o in range(6) if ((o < 3) == (customer % 2 == 0)) != liked]
            right += all((scores[customer, offer] > scores[customer, o]) == liked for o in others)
    assert right / unseen.sum() > 0.95


def test_validation_chooses_among_implicit_and_exposure_candidates_as_configured() -> None:
    config = TrainConfig()
    models = {p.model for p in candidate_params(config)}
    assert models == {"implicit", "exposure"}
    assert len([p for p in candidate_params(config) if p.model == "exposure"]) == 4  # 2 x 2


def test_default_datagen_output_is_unchanged_for_a_seed() -> None:
    """The biased world is an addition: the default generator writes what it always wrote."""
    tables = datagen.generate(500, 30, 3, 3)
    digest = hashlib.sha256()
    for name in ("customers", "offers", "interactions"):
        digest.update(str(tables[name].to_pydict()).encode())
    assert digest.hexdigest()[:16] == DEFAULT_DIGEST


DEFAULT_DIGEST = "1a397eb013f3633d"  # of main before the biased world was added


def test_biased_world_logs_accepts_at_the_true_rate_of_what_was_shown() -> None:
    tables, truth, summary = world.generate(3000, 60, 3, seed=4, evaluated=500)
    # The truth covers every eligible offer of every evaluated customer, with the true p.
    assert summary["evaluated_customers"] == 500
    assert truth.num_rows == pytest.approx(500 * 60 * 0.6, rel=0.5)
    p_true = truth["p_true"].to_numpy()
    taken = truth["accepted"].to_numpy(zero_copy_only=False)
    assert taken.mean() == pytest.approx(p_true.mean(), abs=0.01)
    # The oracle ranks by true p: its expected precision is the mean p of each best ten.
    assert summary["oracle_expected_precision_at_10"] > 1.5 * p_true.mean()
    events = tables["interactions"]["event"].to_numpy(zero_copy_only=False)
    rate = (events == "accept").sum() / (events == "impression").sum()
    assert rate == pytest.approx(summary["logged_accept_rate"], abs=1e-6)


def test_biased_world_exposure_leans_on_popular_offers_and_differs_by_segment() -> None:
    tables, _, _ = world.generate(3000, 60, 3, seed=4, evaluated=10)
    interactions = tables["interactions"].to_pydict()
    shown = [o for o, e in zip(interactions["offer_id"], interactions["event"], strict=True)
             if e == "impression"]
    counts = np.sort(np.unique(shown, return_counts=True)[1])[::-1]
    assert counts[:6].sum() > 3 * counts[-6:].sum()  # the head is shown far more than the tail
    segment_of = dict(zip(tables["customers"]["customer_id"].to_pylist(),
                          tables["customers"]["segment"].to_pylist(), strict=True))
    impressions: dict[str, int] = {}
    contacted: dict[str, set[str]] = {}
    for customer, event in zip(interactions["customer_id"], interactions["event"], strict=True):
        if event == "impression":
            segment = segment_of[customer]
            impressions[segment] = impressions.get(segment, 0) + 1
            contacted.setdefault(segment, set()).add(customer)
    per_customer = [impressions[s] / len(contacted[s]) for s in impressions]
    assert max(per_customer) > 1.25 * min(per_customer)  # some segments are contacted more


def test_a_bad_exposure_section_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[exposure]\nselect_on = "ndcg"\nmodel = "magic"\n')
    with pytest.raises(DataError) as info:
        load_config(str(path))
    assert "[exposure] select_on" in str(info.value) and "[exposure] model" in str(info.value)
    path.write_text('[exposure]\nselect_on = "naive"\nfactors = [4]\n')
    assert load_config(str(path)).exposure.factors == (4,)


def test_fold_in_solves_each_segment_with_the_model_it_was_trained_with() -> None:
    """Exposure-model segments fold with their own solve (when their records hold every shown
    cell), implicit's ALS segments with the ALS one; BPR has no exact one-customer solve, so only
    its exposure-model segments fold."""
    from recsvc.core.meta import EVERY_SHOWN_CELL
    from recsvc.feedback.foldin import ExposureSolver, FoldModel, SegmentSolver

    items = np.ones((2, 3), dtype=np.float32)
    offers = np.arange(2, dtype=np.uint32)
    params = {"factors": 2, "regularization": 1.0, "alpha": 1.0, "iterations": 1,
              "negative_impressions": True}
    segments = [{"name": "a", "params": {**params, "model": "exposure", EVERY_SHOWN_CELL: True}},
                {"name": "b", "params": {**params, "model": "implicit"}},
                # published before records held every shown cell: not solved on part of them
                {"name": "c", "params": {**params, "model": "exposure"}}]
    for algorithm, implicit_solver in (("als", SegmentSolver), ("bpr", type(None))):
        meta = {"parameters": {"algorithm": algorithm, "config": {}}, "segments": segments}
        fold = FoldModel.from_version("v", meta, ["x", "y"], [(offers, items)] * 3)
        assert isinstance(fold.solvers[0], ExposureSolver)
        assert isinstance(fold.solvers[1], implicit_solver)
        assert fold.solvers[2] is None
