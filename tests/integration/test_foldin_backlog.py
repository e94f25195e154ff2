"""The fold-in group's backlog read from a real Redis: undelivered and pending entries count,
acknowledged ones do not, and ages are on Redis's clock."""

from __future__ import annotations

import pytest
import redis

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.store.backlog import read_backlog, stream_lengths
from recsvc.store.streams import FOLDIN_GROUP

pytestmark = pytest.mark.integration


def redis_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def test_the_lag_follows_the_oldest_entry_not_acknowledged_by_the_group(
        settings: Settings, client: redis.Redis) -> None:
    keys = schema.Keys(settings.key_prefix)
    now = redis_ms(client)
    first, second = keys.events(3), keys.events(40)
    # Entries accepted 30 s and 10 s ago (ids are Redis's clock at acceptance), one 20 s ago.
    client.xadd(first, {"customer": "c1"}, id=f"{now - 30_000}-0")
    client.xadd(first, {"customer": "c2"}, id=f"{now - 10_000}-0")
    client.xadd(second, {"customer": "c3"}, id=f"{now - 20_000}-0")
    assert read_backlog(client, keys).lag_seconds == pytest.approx(30, abs=2)  # no group yet

    for key in (first, second):
        client.xgroup_create(key, FOLDIN_GROUP, id="0")
    client.xreadgroup(FOLDIN_GROUP, "c", {first: ">"}, count=1)  # read, not acknowledged
    backlog = read_backlog(client, keys)
    assert backlog.pending == 1 and backlog.length == 3
    assert backlog.lag_seconds == pytest.approx(30, abs=2)  # pending still counts

    client.xack(first, FOLDIN_GROUP, f"{now - 30_000}-0")
    assert read_backlog(client, keys).lag_seconds == pytest.approx(20, abs=2)  # shard 40's
    client.xreadgroup(FOLDIN_GROUP, "c", {first: ">", second: ">"})
    assert read_backlog(client, keys).lag_seconds == pytest.approx(20, abs=2)
    for key, ids in ((first, [f"{now - 10_000}-0"]), (second, [f"{now - 20_000}-0"])):
        client.xack(key, FOLDIN_GROUP, *ids)
    done = read_backlog(client, keys)
    assert done.lag_seconds == 0.0 and done.pending == 0
    assert done.length == 3  # folded entries stay until a training run has read them


def test_stream_lengths_total_and_longest_shard(settings: Settings, client: redis.Redis) -> None:
    keys = schema.Keys(settings.key_prefix)
    for shard, count in ((0, 2), (17, 5)):
        for _ in range(count):
            client.xadd(keys.events(shard), {"customer": "c"})
    client.xadd(keys.decisions(9), {"customer": "c"})
    assert stream_lengths(client, keys) == {"events": (7, 5), "decisions": (1, 1)}
