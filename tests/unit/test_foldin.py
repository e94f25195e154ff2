"""The fold-in is implicit's exact one-user solve, and serving prefers its record."""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from recsvc.feedback.foldin import (
    ExposureSolver,
    NewEvent,
    SegmentSolver,
    add_events,
    record_for,
)
from training.exposure import ExposureParams, fit_exposure


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


@pytest.fixture(scope="module")
def exposure_fit() -> tuple[np.ndarray, np.ndarray, np.ndarray, object]:
    """The exposure model fit on 80 customers x 20 offers, 30% of cells shown, offers whose
    index is a multiple of 3 accepted more often."""
    rng = np.random.default_rng(5)
    rows, cols = np.nonzero(rng.random((80, 20)) < 0.3)
    accepted = rng.random(len(rows)) < np.where(cols % 3 == 0, 0.6, 0.15)
    factors = fit_exposure(rows.astype(np.int32), cols.astype(np.int32), accepted, (80, 20),
                           ExposureParams(4, 2.0, 5.0, 6), seed=1)
    return rows, cols, accepted, factors


def exposure_solver(factors: object) -> ExposureSolver:
    # The segment's 20 offers sit at catalogue indices 50..69.
    return ExposureSolver.build(np.arange(50, 70, dtype=np.uint32),
                                factors.items, 100, 2.0, None)  # type: ignore[attr-defined]


def test_an_exposure_solve_gives_back_the_published_vectors(exposure_fit: tuple) -> None:
    """The exposure model's last step solves each customer with the offers fixed, so the solve
    on a customer's shown cells and accepts (what their record carries) is their vector."""
    rows, cols, accepted, factors = exposure_fit
    solver = exposure_solver(factors)
    for user in range(0, 80, 9):
        mine = rows == user
        shown = (cols[mine] + 50).astype(np.uint32)
        # Cell confidences play no part: every cell is a shown offer.
        ours = solver.solve(shown, np.full(len(shown), -1.0, np.float32),
                            (cols[mine][accepted[mine]] + 50).astype(np.uint32))
        np.testing.assert_allclose(ours, factors.users[user], atol=1e-4)
        assert ours[-1] == 1.0  # the bias column


def test_an_accept_raises_the_exposure_score_of_that_offer(exposure_fit: tuple) -> None:
    rows, cols, accepted, factors = exposure_fit
    solver = exposure_solver(factors)
    user = int(rows[~accepted][0])
    mine = rows == user
    declined = int(cols[mine][~accepted[mine]][0]) + 50
    shown = (cols[mine] + 50).astype(np.uint32)
    taken = (cols[mine][accepted[mine]] + 50).astype(np.uint32)
    before = solver.solve(shown, np.zeros(len(shown), np.float32), taken)
    after = solver.solve(shown, np.zeros(len(shown), np.float32),
                         np.append(taken, np.uint32(declined)))
    items = factors.items  # scores as served: [x, 1] . [y_o, b_o]
    assert items[declined - 50] @ after > items[declined - 50] @ before
    # A customer with nothing shown scores the offer biases alone.
    empty = solver.solve(np.empty(0, np.uint32), np.empty(0, np.float32), None)
    np.testing.assert_allclose(items @ empty, items[:, -1], atol=1e-6)
