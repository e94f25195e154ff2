"""The RecordFeedback script on a real Redis: dedup, durable log, live-hash effects, bounds."""

from __future__ import annotations

import pytest
import redis

from recsvc.core import schema
from recsvc.feedback.events import Event
from recsvc.store.feedback.events import (
    DUPLICATE,
    LOG_FULL,
    RECORD_EVENTS,
    RECORD_EVENTS_SHA,
    RECORDED,
    Bounds,
    record_sync,
    script_args,
)

pytestmark = [pytest.mark.cluster]

BOUNDS = Bounds(dedup_window_seconds=3600, dedup_max_per_shard=1000, events_max_per_shard=1000,
                live_ttl_seconds=86400, contacts_kept=3)
T = 1_800_000_000.0


def ev(event_id: str, event: str = "accept", offer: str = "o1", customer: str = "c1",
       ts: float = T, **more: object) -> Event:
    return Event(event_id, customer, offer, event, ts, **more)  # type: ignore[arg-type]


def test_an_event_is_recorded_once_and_its_retry_is_a_duplicate(client: redis.Redis,
                                                                 keys: schema.Keys) -> None:
    first = record_sync(client, keys, BOUNDS, [ev("e1", value=12.5, channel="email",
                                                  decision_id="d9")])
    again = record_sync(client, keys, BOUNDS, [ev("e1"), ev("e1")])
    assert first[0].status == RECORDED and first[0].stream_id
    assert [o.status for o in again] == [DUPLICATE, DUPLICATE]
    shard = schema.shard_of("c1")
    entries = client.xrange(keys.events(shard))
    assert len(entries) == 1
    sid, fields = entries[0]
    assert sid.decode() == first[0].stream_id
    assert fields == {b"id": b"e1", b"customer": b"c1", b"offer": b"o1", b"event": b"accept",
                      b"ts": repr(T).encode(), b"value": b"12.5", b"decision": b"d9",
                      b"channel": b"email", b"segment": b""}


def test_live_hash_holds_accepts_declines_ignored_impressions_contacts_and_segment(
        client: redis.Redis, keys: schema.Keys) -> None:
    record_sync(client, keys, BOUNDS, [
        ev("1", "impression", "o1", channel="app", ts=T + 1),
        ev("2", "impression", "o2", channel="app", ts=T + 2),
        ev("3", "click", "o2", ts=T + 3),
        ev("4", "decline", "o3", ts=T + 4),
        ev("5", "decline", "o3", ts=T + 5, segment="loyal"),
        ev("6", "redeem", "o4", ts=T + 6),
        ev("7", "impression", "o1", channel="app", ts=T + 7),
        ev("8", "impression", "o1", channel="app", ts=T + 8),
        ev("9", "churn", "", ts=T + 9),
    ])
    live = client.hgetall(keys.live("c1"))
    assert live == {
        b"n:o1": f"3 {T + 8:.3f}".encode(),
        b"d:o3": f"2 {T + 5:.3f}".encode(),
        b"a:o4": repr(T + 6).encode(),
        b"c:app": f"{T + 2:.3f} {T + 7:.3f} {T + 8:.3f}".encode(),  # the newest 3 kept
        b"seg": b"loyal",
    }
    assert 86000 < client.ttl(keys.live("c1")) <= 86400


def test_dedup_forgets_ids_older_than_the_window_and_beyond_the_size_bound(
        client: redis.Redis, keys: schema.Keys) -> None:
    small = Bounds(3600, 3, 1000, 86400, 3)
    shard = schema.shard_of("c1")

    def run(now: float, event_id: str) -> int:
        reply = client.evalsha(RECORD_EVENTS_SHA, *script_args(keys, small, now, ev(event_id)))
        return int(reply[0])

    client.script_load(RECORD_EVENTS)
    assert run(T, "old") == RECORDED
    assert run(T + 3599, "old") == DUPLICATE  # inside the window
    assert run(T + 3601, "new") == RECORDED  # this call's trim drops "old" (older than 1 h)
    assert client.zscore(keys.dedup(shard), "old") is None
    for i in range(5):
        run(T + 3602 + i, f"x{i}")
    assert client.zcard(keys.dedup(shard)) == 3  # the size bound keeps the newest


def test_a_full_log_refuses_new_events_without_marking_them_seen(client: redis.Redis,
                                                                 keys: schema.Keys) -> None:
    tiny = Bounds(3600, 100, 2, 86400, 3)
    outcomes = record_sync(client, keys, tiny, [ev("a"), ev("b"), ev("c")])
    assert [o.status for o in outcomes] == [RECORDED, RECORDED, LOG_FULL]
    assert client.zscore(keys.dedup(schema.shard_of("c1")), "c") is None
    assert [o.status for o in record_sync(client, keys, tiny, [ev("a")])] == [DUPLICATE]


def test_a_flushed_script_cache_is_reloaded_and_nothing_runs_twice(client: redis.Redis,
                                                                  keys: schema.Keys) -> None:
    record_sync(client, keys, BOUNDS, [ev("a")])
    client.script_flush()
    outcomes = record_sync(client, keys, BOUNDS, [ev("a"), ev("b")])
    assert [o.status for o in outcomes] == [DUPLICATE, RECORDED]
    assert client.xlen(keys.events(schema.shard_of("c1"))) == 2
