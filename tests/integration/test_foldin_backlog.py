"""The fold-in group's backlog read from a real Redis: undelivered and pending entries count,
acknowledged ones do not, and ages are on Redis's clock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.store.feedback.backlog import read_backlog, stream_lengths
from recsvc.store.feedback.streams import FOLDIN_GROUP
from tests.integration import observe
from training import localredis

pytestmark = pytest.mark.integration


def redis_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


@pytest.mark.cluster
def test_the_lag_follows_the_oldest_entry_not_acknowledged_by_the_group(
        settings: Settings, client: redis.Redis) -> None:
    keys = schema.keys_for(settings)
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
    for key in (first, second):  # one stream per call: on a cluster they are on two slots
        client.xreadgroup(FOLDIN_GROUP, "c", {key: ">"})
    assert read_backlog(client, keys).lag_seconds == pytest.approx(20, abs=2)
    for key, ids in ((first, [f"{now - 10_000}-0"]), (second, [f"{now - 20_000}-0"])):
        client.xack(key, FOLDIN_GROUP, *ids)
    done = read_backlog(client, keys)
    assert done.lag_seconds == 0.0 and done.pending == 0
    assert done.length == 3  # folded entries stay until a training run has read them


@pytest.mark.cluster
def test_stream_lengths_total_and_longest_shard(settings: Settings, client: redis.Redis) -> None:
    keys = schema.keys_for(settings)
    for shard, count in ((0, 2), (17, 5)):
        for _ in range(count):
            client.xadd(keys.events(shard), {"customer": "c"})
    client.xadd(keys.decisions(9), {"customer": "c"})
    assert stream_lengths(client, keys) == {"events": (7, 5), "decisions": (1, 1)}


def test_a_consumer_started_before_redis_says_so_in_its_metrics_then_catches_up(
        tmp_path: Path) -> None:
    """Redis down: redis_up 0, failures of kind redis counted, no lag series (unknown is not
    0), one warning line per 10 s; Redis up: the consumer starts folding, lag 0."""
    redis_port, metrics_port = localredis.free_port(), localredis.free_port()
    env = dict(os.environ, RECSVC_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
               RECSVC_KEY_PREFIX="late", RECSVC_HOST="127.0.0.1",
               RECSVC_FOLDIN_METRICS_PORT=str(metrics_port))
    with open(tmp_path / "consumer.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "recsvc", "feedback", "consume"],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    server = None
    try:
        down = observe.wait_for_metrics(metrics_port, lambda m: observe.total(
            m, "recsvc_foldin_failures_total", kind="redis") >= 2)
        assert down[("recsvc_redis_up", ())] == 0
        assert ("recsvc_feedback_lag_seconds", ()) not in down
        server = localredis.start(port=redis_port)
        client = redis.Redis(port=redis_port)
        up = observe.wait_for_metrics(metrics_port, lambda m: m.get(("recsvc_redis_up", ())) == 1
                              and bool(client.exists(schema.Keys("late").events(0))))
        assert up[("recsvc_feedback_lag_seconds", ())] == 0
        client.xadd(schema.Keys("late").events(5), {"customer": "c", "event": "churn"})
        observe.wait_for_metrics(metrics_port, lambda m: m.get(
            ("recsvc_foldin_events_total", (("outcome", "no_effect"),))) == 1)
        client.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if server is not None:
            server.stop()
    warnings = [line for line in (tmp_path / "consumer.log").read_text().splitlines()
                if "a batch failed (redis)" in line]
    assert 1 <= len(warnings) <= 2, warnings  # a line per 10 s, not one per retry
