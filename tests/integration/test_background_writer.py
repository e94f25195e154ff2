"""The decision log's writer thread on a real Redis: every entry lands, in order, in few writes;
failures are counted, never raised; close sends what is pending."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from recsvc.store.transport.background_writer import BackgroundWriter
from recsvc.store.transport.redis_pipeline import Endpoint
from training import localredis

pytestmark = pytest.mark.integration


def _eventually(check: object, within: float = 2.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.01)


def _calls(client: redis.Redis, command: str) -> int:
    stats = client.info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0))


def test_entries_from_many_threads_all_land_in_order_in_few_writes(
        redis_server: localredis.LocalRedis, prefix: str) -> None:
    client = redis.Redis.from_url(redis_server.url)
    writer = BackgroundWriter(Endpoint.of(redis_server.url), timeout=2.0, gather=0.02)
    key = f"{prefix}:list"

    def append(thread: int) -> None:
        for i in range(200):
            writer.submit(("RPUSH", key, f"{thread}:{i}"))

    threads = [threading.Thread(target=append, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _eventually(lambda: client.llen(key) == 800)
    landed = [v.decode().split(":") for v in client.lrange(key, 0, -1)]
    for thread in range(4):  # each thread's entries in the order it submitted them
        assert [int(i) for t, i in landed if t == str(thread)] == list(range(200))
    assert writer.dropped == 0
    writer.close()


def test_a_batch_is_one_write(redis_server: localredis.LocalRedis, prefix: str) -> None:
    client = redis.Redis.from_url(redis_server.url)
    writer = BackgroundWriter(Endpoint.of(redis_server.url), timeout=2.0, gather=0.2)
    before = client.info("stats")["total_net_input_bytes"], _calls(client, "rpush")
    reads_before = int(client.info("stats").get("total_reads_processed", 0))
    for i in range(50):
        writer.submit(("RPUSH", f"{prefix}:one", str(i)))
    _eventually(lambda: client.llen(f"{prefix}:one") == 50)
    assert _calls(client, "rpush") - before[1] == 50
    # 50 commands, one socket read on Redis's side for the writer (the test's own INFO and
    # LLEN calls add theirs): far fewer than one per command.
    reads = int(client.info("stats").get("total_reads_processed", 0)) - reads_before
    assert reads < 25
    writer.close()


def test_error_replies_are_counted_and_the_stream_stays_in_step(
        redis_server: localredis.LocalRedis, prefix: str) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.set(f"{prefix}:s", "a string")
    writer = BackgroundWriter(Endpoint.of(redis_server.url), timeout=2.0, gather=0.01)
    writer.submit(("RPUSH", f"{prefix}:s", "x"))  # WRONGTYPE
    writer.submit(("RPUSH", f"{prefix}:ok", "1"))
    _eventually(lambda: client.llen(f"{prefix}:ok") == 1)
    _eventually(lambda: writer.dropped == 1)
    writer.submit(("RPUSH", f"{prefix}:ok", "2"))
    _eventually(lambda: client.llen(f"{prefix}:ok") == 2)
    assert writer.dropped == 1
    writer.close()


def test_a_dead_redis_drops_and_counts_and_a_restarted_one_is_written_again() -> None:
    own = localredis.start()
    try:
        writer = BackgroundWriter(Endpoint.of(own.url), timeout=0.3, gather=0.01)
        writer.submit(("SET", "k", "before"))
        _eventually(lambda: redis.Redis.from_url(own.url).get("k") == b"before")
        own.kill()
        for i in range(5):
            writer.submit(("SET", "k", str(i)))
        _eventually(lambda: writer.dropped == 5 and writer.pending == 0)
        own.restart()
        writer.submit(("SET", "k", "after"))
        _eventually(lambda: redis.Redis.from_url(own.url).get("k") == b"after")
        assert writer.dropped == 5
        writer.close()
    finally:
        own.stop()


def test_a_stalled_redis_holds_at_most_max_pending(
        redis_server: localredis.LocalRedis, prefix: str) -> None:
    client = redis.Redis.from_url(redis_server.url)
    writer = BackgroundWriter(Endpoint.of(redis_server.url), timeout=2.0, gather=0.01,
                              max_pending=10)
    writer.submit(("PING",))
    _eventually(lambda: writer.pending == 0)
    client.execute_command("CLIENT", "PAUSE", "500", "WRITE")
    writer.submit(("RPUSH", f"{prefix}:p", "first"))  # the writer waits on its reply
    time.sleep(0.1)
    for i in range(15):
        writer.submit(("RPUSH", f"{prefix}:p", str(i)))
    assert writer.dropped == 5  # the newest beyond 10 waiting
    _eventually(lambda: client.llen(f"{prefix}:p") == 11)
    writer.close()


def test_close_sends_what_is_pending(redis_server: localredis.LocalRedis, prefix: str) -> None:
    client = redis.Redis.from_url(redis_server.url)
    writer = BackgroundWriter(Endpoint.of(redis_server.url), timeout=2.0, gather=10.0)
    for i in range(20):
        writer.submit(("RPUSH", f"{prefix}:c", str(i)))
    time.sleep(0.05)  # the writer is in its pause now
    started = time.monotonic()
    writer.close()
    assert time.monotonic() - started < 1.0  # long before the gather would have ended
    assert client.llen(f"{prefix}:c") == 20
    writer.submit(("RPUSH", f"{prefix}:c", "late"))
    assert writer.dropped == 1
