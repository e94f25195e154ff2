"""Bounded memory: feeding more events than the bounds leaves streams, dedup sets and live
hashes within their documented sizes (README "Feedback": ~150 B per stream entry, ~130 B per
remembered id, contact lists capped)."""

from __future__ import annotations

import time

import redis

from recsvc.core import schema
from recsvc.feedback.events import Event
from recsvc.store.feedback.events import LOG_FULL, Bounds, record_sync

MAX_EVENTS, MAX_IDS, KEPT = 40, 25, 4
ENTRY_BYTES, ID_BYTES, LIVE_BYTES = 200, 160, 1200  # generous per-item ceilings


def feed(client: redis.Redis, keys: schema.Keys, start: int, count: int) -> list[int]:
    bounds = Bounds(86400, MAX_IDS, MAX_EVENTS, 86400, KEPT)
    now = time.time()
    statuses = []
    for lo in range(start, start + count, 500):
        batch = [Event(f"event-{i:010d}", f"customer-{i % 300}", f"offer-{i % 7}",
                       "impression", now + i * 1e-3, channel="email", decision_id="d" * 16)
                 for i in range(lo, min(lo + 500, start + count))]
        statuses += [o.status for o in record_sync(client, keys, bounds, batch)]
    return statuses


def test_more_events_than_the_bounds_keep_redis_memory_within_them(client: redis.Redis,
                                                                    prefix: str) -> None:
    keys = schema.Keys(prefix)
    capacity = schema.SHARDS * MAX_EVENTS
    before = int(client.info("memory")["used_memory"])
    first = feed(client, keys, 0, 3 * capacity)
    assert first.count(LOG_FULL) >= capacity  # the log refused rather than dropping entries
    for shard in range(schema.SHARDS):
        assert client.xlen(keys.events(shard)) <= MAX_EVENTS
        assert client.zcard(keys.dedup(shard)) <= MAX_IDS
    lives = [keys.live(f"customer-{c}") for c in range(300)]
    for key in lives:
        contacts = client.hget(key, "c:email")
        assert contacts is None or len(contacts.split()) <= KEPT
    bound = (capacity * ENTRY_BYTES + schema.SHARDS * MAX_IDS * ID_BYTES
             + len(lives) * LIVE_BYTES)
    measured = sum(int(client.memory_usage(keys.events(s)) or 0)
                   + int(client.memory_usage(keys.dedup(s)) or 0)
                   for s in range(schema.SHARDS))
    measured += sum(int(client.memory_usage(k) or 0) for k in lives)
    assert measured <= bound, (measured, bound)
    grown = int(client.info("memory")["used_memory"]) - before
    assert grown <= 1.5 * bound, (grown, bound)
    feed(client, keys, 10 * capacity, 3 * capacity)  # as much again: nothing grows
    again = sum(int(client.memory_usage(keys.events(s)) or 0)
                + int(client.memory_usage(keys.dedup(s)) or 0)
                for s in range(schema.SHARDS))
    again += sum(int(client.memory_usage(k) or 0) for k in lives)
    assert again <= bound and again <= measured * 1.05, (again, measured)
