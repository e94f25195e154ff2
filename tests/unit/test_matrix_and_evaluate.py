"""Confidence cells (aggregated on purpose) and the held-out split and metric definitions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsvc.core import schema
from recsvc.core.model import Catalogue, SegmentModel
from recsvc.core.ranking import Rules, rank
from training.config import TrainConfig
from training.evaluate import holdout_split, score_metrics, top10
from training.inputs import data
from training.matrix import build_cells


def small(tmp_path: Path, interactions: str) -> data.Dataset:
    (tmp_path / "c.csv").write_text("customer_id,segment\na,s\nb,s\n")
    (tmp_path / "o.csv").write_text("offer_id,segments\nx,*\ny,*\n")
    (tmp_path / "i.csv").write_text("customer_id,offer_id,event,ts,weight\n" + interactions)
    return data.load(str(tmp_path / "c.csv"), str(tmp_path / "o.csv"), str(tmp_path / "i.csv"),
                     100)


def test_duplicate_rows_count_once_with_max_and_add_up_with_sum(tmp_path: Path) -> None:
    ds = small(tmp_path, "a,x,click,1,\na,x,click,2,\na,x,click,3,\na,x,accept,4,\n")
    (cells,) = build_cells(ds, TrainConfig())
    assert cells.confidence.tolist() == [1.0 + 4.0]
    assert cells.interactions == 4
    (summed,) = build_cells(ds, TrainConfig(duplicates="sum"))
    assert summed.confidence.tolist() == [3.0 + 4.0]


def test_weight_column_overrides_the_event_default(tmp_path: Path) -> None:
    (cells,) = build_cells(small(tmp_path, "a,x,accept,1,9\n"), TrainConfig())
    assert cells.confidence.tolist() == [9.0]


def test_half_life_halves_confidence_per_half_life_of_age(tmp_path: Path) -> None:
    ds = small(tmp_path, f"a,x,click,0,\nb,y,click,{86400 * 10},\n")
    (cells,) = build_cells(ds, TrainConfig(half_life_days=10))
    assert sorted(cells.confidence.tolist()) == [0.5, 1.0]


def test_impression_without_click_is_negative_only_when_enabled(tmp_path: Path) -> None:
    ds = small(tmp_path, "a,x,impression,1,\na,y,impression,1,\na,y,click,2,\n")
    (cells,) = build_cells(ds, TrainConfig())
    assert cells.impression_only.tolist() == [True, False]
    assert cells.matrix(None).toarray().tolist() == [[0.0, 1.0], [0.0, 0.0]]
    assert cells.matrix(-1.0).toarray().tolist() == [[-1.0, 1.0], [0.0, 0.0]]
    assert cells.matrix(-1.0, positive_only=True).toarray().tolist() == [[0.0, 1.0], [0.0, 0.0]]


def test_split_holds_out_the_latest_accepts_of_customers_with_enough_history() -> None:
    rows = np.array([0, 0, 0, 0, 1, 1], dtype=np.int32)
    cols = np.array([0, 1, 2, 3, 0, 1], dtype=np.int32)
    accepted_at = np.array([5.0, 9.0, 7.0, -np.inf, 1.0, 2.0])
    split = holdout_split(rows, cols, accepted_at, np.ones(6, bool), k=1, min_history=3)
    assert split.heldout.tolist() == [False, True, False, False, False, False]
    assert split.rows.tolist() == [0]  # customer 1 has only two accepts
    again = holdout_split(rows, cols, accepted_at, split.train, k=1, min_history=2)
    assert again.heldout.tolist() == [False, False, True, False, False, True]


def test_precision_is_hits_over_ten_and_ndcg_uses_the_ideal_of_the_held_out_count() -> None:
    top = np.array([[3, 1, -1, -1, -1, -1, -1, -1, -1, -1]])
    metrics = score_metrics(top, np.array([0, 0]), np.array([1, 7]), n_offers=10)
    assert metrics.precision_at_10 == 0.1
    ideal = 1 + 1 / np.log2(3)
    np.testing.assert_allclose(metrics.ndcg_at_10, (1 / np.log2(3)) / ideal)
    assert metrics.coverage == 0.2


def test_only_customers_with_trained_cells_get_a_vector(tmp_path: Path) -> None:
    """An impression-only customer has no cell in the matrix (negatives off): no vector."""
    from training.fit import Factors, Params
    from training.job import customer_batches
    from training.tune import SegmentResult

    ds = small(tmp_path, "a,x,click,1,\nb,y,impression,2,\n")
    (cells,) = build_cells(ds, TrainConfig())
    factors = Factors(np.ones((2, 3), np.float32), np.ones((2, 3), np.float32))
    result = SegmentResult("s", 2, 2, 2, "personalized", 1.0, Params(3, 0.1, 1.0, 1, False),
                           factors, cells.popularity())
    (batch,) = customer_batches(ds, [cells], [result], batch_size=10)
    records = {cid: schema.decode_customer_record(raw) for cid, raw in batch}
    assert len(records["a"].vector) == 3
    assert len(records["b"].vector) == 0
    with_negatives = SegmentResult("s", 2, 2, 2, "personalized", 1.0,
                                   Params(3, 0.1, 1.0, 1, True), factors, cells.popularity())
    (batch,) = customer_batches(ds, [cells], [with_negatives], batch_size=10)
    assert all(len(schema.decode_customer_record(raw).vector) == 3 for _, raw in batch)


def test_evaluation_top10_equals_serving_ranking_including_ties_across_the_cut() -> None:
    n = 300
    popularity = np.ones(n, dtype=np.float32)
    popularity[::7] = 2.0  # 43 offers tie for first place
    rng = np.random.default_rng(4)
    factors = rng.integers(0, 3, size=(n, 2)).astype(np.float32)  # many tied personal scores
    catalogue = Catalogue.from_json([{"offer_id": f"o{i}"} for i in range(n)])
    for strategy, vectors in (("popular", None),
                              ("personalized", rng.integers(0, 2, (5, 2)).astype(np.float32))):
        seg = SegmentModel.build("s", strategy, 1.0, np.arange(n, dtype=np.uint32), popularity,
                                 factors, n)
        rows = 1 if vectors is None else len(vectors)
        evaluated = top10(seg, vectors, rows, np.array([0]), np.array([0]))
        for row in range(rows):
            served = rank(seg, catalogue, Rules(limit=10, now=0.0),
                          None if vectors is None else vectors[row],
                          np.array([0], np.uint32) if row == 0 else None)
            assert evaluated[row].tolist() == served.offers.tolist()
