"""On a Redis Cluster on-accept units are counted per shard: which counter fields decide
exhaustion today, and how the shard sums join the budgets hash before the pure check."""

from __future__ import annotations

import json

from recsvc.decisioning.budgets import (
    BudgetSpec,
    budget_state,
    day_of,
    on_accept_of,
    use_fields,
    with_use,
)

NOW = 1_800_000_000.0
DAY = day_of(NOW)


def specs() -> dict[str, BudgetSpec]:
    return {"v1": BudgetSpec("accept", total=10, per_day=3, per_segment={"loyal": 2}),
            "v2": BudgetSpec("accept", total=5),
            "s1": BudgetSpec("serve", total=100)}


def test_only_on_accept_budgets_are_listed_and_read() -> None:
    assert on_accept_of(specs()) == (("v1", True), ("v2", False))
    assert use_fields(specs(), DAY) == ["v1:used", f"v1:used:d:{DAY}", "v1:used:s:loyal",
                                        "v2:used"]


def test_shard_sums_add_to_the_hash_counters_and_decide_exhaustion() -> None:
    hash_fields = {o: s.as_json() for o, s in specs().items()}
    hash_fields["v2:used"] = "1"  # counted in the hash itself (e.g. by an older deployment)
    summed = {"v1:used": 2, f"v1:used:d:{DAY}": 3, "v1:used:s:loyal": 1, "v2:used": 3}
    merged = with_use(hash_fields, summed)
    assert merged["v2:used"] == "4" and merged["v1:used"] == "2"
    assert json.loads(merged["v1"])["total"] == 10  # specs untouched
    state = budget_state(merged, NOW)
    assert state.exhausted == frozenset({"v1"})  # today's 3 of 3
    assert budget_state(with_use(hash_fields, {**summed, "v2:used": 4}), NOW).exhausted == \
        frozenset({"v1", "v2"})
    assert with_use(hash_fields, {}) == hash_fields
    assert state.on_accept == (("v1", True), ("v2", False))
