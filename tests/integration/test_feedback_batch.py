"""A batch is one script call per shard: on a real Redis it does exactly what one call per event
did (statuses, stream entries, live hashes, dedup ids, on-accept budgets), duplicates inside a
batch and across batches have effect once, and one refused event leaves the rest recorded."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import replace

import pytest
import redis

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.feedback.events import Event
from recsvc.store.control.budgets import budgets_of, set_budget
from recsvc.store.feedback.events import (
    DUPLICATE,
    LOG_FULL,
    RECORDED,
    Bounds,
    EventLog,
    plan_calls,
    record_sync,
)

pytestmark = [pytest.mark.cluster]

BOUNDS = Bounds(dedup_window_seconds=3600, dedup_max_per_shard=10_000,
                events_max_per_shard=10_000, live_ttl_seconds=86400, contacts_kept=3)
T = 1_800_000_000.0
NAMES = ("impression", "impression", "click", "accept", "redeem", "decline", "churn", "nps")


def mixed_events(rng: random.Random, count: int, customers: int, ids: list[str]) -> list[Event]:
    """Events over many shards; ``ids`` repeats some event ids (a client's retries: the same
    event again, so the same customer); some customers have several events in the batch."""
    events = []
    for i in range(count):
        name = rng.choice(NAMES)
        events.append(Event(
            ids[i], f"cust-{rng.randrange(customers)}", "" if name in ("churn", "nps")
            else f"o{rng.randrange(4)}", name, T + rng.randrange(600) + rng.random(),
            decision_id=rng.choice(["", "d-1"]), channel=rng.choice(["", "email", "app"]),
            segment=rng.choice(["", "", "", "loyal"]),
            value=float(rng.randrange(11)) if name == "nps" else None))
    return events


def with_retries(rng: random.Random, events: list[Event], share: float) -> list[Event]:
    """``events`` with a share of them sent again later in the same batch."""
    out = list(events)
    for event in rng.sample(events, int(share * len(events))):
        out.insert(rng.randrange(out.index(event) + 1, len(out) + 1), event)
    return out


def log_of(client: redis.Redis, keys: schema.Keys) -> dict[int, list[dict[bytes, bytes]]]:
    return {s: [fields for _, fields in client.xrange(keys.events(s))]
            for s in range(schema.SHARDS)}


def test_duplicates_inside_a_batch_and_across_batches_have_effect_once(
        client: redis.Redis, keys: schema.Keys) -> None:
    rng = random.Random(3)
    first = with_retries(rng, mixed_events(rng, 400, 300, [f"a{i}" for i in range(400)]), 0.2)
    outcomes = record_sync(client, keys, BOUNDS, first)
    assert len(plan_calls(keys, BOUNDS, T, first)) > 50  # the batch spans most shards
    seen: set[str] = set()
    for event, outcome in zip(first, outcomes, strict=True):
        assert outcome.status == (DUPLICATE if event.event_id in seen else RECORDED)
        seen.add(event.event_id)
    # Every recorded event is in its shard's stream, once, under the id it was answered with.
    entries = {(s, sid.decode()): fields for s in range(schema.SHARDS)
               for sid, fields in client.xrange(keys.events(s))}
    recorded = [(e, o) for e, o in zip(first, outcomes, strict=True) if o.status == RECORDED]
    assert len(entries) == len(recorded) == 400
    for event, outcome in recorded:
        entry = entries[(schema.shard_of(event.customer_id), outcome.stream_id)]
        assert entry[b"id"] == event.event_id.encode()
        assert entry[b"customer"] == event.customer_id.encode()
    # A second batch: retries of the first one's events among new ones.
    again = rng.sample(first, 100)
    second = mixed_events(rng, 100, 300, [f"b{i}" for i in range(100)]) + again
    rng.shuffle(second)
    statuses = [o.status for o in record_sync(client, keys, BOUNDS, second)]
    assert statuses == [DUPLICATE if e.event_id.startswith("a") else RECORDED for e in second]
    assert sum(client.xlen(keys.events(s)) for s in range(schema.SHARDS)) == 500


def test_one_call_per_shard_does_what_one_call_per_event_did(client: redis.Redis,
                                                             keys: schema.Keys) -> None:
    """The same events, once as whole batches and once one event per call (as the script ran
    before batching), leave Redis in the same state, budgets included (on a cluster the
    on-accept units in the shards' counters, for the offers the process lists)."""
    rng = random.Random(5)
    batched = schema.Keys(f"{keys.prefix}b", cluster=keys.cluster)
    single = schema.Keys(f"{keys.prefix}s", cluster=keys.cluster)
    budgeted = (("o3", True),)
    for keys in (batched, single):
        set_budget(client, keys, "o3", {"count": "accept", "total": 1000, "per_day": 1000,
                                        "per_segment": {"loyal": 1000}})
    ids = [f"e{rng.randrange(700)}" for _ in range(700)]  # ~half are repeats
    batches = [mixed_events(rng, 350, 60, ids[:350]), mixed_events(rng, 350, 60, ids[350:])]
    # A retried id is the same event: make each repeat a copy of its first occurrence.
    first_of: dict[str, Event] = {}
    batches = [[first_of.setdefault(e.event_id, e) for e in b] for b in batches]
    batch_statuses = [o.status for b in batches
                      for o in record_sync(client, batched, BOUNDS, b, budgeted)]
    single_statuses = [record_sync(client, single, BOUNDS, [e], budgeted)[0].status
                       for b in batches for e in b]
    assert batch_statuses == single_statuses and DUPLICATE in batch_statuses
    assert log_of(client, batched) == log_of(client, single)
    customers = {e.customer_id for b in batches for e in b}
    for customer in customers:
        assert client.hgetall(batched.live(customer)) == client.hgetall(single.live(customer))
    for shard in range(schema.SHARDS):
        assert set(client.zrange(batched.dedup(shard), 0, -1)) == \
            set(client.zrange(single.dedup(shard), 0, -1))
    assert budgets_of(client, batched) == budgets_of(client, single)
    assert int(budgets_of(client, batched).get("o3:used") or 0) > 0
    if keys.cluster:
        assert client.hget(batched.budgets, "o3:used") is None


def test_a_full_shard_refuses_its_event_and_the_rest_of_the_batch_is_recorded(
        client: redis.Redis, keys: schema.Keys) -> None:
    tiny = replace(BOUNDS, events_max_per_shard=2)
    full = "cust-full"
    record_sync(client, keys, tiny, [Event("f1", full, "o1", "click", T),
                                     Event("f2", full, "o1", "click", T)])
    others = [Event(f"x{i}", f"cust-{i}", "o1", "accept", T) for i in range(60)
              if schema.shard_of(f"cust-{i}") != schema.shard_of(full)]
    refused, known = Event("f3", full, "o2", "accept", T), Event("f1", full, "o1", "click", T)
    batch = [*others[:30], refused, known, *others[30:]]
    statuses = [o.status for o in record_sync(client, keys, tiny, batch)]
    assert statuses[30:32] == [LOG_FULL, DUPLICATE]  # a known id stays a duplicate when full
    assert statuses[:30] + statuses[32:] == [RECORDED] * len(others)
    assert client.zscore(keys.dedup(schema.shard_of(full)), "f3") is None  # not marked seen
    assert client.hget(keys.live(full), "a:o2") is None  # and no effect
    assert all(client.hget(keys.live(e.customer_id), "a:o1") for e in others)


def test_the_event_loop_and_redis_py_run_the_same_calls(settings: Settings,
                                                        client: redis.Redis) -> None:
    rng = random.Random(9)
    events = with_retries(rng, mixed_events(rng, 200, 150, [f"e{i}" for i in range(200)]), 0.1)
    loop_keys = schema.Keys(f"{settings.key_prefix}a", cluster=settings.redis_cluster)
    sync_keys = schema.Keys(f"{settings.key_prefix}y", cluster=settings.redis_cluster)

    async def on_the_loop() -> list[int]:
        log = EventLog(loop_keys, replace(settings, key_prefix=loop_keys.prefix))
        try:
            client.script_flush()  # as after a Redis restart: loaded again, nothing runs twice
            outcomes = await log.record(events, time.monotonic() + 5)
            retry = await log.record(events, time.monotonic() + 5)
            assert {o.status for o in retry} == {DUPLICATE}
            return [o.status for o in outcomes]
        finally:
            await log.close()

    on_loop = asyncio.run(on_the_loop())
    with_redis_py = [o.status for o in record_sync(client, sync_keys,
                                                   Bounds.from_settings(settings), events)]
    assert on_loop == with_redis_py and on_loop.count(DUPLICATE) == 20
    assert log_of(client, loop_keys) == log_of(client, sync_keys)
