"""The campaign's pure parts: budget units allocated by value (known answers), the units left
read from the budgets hash, the vectorized top-k against decide's stable sort, and the
decision-log packer against serving's command (no Redis needed for any of them)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recsvc.decisioning.allocation import Units, allocate, units_left
from recsvc.decisioning.batch import top_rows, top_shared


def _pairs(rows: list[tuple[int, str, float, bool]]) -> dict[str, object]:
    """(customer, offer, objective, budgeted) in customer, rank order."""
    offers = sorted({o for _, o, _, _ in rows})
    return {
        "customer": np.array([c for c, _, _, _ in rows], np.int64),
        "objective": np.array([v for _, _, v, _ in rows]),
        "offer": offers,
        "offer_code": np.array([offers.index(o) for _, o, _, _ in rows], np.int64),
        "segment": ["main"],
        "segment_code": np.zeros(len(rows), np.int64),
        "budgeted": np.array([b for _, _, _, b in rows], bool),
    }


def _run(rows: list[tuple[int, str, float, bool]], limit: int, units: Units,
         **kw: np.ndarray) -> list[tuple[int, str]]:
    p = _pairs(rows)
    result = allocate(p["customer"], p["objective"], p["offer"], p["offer_code"],  # type: ignore[arg-type]
                      p["segment"], p["segment_code"], p["budgeted"], limit, units, **kw)  # type: ignore[arg-type]
    return [(c, o) for (c, o, _, _), t in zip(rows, result.taken.tolist(), strict=True) if t]


def test_two_units_go_to_the_two_highest_objectives() -> None:
    # Customer 1 values X least; they get their next candidate (Y) instead.
    rows = [(0, "X", 0.9, True), (0, "Y", 0.5, False),
            (1, "X", 0.4, True), (1, "Y", 0.3, False),
            (2, "X", 0.7, True), (2, "Y", 0.2, False)]
    taken = _run(rows, 1, Units({"X": 2}, {}))
    assert taken == [(0, "X"), (1, "Y"), (2, "X")]


def test_first_come_would_differ_value_decides() -> None:
    # In file order customer 0 comes first, but customer 1's pair is worth more.
    rows = [(0, "X", 0.2, True), (0, "Y", 0.1, False), (1, "X", 0.8, True)]
    assert _run(rows, 1, Units({"X": 1}, {})) == [(0, "Y"), (1, "X")]


def test_a_full_customer_uses_no_unit() -> None:
    # Customer 0's X sits below two unbudgeted offers with limit 2: no slot, no unit used, so
    # customer 1 (lower value) still gets the only unit.
    rows = [(0, "A", 0.99, False), (0, "B", 0.98, False), (0, "X", 0.97, True),
            (1, "X", 0.10, True)]
    assert _run(rows, 2, Units({"X": 1}, {})) == [(0, "A"), (0, "B"), (1, "X")]


def test_segment_limits_and_unlimited_offers() -> None:
    rows = [(0, "X", 0.9, True), (1, "X", 0.8, True), (2, "X", 0.7, True)]
    assert _run(rows, 1, Units({"X": None}, {("X", "main"): 2})) == [(0, "X"), (1, "X")]


def test_forced_pairs_keep_their_unit_and_banned_ones_refill() -> None:
    rows = [(0, "X", 0.9, True), (0, "Y", 0.1, False),
            (1, "X", 0.8, True), (1, "Y", 0.1, False)]
    forced = np.array([False, False, True, False])
    banned = np.array([True, False, False, False])
    # No unit left, yet customer 1 keeps the one reserved; customer 0 was refused: Y instead.
    assert _run(rows, 1, Units({"X": 0}, {}), forced=forced, banned=banned) == \
        [(0, "Y"), (1, "X")]


def test_rank_order_holds_when_objectives_rise() -> None:
    # An explored answer is not sorted by objective: its later X must not jump ahead of A.
    rows = [(0, "A", 0.1, False), (0, "X", 0.9, True), (1, "X", 0.5, True)]
    assert _run(rows, 1, Units({"X": 1}, {})) == [(0, "A"), (1, "X")]


def test_units_left_reads_total_day_and_segment() -> None:
    fields = {
        "X": json.dumps({"count": "serve", "total": 10, "per_day": 4,
                         "per_segment": {"main": 5}}),
        "X:used": "3", "X:used:d:20261206": "2", "X:used:s:main": "4",
        "V": json.dumps({"count": "accept", "total": 1}),
        "B": "{not json", "~rev": "7",
    }
    units = units_left(fields, "20261206")
    assert units.offer == {"X": 2, "B": 0}
    assert units.segment == {("X", "main"): 1}


def _stable_top(order: np.ndarray, mask: np.ndarray, width: int) -> np.ndarray:
    masked = np.where(mask, order, -np.inf)
    return np.argsort(-masked, axis=1, kind="stable")[:, :width]


@pytest.mark.parametrize("seed", range(5))
def test_top_rows_is_decides_stable_sort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    order = rng.integers(0, 6, size=(300, 40)).astype(np.float32)  # many ties
    mask = rng.random((300, 40)) < 0.7
    width = 7
    want = _stable_top(order, mask, width)
    got = top_rows(order, mask, width)[0]
    count = np.minimum(mask.sum(axis=1), width)
    for i in range(300):
        assert got[i, :count[i]].tolist() == want[i, :count[i]].tolist()
    shared = top_shared(order[0], mask, width)
    want_shared = _stable_top(np.broadcast_to(order[0], mask.shape), mask, width)
    for i in range(300):
        assert shared[i, :count[i]].tolist() == want_shared[i, :count[i]].tolist()


def test_near_ties_flags_rows_whose_head_could_swap() -> None:
    order = np.array([[1.0, 0.5, 0.2, 0.1], [1.0, 0.5, 0.5 + 1e-9, 0.1],
                      [1.0, 0.3, 0.3, 0.3], [5.0, 1e-7, 2e-7, 0.0]], np.float32)
    mask = np.array([[True] * 4, [True] * 4, [True, True, False, False],
                     [False, True, True, True]])
    # Row 3: the eligible values are tiny beside the masked 5.0: within its rounding.
    assert top_rows(order, mask, 2)[1].tolist() == [1, 3]


def test_log_packer_writes_what_serving_writes() -> None:
    import hiredis

    from recsvc.core import schema
    from recsvc.experiments.decision_log import Decision
    from recsvc.store.bulk.campaign import LogPacker
    from recsvc.store.reads.reader import decision_log_command

    keys = schema.Keys("p")
    entry = Decision("id-1", 1.5, "C7", "loyal", "v1", "treatment", "personalized", "email",
                     ("o1", "o2"), np.array([0.5, 0.25], np.float32),
                     np.array([1.0, 1.0], np.float32), np.array([0.5, 0.25], np.float32),
                     np.array([3.0, 4.0], np.float32), np.array([1.0, 2.0], np.float32),
                     "v2", ("o3",), explored=True)
    fields = entry.fields()
    want = hiredis.pack_command(decision_log_command(keys, "C7", "1000", fields))  # type: ignore[arg-type]
    got = LogPacker(keys, 1000, fields[0::2]).pack(schema.shard_of("C7"), fields[1::2])
    assert got == want
