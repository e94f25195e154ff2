"""The fold-in is implicit's exact one-user solve, and serving prefers its record."""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from recsvc.feedback.foldin import NewEvent, SegmentSolver, add_events, record_for


@pytest.fixture(scope="module")
def fitted() -> tuple[object, csr_matrix]:
    from implicit.cpu.als import AlternatingLeastSquares

    rng = np.random.default_rng(3)
    dense = rng.choice([0, 0, 0, 1, 4, 6, -2], size=(60, 25)).astype(np.float32)
    matrix = csr_matrix(dense)
    model = AlternatingLeastSquares(factors=6, regularization=0.05, alpha=5.0, iterations=5,
                                    random_state=1, num_threads=1)
    model.fit(matrix, show_progress=False)
    return model, matrix


def solver_of(model: object, offers: np.ndarray, catalogue: int) -> SegmentSolver:
    return SegmentSolver.build(offers.astype(np.uint32), model.item_factors,  # type: ignore[attr-defined]
                               catalogue, 0.05, 5.0, None)


def test_solve_equals_implicit_recalculate_user_on_a_whole_row(fitted: tuple) -> None:
    model, matrix = fitted
    # The segment's 25 offers sit at catalogue indices 100..124 (records store catalogue ids).
    solver = solver_of(model, np.arange(100, 125), 200)
    for user in range(0, 60, 7):
        row = matrix[user]
        ours = solver.solve((row.indices + 100).astype(np.uint32), row.data)
        theirs = model.recalculate_user(user, row)
        np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_new_events_solve_like_implicit_on_the_updated_row(fitted: tuple) -> None:
    model, matrix = fitted
    solver = solver_of(model, np.arange(25), 25)
    row = matrix[4]
    weights = {"impression": 0.0, "click": 1.0, "accept": 4.0, "redeem": 6.0, "decline": -2.0}
    events = [NewEvent(int(row.indices[0]), "accept"), NewEvent(24, "click"),
              NewEvent(23, "decline"), NewEvent(24, "redeem")]
    offers, confidence = add_events(row.indices.astype(np.uint32), row.data, events, weights,
                                    None)
    dense = row.toarray()[0]
    dense[row.indices[0]] += 4.0
    dense[24] += 7.0
    dense[23] += -2.0
    expected = model.recalculate_user(4, csr_matrix(dense[np.newaxis, :]))
    np.testing.assert_allclose(solver.solve(offers, confidence), expected, atol=1e-4)


def test_a_customer_without_history_becomes_personal_after_one_event(fitted: tuple) -> None:
    model, _ = fitted
    solver = solver_of(model, np.arange(25), 25)
    offers, confidence = add_events(np.empty(0, np.uint32), np.empty(0, np.float32),
                                    [NewEvent(3, "accept")], {"accept": 4.0}, None)
    vector = solver.solve(offers, confidence)
    scores = model.item_factors @ vector  # type: ignore[attr-defined]
    assert vector.shape == (6,) and np.isfinite(vector).all() and np.abs(vector).sum() > 0
    assert int(np.argmax(scores)) == 3 or scores[3] > np.median(scores)


def test_a_first_impression_adds_the_negative_weight_when_the_segment_uses_it() -> None:
    offers, confidence = add_events(np.array([1], np.uint32), np.array([2.0], np.float32),
                                    [NewEvent(5, "impression"), NewEvent(1, "impression")],
                                    {"impression": 0.0}, -1.0)
    assert dict(zip(offers.tolist(), confidence.tolist(), strict=True)) == {1: 2.0, 5: -1.0}


def test_serving_prefers_the_folded_record_of_its_own_version_only() -> None:
    live = {b"r:V2": b"folded", b"r:V1": b"old", b"a:o1": b"1"}
    assert record_for("V2", b"base", live) == b"folded"
    assert record_for("V3", b"base", live) == b"base"
    assert record_for("V3", None, live) is None
    assert record_for("V2", None, live) == b"folded"
