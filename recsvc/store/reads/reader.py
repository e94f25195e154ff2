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

import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.core.errors import CorruptRecordError, DeadlineExceededError, StoreError
from recsvc.core.meta import MetaError, ModelMeta
from recsvc.core.model import ModelVersion
from recsvc.decisioning.live import LiveData, Poll
from recsvc.ops import metrics
from recsvc.store.control import budgets as budget_scripts
from recsvc.store.control.live import load_live, poll
from recsvc.store.feedback.backlog import stream_lengths
from recsvc.store.transport.redis_pipeline import (
    ErrorReply,
    PipelinedRedis,
    PipelineError,
    ReplyTimeout,
)

_RESERVE_SHA = hashlib.sha1(budget_scripts.RESERVE_LUA.encode()).hexdigest()
LIVE_TTL_SECONDS = 90 * 86_400  # live_ttl_days of docs/DESIGN.md section 6, refreshed on write


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
    """A client whose every call fails fast instead of waiting seconds (redis-py's defaults).

    With ``redis_cluster``, redis-py's cluster client: it learns the slot map from the node the
    URL names, sends each command to the master of its key's slot and follows MOVED. It speaks
    the same commands (typed here as ``redis.Redis``); what differs on a cluster, that a script
    or a transaction must stay on one slot, the key layout takes care of (``schema.Keys``).
    """
    timeout = (timeout_ms if timeout_ms is not None else settings.redis_timeout_ms) / 1000.0
    if settings.redis_cluster:
        cluster = RedisCluster.from_url(
            settings.redis_url,
            max_connections=settings.redis_pool_size,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        return cast(redis.Redis, cluster)
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
        self._probe = 0  # the shard whose records the next cluster version check looks at
        self.breaker = Breaker(settings.redis_retry_after_failure_ms / 1000.0)
        self._events_limit = settings.events_max_per_shard

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

    def version_intact(self, version: str) -> bool:
        """Meta and customer records still exist (one round trip; once per poll).

        On a cluster the records are 64 hashes on several masters: each poll checks the next
        shard's, and a master that cannot be reached then says nothing about the version (its
        customers' answers degrade on their own; the control slot's master answered the poll).
        Tying the check to one master would mark the whole server unhealthy when that one
        master is lost."""
        if self._keys.cluster:
            return self._cluster_version_intact(version)
        try:
            present = self._client.exists(self._keys.meta(version),
                                          self._keys.customer_hash(version, 0))
        except redis.RedisError as exc:
            self.breaker.open()
            raise StoreError(f"cannot check model version {version}: {exc}") from exc
        return int(present) == 2

    def _cluster_version_intact(self, version: str) -> bool:
        shard, self._probe = self._probe, (self._probe + 1) % schema.SHARDS
        try:
            if not self._client.exists(self._keys.meta(version)):
                return False
        except redis.RedisError as exc:
            self.breaker.open()
            raise StoreError(f"cannot check model version {version}: {exc}") from exc
        try:
            return bool(self._client.exists(self._keys.customer_hash(version, shard)))
        except redis.RedisError:
            return True  # that shard's master is away: no news about the version

    def poll(self) -> Poll:
        """The active pointer and the live revision counters in one round trip; like
        ``active_version`` an answer closes the breaker."""
        try:
            result = poll(self._client, self._keys)
        except redis.RedisError as exc:
            self.breaker.open()
            raise StoreError(f"cannot read the active version pointer: {exc}") from exc
        self.breaker.close()
        return result

    def load_live(self) -> LiveData:
        return load_live(self._client, self._keys)

    def record_stream_metrics(self) -> None:
        """Export the event and decision streams' lengths (one round trip). Metrics only: a
        failure raises StoreError but leaves the breaker alone."""
        try:
            lengths = stream_lengths(self._client, self._keys)
        except redis.RedisError as exc:
            raise StoreError(f"cannot read the stream lengths: {exc}") from exc
        metrics.streams(lengths, self._events_limit)

    def load_version(self, version: str) -> ModelVersion:
        """Read a whole version's item side (two round trips; once per version, not per call)."""
        try:
            meta_json, offers_json = self._client.mget(
                self._keys.meta(version), self._keys.offers(version)
            )
            if meta_json is None or offers_json is None:
                raise StoreError(f"model version {version} is incomplete or deleted")
            try:
                meta = ModelMeta.from_json(_bytes(meta_json))
            except MetaError as exc:
                raise CorruptRecordError(f"model version {version}: {exc}") from exc
            pipe = self._client.pipeline(transaction=False)
            for i in range(len(meta.segments)):
                pipe.hgetall(self._keys.segment(version, i))
            pipe.hgetall(self._keys.global_popularity(version))
            *segments, global_blob = pipe.execute()
        except redis.RedisError as exc:
            raise StoreError(f"cannot read model version {version}: {exc}") from exc
        try:
            return ModelVersion.from_blobs(version, meta, _bytes(offers_json),
                                           segments, global_blob)
        except (ValueError, KeyError) as exc:
            raise CorruptRecordError(f"model version {version} does not decode: {exc}") from exc


class RecordReader:
    """The Redis implementation of ``Records``: one pipelined connection on the event loop."""

    def __init__(self, keys: schema.Keys, settings: Settings, breaker: Breaker) -> None:
        self._redis = PipelinedRedis(settings.redis_url)
        # Writes after the answer (decision log, contacts) on a connection of their own, with a
        # longer timeout: a slow write reply must never close the connection reads wait on.
        self._writes = PipelinedRedis(settings.redis_url)
        self._write_timeout = settings.feedback_timeout_ms / 1000.0
        self._keys = keys
        self._timeout = settings.redis_timeout_ms / 1000.0
        self._decision_log_max = str(settings.decision_log_max_per_shard)
        self._breaker = breaker

    async def _call(self, deadline: float, *command: bytes | str) -> Any:
        """Run ``command``; retry once if the deadline leaves room for another timeout."""
        return await self._bounded(deadline, str(command[0]),
                                   lambda timeout: self._redis.execute(*command, timeout=timeout))

    async def _calls(self, deadline: float, commands: list[tuple[bytes | str, ...]]) -> list[Any]:
        """Several commands in one round trip, with ``_call``'s retry and breaker."""
        replies: list[Any] = await self._bounded(
            deadline, "pipeline",
            lambda timeout: self._redis.execute_many(commands, timeout=timeout))
        return replies

    async def _bounded(self, deadline: float, label: str,
                       send: Callable[[float], Awaitable[Any]]) -> Any:
        """The one retry and breaker rule of every read (``attempt_timeout``, ``give_up``)."""
        for attempt in (1, 2):
            started = time.monotonic()
            try:
                reply = await send(attempt_timeout(self._breaker, deadline, self._timeout))
                metrics.redis_call(label, time.monotonic() - started)
                return reply
            except PipelineError as exc:
                failure = give_up(exc, attempt, deadline, self._timeout, self._breaker)
                if failure is not None:
                    raise failure from exc
        raise AssertionError("unreachable")

    async def customer_state(self, version: str, customer_id: str, deadline: float,
                             challenger: str = "") -> State:
        """The customer's record and live hash (and the challenger version's record): one
        pipeline, one round trip."""
        return state_of(await self._calls(
            deadline, state_commands(self._keys, version, customer_id, challenger)))

    async def customer_states(self, version: str, customer_ids: Sequence[str], deadline: float,
                              challenger: str = "") -> list[State]:
        """Records (one HMGET per version) and live hashes of a batch chunk, in one round trip."""
        return states_of(await self._calls(
            deadline, states_commands(self._keys, version, customer_ids, challenger)))

    async def reserve(self, day: str, segment: str, limit: int,
                      candidates: list[tuple[str, bool]], deadline: float) -> set[str]:
        """Run the budget reserve script; the budgeted offers granted a unit."""
        evalsha, evaluate = reserve_commands(self._keys, day, segment, limit, candidates)
        try:
            granted = await self._call(deadline, *evalsha)
        except StoreError as exc:
            if "NOSCRIPT" not in str(exc):
                raise
            granted = await self._call(deadline, *evaluate)
        return {bytes(g).decode() for g in granted or []}

    def log_decision(self, customer_id: str, fields: list[bytes | str]) -> None:
        """After the answer, not awaited: one entry of the customer's shard's decision log,
        the stream trimmed to about ``decision_log_max_per_shard`` entries."""
        if self._breaker.available():  # Redis known down: not one connect attempt per answer
            self._writes.send_nowait(
                *decision_log_command(self._keys, customer_id, self._decision_log_max, fields),
                timeout=self._write_timeout)

    def record_contact(self, customer_id: str, channel: str, now: float, keep: int) -> None:
        """After the answer, not awaited: a contact on ``channel`` (contacts counted on serve)."""
        if self._breaker.available():
            self._writes.send_nowait(
                *contact_command(self._keys, customer_id, channel, now, keep),
                timeout=self._write_timeout)

    @property
    def writes_dropped(self) -> int:
        """Writes after the answer (decision log, contacts) that failed: a metric to watch."""
        return self._writes.dropped

    async def close(self) -> None:
        await self._redis.close()
        await self._writes.close()


Command = tuple[bytes | str, ...]
# A customer's record, live hash and, while an experiment runs, the challenger version's record.
State = tuple[bytes | None, dict[bytes, bytes], bytes | None]


def state_commands(keys: schema.Keys, version: str, customer_id: str, challenger: str = ""
                   ) -> list[Command]:
    """A customer's record and live hash (one pipeline); with a ``challenger`` version, its
    record of the customer too (the same pipeline: never a second round trip)."""
    shard = schema.shard_of(customer_id)  # every key here is on the shard's slot (a cluster)
    commands: list[Command] = [("HGET", keys.customer_hash(version, shard), customer_id),
                               ("HGETALL", keys.live_in(shard, customer_id))]
    if challenger:
        commands.append(("HGET", keys.customer_hash(challenger, shard), customer_id))
    return commands


def states_commands(keys: schema.Keys, version: str, customer_ids: Sequence[str],
                    challenger: str = "") -> list[Command]:
    """A batch chunk's records (one HMGET) and live hashes (one pipeline); with a
    ``challenger`` version, one HMGET of its records last."""
    commands: list[Command] = [("HMGET", keys.customers(version), *customer_ids),
                               *(("HGETALL", keys.live(c)) for c in customer_ids)]
    if challenger:
        commands.append(("HMGET", keys.customers(challenger), *customer_ids))
    return commands


def sharded_states_commands(keys: schema.Keys, version: str, customer_ids: Sequence[str],
                            challenger: str = "") -> tuple[list[list[Command]], list[list[int]]]:
    """``states_commands`` on a cluster: per shard of the chunk, one call on the shard's slot
    (one HMGET of the shard's hash, the live hashes, the challenger's HMGET), and the positions
    in ``customer_ids`` of that call's customers."""
    members: dict[int, list[int]] = {}
    for i, customer_id in enumerate(customer_ids):
        members.setdefault(schema.shard_of(customer_id), []).append(i)
    calls: list[list[Command]] = []
    for shard, positions in members.items():
        ids = [customer_ids[i] for i in positions]
        call: list[Command] = [("HMGET", keys.customer_hash(version, shard), *ids),
                               *(("HGETALL", keys.live_in(shard, c)) for c in ids)]
        if challenger:
            call.append(("HMGET", keys.customer_hash(challenger, shard), *ids))
        calls.append(call)
    return calls, list(members.values())


def sharded_states_of(replies: list[list[Any]], positions: list[list[int]], count: int
                      ) -> list[State]:
    """The states of ``sharded_states_commands``' calls back in the customers' order."""
    states: list[State | None] = [None] * count
    for call_replies, members in zip(replies, positions, strict=True):
        for i, state in zip(members, states_of(call_replies), strict=True):
            states[i] = state
    if None in states:
        raise AssertionError("a customer of the chunk was in no call")
    return cast(list[State], states)


def state_of(replies: list[Any]) -> State:
    raw, live, *challenger = replies
    return raw, _pairs(live), challenger[0] if challenger else None


def states_of(replies: list[Any]) -> list[State]:
    n = len(replies[0])
    lives = replies[1:n + 1]
    challenger = replies[n + 1] if len(replies) > n + 1 else [None] * n
    return [(raw, _pairs(live), other)
            for raw, live, other in zip(replies[0], lives, challenger, strict=True)]


def reserve_commands(keys: schema.Keys, day: str, segment: str, limit: int,
                     candidates: list[tuple[str, bool]]) -> tuple[Command, Command]:
    """The budget reserve script by its hash, and whole (when Redis answers NOSCRIPT)."""
    args = budget_scripts.reserve_args(day, segment, limit, candidates)
    return (("EVALSHA", _RESERVE_SHA, "1", keys.budgets, *args),
            ("EVAL", budget_scripts.RESERVE_LUA, "1", keys.budgets, *args))


def decision_log_command(keys: schema.Keys, customer_id: str, max_per_shard: str,
                         fields: list[bytes | str]) -> Command:
    """One entry of the customer's shard's decision log, trimmed to about ``max_per_shard``."""
    return ("XADD", keys.decisions(schema.shard_of(customer_id)), "MAXLEN", "~", max_per_shard,
            "*", *fields)


def contact_command(keys: schema.Keys, customer_id: str, channel: str, now: float,
                    keep: int) -> Command:
    return ("EVAL", budget_scripts.CONTACT_LUA, "1", keys.live(customer_id), f"c:{channel}",
            f"{now:.0f}", str(keep), str(LIVE_TTL_SECONDS))


def attempt_timeout(breaker: Breaker, deadline: float, timeout: float) -> float:
    """The timeout of the next attempt at a read; StoreError at once while the breaker is
    open, DeadlineExceededError when the caller's deadline has passed."""
    if not breaker.available():
        metrics.redis_error("breaker_open")
        raise StoreError("Redis marked unavailable after a recent failure")
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlineExceededError("no time left before reading Redis")
    return min(timeout, remaining)


def give_up(exc: PipelineError, attempt: int, deadline: float, timeout: float,
            breaker: Breaker) -> StoreError | None:
    """What a failed attempt means: the StoreError to raise, or None to try once more (only
    after a first lost connection, and only when the deadline leaves room for another)."""
    if isinstance(exc, ErrorReply):
        metrics.redis_error("reply")
        return StoreError(f"Redis error: {exc}")
    metrics.redis_error("timeout" if isinstance(exc, ReplyTimeout) else "connection")
    if attempt == 2 or deadline - time.monotonic() < timeout:
        breaker.open()
        return StoreError(f"Redis did not answer: {exc}")
    return None


def _pairs(reply: Any) -> dict[bytes, bytes]:
    """HGETALL's flat [field, value, ...] reply (RESP2) as a dict; most live hashes are empty."""
    if not reply:
        return {}
    if isinstance(reply, dict):
        return reply
    items = iter(reply)
    return dict(zip(items, items, strict=True))


def _bytes(value: bytes | str) -> bytes:
    """redis-py types replies as bytes or str; this client never decodes, so they are bytes."""
    return value if isinstance(value, bytes) else value.encode()
