"""The thread-pool model's per-thread Redis connections on a real Redis: replies in order across
threads, owed write replies, error replies, timeouts, reconnects, the URL's user and database."""

from __future__ import annotations

import random
import threading
import time

import pytest
import redis

from recsvc.store.transport.blocking_pipeline import ThreadPipelines
from recsvc.store.transport.redis_pipeline import ConnectionLost, ErrorReply, ReplyTimeout
from tests.integration.conftest import ThreadPipeline
from training import localredis

pytestmark = pytest.mark.integration


@pytest.mark.cluster
def test_threads_get_their_own_replies(thread_pipelines: ThreadPipeline, filled: str) -> None:
    pipelines = thread_pipelines
    wrong: list[tuple[str, object]] = []

    def ask(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(300):
            fields = [f"f{rng.randrange(600)}" for _ in range(3)]  # some do not exist
            replies = pipelines.execute_many([("HGET", filled, f) for f in fields], timeout=2)
            for field, reply in zip(fields, replies, strict=True):
                if reply != (None if int(field[1:]) >= 500 else f"v{field[1:]}".encode()):
                    wrong.append((field, reply))

    threads = [threading.Thread(target=ask, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong


def test_writes_sent_without_waiting_are_applied_and_their_replies_skipped(
        redis_server: localredis.LocalRedis, client: redis.Redis, filled: str,
        prefix: str) -> None:
    pipelines = ThreadPipelines(redis_server.url)
    for i in range(50):
        pipelines.send_nowait(("RPUSH", f"{prefix}:list", str(i)), timeout=2)
    pipelines.send_nowait(("HGET", f"{prefix}:s", "x"), timeout=2)  # WRONGTYPE: a failed write
    assert pipelines.execute_many([("HGET", filled, "f7")], timeout=2) == [b"v7"]
    assert client.lrange(f"{prefix}:list", 0, -1) == [str(i).encode() for i in range(50)]
    assert pipelines.dropped == 1
    pipelines.close()


def test_an_error_reply_fails_the_call_and_keeps_the_connection_in_step(
        redis_server: localredis.LocalRedis, filled: str, prefix: str) -> None:
    pipelines = ThreadPipelines(redis_server.url)
    with pytest.raises(ErrorReply, match="WRONGTYPE"):
        pipelines.execute_many([("HGET", filled, "f1"), ("HGET", f"{prefix}:s", "f1"),
                                ("HGET", filled, "f2")], timeout=2)
    assert pipelines.execute_many([("HGET", filled, "f3")], timeout=2) == [b"v3"]
    pipelines.close()


def test_a_timeout_closes_the_connection_and_the_next_call_reconnects(
        redis_server: localredis.LocalRedis, client: redis.Redis, filled: str) -> None:
    pipelines = ThreadPipelines(redis_server.url)
    assert pipelines.execute_many([("HGET", filled, "f1")], timeout=2) == [b"v1"]
    client.execute_command("CLIENT", "PAUSE", "300", "ALL")
    started = time.monotonic()
    with pytest.raises(ReplyTimeout):
        pipelines.execute_many([("HGET", filled, "f1")], timeout=0.05)
    assert time.monotonic() - started < 0.25  # the kernel's receive timeout, not Redis's pause
    time.sleep(0.4)
    assert pipelines.execute_many([("HGET", filled, "f2")], timeout=2) == [b"v2"]
    pipelines.close()


def test_a_dead_redis_is_connection_lost_and_a_restarted_one_is_used_again() -> None:
    own = localredis.start()
    try:
        pipelines = ThreadPipelines(own.url)
        assert pipelines.execute_many([("PING",)], timeout=2) == [b"PONG"]
        own.kill()
        with pytest.raises(ConnectionLost):
            pipelines.execute_many([("PING",)], timeout=0.2)
        own.restart()
        assert pipelines.execute_many([("PING",)], timeout=2) == [b"PONG"]
        pipelines.close()
    finally:
        own.stop()


def test_url_user_password_and_database_are_used(redis_server: localredis.LocalRedis,
                                                 client: redis.Redis, prefix: str) -> None:
    user = f"{prefix}-buser"
    client.execute_command("ACL", "SETUSER", user, "on", ">s3cret", "~*", "+@all")
    db3 = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/3")
    db3.set(f"{prefix}:k", "db3")
    base = redis_server.url.rsplit("/", 1)[0].replace("redis://", f"redis://{user}:s3cret@")
    try:
        assert ThreadPipelines(base + "/3").execute_many([("GET", f"{prefix}:k")],
                                                         timeout=2) == [b"db3"]
        with pytest.raises(ConnectionLost, match="setup"):
            ThreadPipelines(base.replace("s3cret", "wrong") + "/3").execute_many(
                [("GET", f"{prefix}:k")], timeout=2)
    finally:
        client.execute_command("ACL", "DELUSER", user)
        db3.delete(f"{prefix}:k")


def test_writes_owed_when_the_next_read_times_out_are_counted_dropped(
        redis_server: localredis.LocalRedis, client: redis.Redis, filled: str,
        prefix: str) -> None:
    """Their replies can no longer be read (the connection is closed): lost unanswered."""
    pipelines = ThreadPipelines(redis_server.url)
    assert pipelines.execute_many([("HGET", filled, "f1")], timeout=2) == [b"v1"]
    client.execute_command("CLIENT", "PAUSE", "300", "ALL")  # the writes wait unanswered
    for i in range(3):
        pipelines.send_nowait(("RPUSH", f"{prefix}:owed", str(i)), timeout=2)
    with pytest.raises(ReplyTimeout):
        pipelines.execute_many([("HGET", filled, "f1")], timeout=0.05)
    assert pipelines.dropped == 3
    time.sleep(0.4)
    client.delete(f"{prefix}:owed")
    pipelines.close()


def test_writes_owed_to_a_redis_that_died_are_counted_dropped() -> None:
    own = localredis.start()
    try:
        pipelines = ThreadPipelines(own.url)
        assert pipelines.execute_many([("PING",)], timeout=2) == [b"PONG"]
        own.kill()
        pipelines.send_nowait(("SET", "k", "v"), timeout=2)  # the kernel may still take it
        pipelines.send_nowait(("SET", "k", "w"), timeout=2)
        with pytest.raises(ConnectionLost):
            pipelines.execute_many([("PING",)], timeout=0.2)
        assert pipelines.dropped == 2
        pipelines.close()
    finally:
        own.stop()


def test_a_connection_made_while_closing_is_closed_too(
        redis_server: localredis.LocalRedis, client: redis.Redis) -> None:
    """A thread still connecting at shutdown (its SELECT waits on a paused Redis) does not keep
    a connection that ``close`` never saw."""
    pipelines = ThreadPipelines(redis_server.url.rsplit("/", 1)[0] + "/5")
    outcome: list[object] = []

    def connect() -> None:
        try:
            outcome.append(pipelines.execute_many([("PING",)], timeout=2))
        except ConnectionLost as exc:
            outcome.append(exc)

    client.execute_command("CLIENT", "PAUSE", "400", "ALL")
    thread = threading.Thread(target=connect)
    thread.start()
    time.sleep(0.15)  # connected, waiting for SELECT's reply
    pipelines.close()
    thread.join()
    assert isinstance(outcome[0], ConnectionLost)
    time.sleep(0.1)
    assert not [c for c in client.client_list() if c["db"] == "5"]


def test_the_timeout_bounds_replies_that_arrive_in_pieces(
        redis_server: localredis.LocalRedis, prefix: str) -> None:
    """The kernel's receive timeout restarts with every read: replies arriving 50 ms apart
    (each BLPOP gives up on its own) must still fail the call at its timeout, as the event
    loop's pipeline does."""
    pipelines = ThreadPipelines(redis_server.url)
    try:
        started = time.monotonic()
        with pytest.raises(ReplyTimeout):
            pipelines.execute_many([("BLPOP", f"{prefix}:none", "0.05")] * 4, timeout=0.12)
        assert time.monotonic() - started < 0.2  # the last reply comes at 0.2 s
    finally:
        pipelines.close()
