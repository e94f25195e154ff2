"""The pipelined hot-path connection on a real Redis: ordering, errors, timeouts, reconnects."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest
import redis

from recsvc.store.transport.redis_pipeline import (
    ConnectionLost,
    ErrorReply,
    PipelinedRedis,
    ReplyTimeout,
)
from tests.integration.conftest import AioPipeline
from training import localredis


@pytest.mark.cluster
def test_many_concurrent_commands_get_their_own_replies(
        aio_pipeline: Callable[[], AioPipeline], filled: str) -> None:
    async def scenario() -> None:
        pipeline = aio_pipeline()
        fields = [f"f{random.randrange(600)}" for _ in range(2000)]  # some do not exist
        replies = await asyncio.gather(*(pipeline.execute("HGET", filled, f, timeout=2)
                                         for f in fields))
        for field, reply in zip(fields, replies, strict=True):
            assert reply == (None if int(field[1:]) >= 500 else f"v{field[1:]}".encode())
        assert await pipeline.execute("HMGET", filled, "f1", "nope", "f2", timeout=2) == \
            [b"v1", None, b"v2"]
        await pipeline.close()

    asyncio.run(scenario())


@pytest.mark.cluster
def test_an_error_reply_fails_only_its_own_command(aio_pipeline: Callable[[], AioPipeline],
                                                   filled: str, prefix: str) -> None:
    async def scenario() -> None:
        pipeline = aio_pipeline()
        results = await asyncio.gather(
            pipeline.execute("HGET", filled, "f1", timeout=2),
            pipeline.execute("HGET", f"{prefix}:s", "f1", timeout=2),  # WRONGTYPE
            pipeline.execute("HGET", filled, "f2", timeout=2),
            return_exceptions=True)
        assert results[0] == b"v1" and results[2] == b"v2"
        assert isinstance(results[1], ErrorReply) and "WRONGTYPE" in str(results[1])
        await pipeline.close()

    asyncio.run(scenario())


def test_a_cancelled_caller_does_not_shift_the_replies_of_others(
        redis_server: localredis.LocalRedis, filled: str) -> None:
    async def scenario() -> None:
        pipeline = PipelinedRedis(redis_server.url)
        first = asyncio.ensure_future(pipeline.execute("HGET", filled, "f1", timeout=2))
        second = asyncio.ensure_future(pipeline.execute("HGET", filled, "f2", timeout=2))
        await asyncio.sleep(0)  # both sent
        first.cancel()
        assert await second == b"v2"
        assert await pipeline.execute("HGET", filled, "f3", timeout=2) == b"v3"
        await pipeline.close()

    asyncio.run(scenario())


def test_a_batch_gets_every_reply_in_order_between_single_commands(
        redis_server: localredis.LocalRedis, filled: str, prefix: str) -> None:
    """execute_all: one future for the batch, error replies in their place; single commands
    and batches sent in the same loop turn, or a cancelled batch, shift nobody's replies."""
    async def scenario() -> None:
        pipeline = PipelinedRedis(redis_server.url)
        batch = [("HGET", filled, f"f{i}") for i in range(300)]
        batch[7] = ("HGET", f"{prefix}:s", "f1")  # WRONGTYPE
        before = asyncio.ensure_future(pipeline.execute("HGET", filled, "f1", timeout=2))
        replies = asyncio.ensure_future(pipeline.execute_all(batch, timeout=2))
        cancelled = asyncio.ensure_future(pipeline.execute_all(batch[:5], timeout=2))
        after = asyncio.ensure_future(pipeline.execute("HGET", filled, "f2", timeout=2))
        await asyncio.sleep(0)  # all four sent in one write
        cancelled.cancel()
        assert await before == b"v1" and await after == b"v2"
        got = await replies
        assert isinstance(got[7], ErrorReply) and "WRONGTYPE" in str(got[7])
        assert got[:7] + got[8:] == [f"v{i}".encode() for i in range(300) if i != 7]
        assert await pipeline.execute_all([], timeout=2) == []
        with pytest.raises(ErrorReply, match="WRONGTYPE"):  # execute_many raises the error
            await pipeline.execute_many(batch[5:9], timeout=2)
        assert await pipeline.execute("HGET", filled, "f3", timeout=2) == b"v3"
        await pipeline.close()

    asyncio.run(scenario())


def test_a_timeout_fails_the_waiting_commands_and_the_next_one_reconnects(
        redis_server: localredis.LocalRedis, client: redis.Redis, filled: str) -> None:
    async def scenario() -> None:
        pipeline = PipelinedRedis(redis_server.url)
        assert await pipeline.execute("HGET", filled, "f1", timeout=2) == b"v1"
        client.execute_command("CLIENT", "PAUSE", "300", "ALL")
        results = await asyncio.gather(
            pipeline.execute("HGET", filled, "f1", timeout=0.05),
            pipeline.execute("HGET", filled, "f2", timeout=2),
            return_exceptions=True)
        assert isinstance(results[0], ReplyTimeout)
        assert isinstance(results[1], ConnectionLost)  # same connection, closed with the first
        await asyncio.sleep(0.4)
        assert await pipeline.execute("HGET", filled, "f2", timeout=2) == b"v2"
        await pipeline.close()

    asyncio.run(scenario())


def test_url_user_password_and_database_are_used(redis_server: localredis.LocalRedis,
                                                 client: redis.Redis, prefix: str) -> None:
    user = f"{prefix}-user"
    client.execute_command("ACL", "SETUSER", user, "on", ">s3cret", "~*", "+@all")
    db3 = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/3")
    db3.set(f"{prefix}:k", "db3")
    base = redis_server.url.rsplit("/", 1)[0].replace("redis://", f"redis://{user}:s3cret@")

    async def scenario() -> None:
        assert await PipelinedRedis(base + "/3").execute("GET", f"{prefix}:k", timeout=2) == b"db3"
        assert await PipelinedRedis(base + "/0").execute("GET", f"{prefix}:k", timeout=2) is None
        with pytest.raises(ConnectionLost, match="refused the connection setup"):
            await PipelinedRedis(base.replace("s3cret", "nope") + "/3").execute(
                "GET", f"{prefix}:k", timeout=2)

    try:
        asyncio.run(scenario())
    finally:
        client.execute_command("ACL", "DELUSER", user)
        db3.delete(f"{prefix}:k")
        db3.close()


def test_nothing_listening_is_connection_lost() -> None:
    async def scenario() -> None:
        pipeline = PipelinedRedis(f"redis://127.0.0.1:{localredis.free_port()}/0")
        with pytest.raises(ConnectionLost, match="cannot connect"):
            await pipeline.execute("GET", "k", timeout=0.5)

    asyncio.run(scenario())


def test_a_reply_nobody_waits_for_closes_the_connection() -> None:
    """Not reachable with a healthy Redis; checked on the protocol object with a dummy transport."""
    from recsvc.store.transport.redis_pipeline import _Protocol

    class Transport(asyncio.Transport):
        aborted = False

        def abort(self) -> None:
            self.aborted = True

    async def scenario() -> None:
        protocol = _Protocol(asyncio.get_running_loop())
        transport = Transport()
        protocol.connection_made(transport)
        protocol.data_received(b"+OK\r\n")
        assert protocol.lost and transport.aborted

    asyncio.run(scenario())
