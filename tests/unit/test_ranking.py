"""Pure ranking: business rules, top-k and strategies, with no services."""

from __future__ import annotations

import numpy as np
import pytest

from recsvc.core.model import Catalogue, SegmentModel, standardize
from recsvc.core.ranking import Rules, base_eligibility, rank, rank_many, segment_scores

NOW = 1_800_000_000.0


def catalogue(n: int = 6) -> Catalogue:
    offers = [{"offer_id": f"o{i}", "title": f"Offer {i}"} for i in range(n)]
    offers[1]["channels"] = ["email"]
    offers[2]["valid_to"] = NOW - 1  # expired
    offers[3]["valid_from"] = NOW + 100  # not yet valid
    return Catalogue.from_json(offers)


def segment(strategy: str = "personalized", weight: float = 1.0) -> SegmentModel:
    factors = np.eye(6, 2, dtype=np.float32) + np.float32(0.1) * np.arange(6, dtype=np.float32
                                                                            )[:, None]
    return SegmentModel.build("s", strategy, weight, np.arange(6, dtype=np.uint32),
                              np.array([6, 5, 4, 3, 2, 1], dtype=np.float32), factors, 6)


def test_personal_scores_are_the_plain_dot_product_ranked_best_first() -> None:
    seg = segment()
    vector = np.array([0.0, 1.0], dtype=np.float32)
    result = rank(seg, catalogue(), Rules(limit=3, now=NOW), vector)
    expected = seg.factors @ vector  # type: ignore[operator]
    expected[[2, 3]] = -np.inf  # not valid now
    assert result.offers.tolist() == list(np.argsort(-expected, kind="stable")[:3])
    np.testing.assert_allclose(result.scores, np.sort(expected)[::-1][:3], rtol=1e-6)


def test_rules_remove_invalid_now_wrong_channel_excluded_and_accepted_offers() -> None:
    rules = Rules(limit=10, now=NOW, channel="app", excluded=np.array([4]))
    result = rank(segment("popular"), catalogue(), rules, accepted=np.array([0], np.uint32))
    assert result.offers.tolist() == [5]  # 0 accepted, 1 email only, 2 expired, 3 future, 4 excl.


def test_an_unknown_channel_gets_only_offers_open_to_all_channels() -> None:
    result = rank(segment("popular"), catalogue(), Rules(limit=10, now=NOW, channel="fax"))
    assert 1 not in result.offers.tolist() and 0 in result.offers.tolist()


def test_ties_break_by_catalogue_order_and_limit_caps_the_list() -> None:
    seg = SegmentModel.build("s", "popular", 0.0, np.arange(4, dtype=np.uint32),
                             np.ones(4, dtype=np.float32), None, 4)
    cat = Catalogue.from_json([{"offer_id": f"o{i}"} for i in range(4)])
    assert rank(seg, cat, Rules(limit=2, now=NOW)).offers.tolist() == [0, 1]


def test_blend_mixes_standardized_personal_and_popularity_scores() -> None:
    seg = segment("blended", 0.5)
    vector = np.array([1.0, 0.0], dtype=np.float32)
    result = rank(seg, catalogue(), Rules(limit=6, now=NOW), vector)
    personal = standardize((seg.factors @ vector)[None, :])[0]  # type: ignore[operator]
    expected = 0.5 * personal + 0.5 * seg.popularity_z
    assert result.offers[0] == int(np.argmax(np.where([1, 1, 0, 0, 1, 1], expected, -9)))


def test_folded_blend_equals_the_blend_formula() -> None:
    rng = np.random.default_rng(3)
    factors = rng.normal(size=(40, 8)).astype(np.float32)
    popularity = rng.random(40).astype(np.float32)
    seg = SegmentModel.build("s", "blended", 0.3, np.arange(40, dtype=np.uint32), popularity,
                             factors, 40)
    vectors = rng.normal(size=(5, 8)).astype(np.float32)
    expected = 0.3 * standardize(vectors @ factors.T) + 0.7 * standardize(popularity)
    np.testing.assert_allclose(segment_scores(seg, vectors), expected, rtol=1e-4, atol=1e-4)
    zero = segment_scores(seg, np.zeros((1, 8), dtype=np.float32))  # no spread: popularity
    np.testing.assert_allclose(zero[0], 0.7 * standardize(popularity), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("strategy", ["personalized", "blended"])
def test_batch_ranking_equals_one_by_one_ranking(strategy: str) -> None:
    # Blended: one customer goes through _blend's scalar path, several through its row path.
    seg, cat = segment(strategy, 0.5), catalogue()
    vectors = np.random.default_rng(1).normal(size=(5, 2)).astype(np.float32)
    accepted = [np.array([i], dtype=np.uint32) for i in range(5)]
    rules = Rules(limit=4, now=NOW)
    many = rank_many(seg, cat, rules, vectors, accepted)
    for vector, taken, result in zip(vectors, accepted, many, strict=True):
        assert result.offers.tolist() == rank(seg, cat, rules, vector, taken).offers.tolist()
        np.testing.assert_allclose(result.scores, rank(seg, cat, rules, vector, taken).scores,
                                   rtol=1e-6, atol=1e-6)


def test_nothing_eligible_gives_an_empty_ranking() -> None:
    result = rank(segment("popular"), catalogue(), Rules(limit=5, now=NOW, channel="fax",
                                                         excluded=np.arange(6)))
    assert len(result.offers) == 0


def test_memoized_eligibility_follows_validity_bounds_and_is_never_changed_by_rules() -> None:
    cat, seg = catalogue(), segment("popular")
    # Around every bound (offer 2 ends at NOW - 1, offer 3 starts at NOW + 100), in an order that
    # goes back in time too: each answer must equal the mask computed from scratch.
    for now in (NOW, NOW + 99.5, NOW + 100, NOW + 5000, NOW - 1, NOW - 1.5, NOW + 100, NOW):
        for channel in ("", "email", "app", "fax"):
            fresh = ((cat.valid_from <= now) & (now < cat.valid_to)
                     & cat.channel_mask(channel))
            assert base_eligibility(seg, cat, now, channel).tolist() == fresh.tolist()
            rank(seg, cat, Rules(limit=10, now=now, channel=channel, excluded=np.array([0])),
                 accepted=np.array([5], np.uint32))
    assert base_eligibility(seg, cat, NOW, "").tolist()[0] is True  # exclusions did not stick
    assert len(seg.base_masks) == 3  # "", "email" and one entry for every unknown channel


def test_ties_across_the_cut_keep_catalogue_order() -> None:
    n = 300
    popularity = np.ones(n, dtype=np.float32)
    popularity[::7] = 2.0  # 43 offers tie for first place, the rest for second
    seg = SegmentModel.build("s", "popular", 0.0, np.arange(n, dtype=np.uint32), popularity,
                             None, n)
    cat = Catalogue.from_json([{"offer_id": f"o{i}"} for i in range(n)])
    assert rank(seg, cat, Rules(limit=10, now=NOW)).offers.tolist() == list(range(0, 70, 7))
    assert rank(seg, cat, Rules(limit=50, now=NOW)).offers.tolist()[43:] == [1, 2, 3, 4, 5, 6, 8]
