"""The RecordFeedback calls of a batch, built without I/O: one per shard, every key of a call on
the shard's slot (on a single Redis the budgets hash excepted; on a cluster every key), events in
batch order, replies mapped back."""

from __future__ import annotations

import re

import pytest

from recsvc.core import schema
from recsvc.core.errors import StoreError
from recsvc.feedback.events import Event
from recsvc.store.feedback.event_script import (
    COMMON_ARGS,
    DUPLICATE,
    FIXED_KEYS,
    LOG_FULL,
    PER_EVENT,
    RECORDED,
    Bounds,
    Outcome,
    outcomes_of,
    plan_calls,
)

KEYS = schema.Keys("p")
BOUNDS = Bounds(3600, 1000, 1000, 86400, 3)
T = 1_800_000_000.0


def hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: the first non-empty {...}, else the whole key."""
    found = re.search(r"\{([^}]+)\}", key)
    return found.group(1) if found else key


def batch(size: int) -> list[Event]:
    names = ("impression", "click", "accept", "decline", "redeem", "churn")
    return [Event(f"e{i}", f"cust-{i % 97}", f"o{i % 5}", names[i % len(names)], T + i)
            for i in range(size)]


def test_a_batch_is_one_call_per_shard_and_each_calls_keys_share_its_slot() -> None:
    events = batch(300)
    calls = plan_calls(KEYS, BOUNDS, T, events)
    shards = {schema.shard_of(e.customer_id) for e in events}
    assert sorted(c.shard for c in calls) == sorted(shards) and len(shards) > 40
    for call in calls:
        numkeys = int(call.args[0])
        keys = call.args[1:1 + numkeys]
        assert keys[:FIXED_KEYS] == [KEYS.dedup(call.shard), KEYS.events(call.shard),
                                     KEYS.budgets]
        # Cluster: one slot per call, except the budgets hash (one slot for every budget).
        assert {hash_tag(k) for k in keys if k != KEYS.budgets} == {str(call.shard)}
        customers = {events[p].customer_id for p in call.positions}
        assert sorted(keys[FIXED_KEYS:]) == sorted(KEYS.live(c) for c in customers)
        argv = call.args[1 + numkeys:]
        assert len(argv) == COMMON_ARGS + PER_EVENT * len(call.positions)
        for j, position in enumerate(call.positions):
            event = events[position]
            fields = argv[COMMON_ARGS + j * PER_EVENT:COMMON_ARGS + (j + 1) * PER_EVENT]
            assert keys[int(fields[0]) - 1] == KEYS.live(event.customer_id)  # 1-based KEYS
            assert fields[1:6] == [event.event_id, event.customer_id, event.offer_id,
                                   event.event, repr(event.ts)]
            # The day counts on-accept budgets: sent only where a budget may count.
            assert (fields[10] != "") == (event.event in ("accept", "redeem"))
    positions = [p for call in calls for p in call.positions]
    assert sorted(positions) == list(range(300))
    assert all(c.positions == sorted(c.positions) for c in calls)  # batch order per shard
    # A single Redis: the script reads the specs from the budgets hash (ARGV[7] = -1).
    assert {c.args[1 + int(c.args[0]) + COMMON_ARGS - 1] for c in calls} == {"-1"}


def test_on_a_cluster_every_key_is_on_the_shards_slot_and_the_budgets_are_listed() -> None:
    """The shard's on-accept counters replace {p}:budgets (another slot); the offers to count
    come in ARGV[7..] as (offer, has per_day) pairs, then the events as on a single Redis."""
    keys = schema.Keys("p", cluster=True)
    events = batch(200)
    listed = (("o1", True), ("o3", False))
    single = plan_calls(KEYS, BOUNDS, T, events, listed)
    calls = plan_calls(keys, BOUNDS, T, events, listed)
    assert [c.positions for c in calls] == [c.positions for c in single]
    for call, plain in zip(calls, single, strict=True):
        numkeys = int(call.args[0])
        names = call.args[1:1 + numkeys]
        assert names[2] == keys.budget_use(call.shard) == f"p:budgetuse:{{{call.shard}}}"
        assert {hash_tag(k) for k in names} == {str(call.shard)}
        argv = call.args[1 + numkeys:]
        assert argv[COMMON_ARGS - 1:COMMON_ARGS + 4] == ["2", "o1", "1", "o3", "0"]
        plain_argv = plain.args[1 + numkeys:]
        assert argv[COMMON_ARGS + 4:] == plain_argv[COMMON_ARGS:]  # the same events
    assert plan_calls(keys, BOUNDS, T, events)[0].args[1 + int(calls[0].args[0]) + 6] == "0"


def test_replies_come_back_as_one_outcome_per_event_in_batch_order() -> None:
    events = batch(12)
    calls = plan_calls(KEYS, BOUNDS, T, events)
    statuses = {p: (RECORDED, DUPLICATE, LOG_FULL)[p % 3] for p in range(12)}
    replies = []
    for call in calls:
        reply: list[object] = []
        for p in call.positions:
            reply += [statuses[p], f"1-{p}".encode() if statuses[p] == RECORDED else b""]
        replies.append(reply)
    outcomes = outcomes_of(calls, replies, 12)
    assert outcomes == [Outcome(RECORDED, f"1-{p}") if statuses[p] == RECORDED
                        else Outcome(statuses[p]) for p in range(12)]


def test_a_reply_that_does_not_fit_its_call_is_a_store_error() -> None:
    calls = plan_calls(KEYS, BOUNDS, T, batch(3))
    short = [[RECORDED] for _ in calls]
    with pytest.raises(StoreError, match="answered"):
        outcomes_of(calls, short, 3)
    odd = [[9, b""] * len(c.positions) for c in calls]
    with pytest.raises(StoreError, match="unknown status 9"):
        outcomes_of(calls, odd, 3)
