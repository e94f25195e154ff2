"""Reading a published model from Redis: the serving side of the layout in ``schema``.

Two readers share one breaker. ``RedisStore`` (redis-py, blocking) serves the model watcher's
thread: the active pointer and whole versions. ``RecordReader`` (asyncio, one pipelined
connection) serves requests on the event loop: one customer record per call. Every call is
bounded: explicit connect and socket timeouts of a few milliseconds, at most one retry and only
when the caller's deadline leaves room for it, and a short breaker that answers StoreError at once
after a failure so a dead Redis costs requests nothing (the watcher's next successful read of the
active pointer closes it again).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.core.errors import CorruptRecordError, DeadlineExceededError, StoreError
from recsvc.core.model import ModelVersion
from recsvc.ops import metrics
from recsvc.store.redis_pipeline import ConnectionLost, ErrorReply, PipelinedRedis, ReplyTimeout


class Breaker:
    """After a failure, Redis is skipped for ``pause`` seconds (or until a read succeeds).

    Written from the watcher thread and the event loop; each write is one float assignment.
    """

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self._down_until = 0.0

    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def open(self) -> None:
        self._down_until = time.monotonic() + self.pause
        metrics.breaker(True)

    def close(self) -> None:
        if self._down_until:
            metrics.breaker(False)
        self._down_until = 0.0


def connect(settings: Settings, timeout_ms: int | None = None) -> redis.Redis:
    """A client whose every call fails fast instead of waiting seconds (redis-py's defaults)."""
    timeout = (timeout_ms if timeout_ms is not None else settings.redis_timeout_ms) / 1000.0
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_pool_size,
        timeout=timeout,  # waiting for a free pooled connection is bounded too
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),  # retries are ours, bounded by the caller's deadline
    )
    return redis.Redis(connection_pool=pool)


class RedisStore:
    """The Redis implementation of ``Store`` (blocking; the watcher's thread)."""

    def __init__(self, client: redis.Redis, keys: schema.Keys, settings: Settings) -> None:
        self._client = client
        self._keys = keys
        self.breaker = Breaker(settings.redis_retry_after_failure_ms / 1000.0)

    @property
    def keys(self) -> schema.Keys:
        return self._keys

    def active_version(self) -> str | None:
        """Read the pointer. An answer proves Redis is back, so it also closes the breaker."""
        try:
            raw = self._client.get(self._keys.active)
        except redis.RedisError as exc:
            self.breaker.open()
            raise StoreError(f"cannot read the active version pointer: {exc}") from exc
        self.breaker.close()
        return None if raw is None else _bytes(raw).decode()

    def load_version(self, version: str) -> ModelVersion:
        """Read a whole version's item side (two round trips; once per version, not per call)."""
        try:
            meta_json, offers_json = self._client.mget(
                self._keys.meta(version), self._keys.offers(version)
            )
            if meta_json is None or offers_json is None:
                raise StoreError(f"model version {version} is incomplete or deleted")
            segment_count = len(json.loads(meta_json)["segments"])
            pipe = self._client.pipeline(transaction=False)
            for i in range(segment_count):
                pipe.hgetall(self._keys.segment(version, i))
            pipe.hgetall(self._keys.global_popularity(version))
            *segments, global_blob = pipe.execute()
        except redis.RedisError as exc:
            raise StoreError(f"cannot read model version {version}: {exc}") from exc
        try:
            return ModelVersion.from_blobs(version, _bytes(meta_json), _bytes(offers_json),
                                           segments, global_blob)
        except (ValueError, KeyError) as exc:
            raise CorruptRecordError(f"model version {version} does not decode: {exc}") from exc


class RecordReader:
    """The Redis implementation of ``Records``: one pipelined connection on the event loop."""

    def __init__(self, keys: schema.Keys, settings: Settings, breaker: Breaker) -> None:
        self._redis = PipelinedRedis(settings.redis_url)
        self._keys = keys
        self._timeout = settings.redis_timeout_ms / 1000.0
        self._breaker = breaker

    async def _call(self, deadline: float, *command: bytes | str) -> Any:
        """Run ``command``; retry once if the deadline leaves room for another timeout."""
        if not self._breaker.available():
            metrics.redis_error("breaker_open")
            raise StoreError("Redis marked unavailable after a recent failure")
        for attempt in (1, 2):
            started = time.monotonic()
            remaining = deadline - started
            if remaining <= 0:
                raise DeadlineExceededError("no time left before reading Redis")
            try:
                reply = await self._redis.execute(*command, timeout=min(self._timeout, remaining))
                metrics.redis_call(str(command[0]), time.monotonic() - started)
                return reply
            except ConnectionLost as exc:
                metrics.redis_error("timeout" if isinstance(exc, ReplyTimeout) else "connection")
                if attempt == 2 or deadline - time.monotonic() < self._timeout:
                    self._breaker.open()
                    raise StoreError(f"Redis did not answer: {exc}") from exc
            except ErrorReply as exc:
                metrics.redis_error("reply")
                raise StoreError(f"Redis error: {exc}") from exc
        raise AssertionError("unreachable")

    async def customer_record(self, version: str, customer_id: str,
                              deadline: float) -> bytes | None:
        raw: bytes | None = await self._call(deadline, "HGET", self._keys.customers(version),
                                             customer_id)
        return raw

    async def customer_records(
        self, version: str, customer_ids: Sequence[str], deadline: float
    ) -> list[bytes | None]:
        values: list[bytes | None] = await self._call(
            deadline, "HMGET", self._keys.customers(version), *customer_ids)
        return values

    async def close(self) -> None:
        await self._redis.close()


def _bytes(value: bytes | str) -> bytes:
    """redis-py types replies as bytes or str; this client never decodes, so they are bytes."""
    return value if isinstance(value, bytes) else value.encode()
