"""The durable feedback log's executors: a batch's script calls sent in one round trip.

The calls themselves (one ``RECORD_EVENTS`` call per shard the batch touches, keys and
arguments) are built without I/O in ``store/feedback/event_script.py``; this module only sends them.
``EventLog`` runs them on the event loop (one pipelined connection: the whole batch in one
write, one future) and ``record_sync`` with blocking redis-py (one pipeline: a threaded server
and the tools). Both load the script again when Redis answers NOSCRIPT (after a restart) and
send again only the calls that did not run. On a Redis Cluster the event loop's calls go each
to the master of its shard's slot (``cluster_pipeline``), all at once, and a call that met
NOSCRIPT is sent again as EVAL (which loads the script on that master); redis-py's cluster
pipeline routes the blocking ones.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any

import redis

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.core.errors import StoreError
from recsvc.feedback.events import Event
from recsvc.store.feedback.event_script import (
    DUPLICATE,
    LOG_FULL,
    LOG_FULL_REASON,
    RECORD_EVENTS,
    RECORD_EVENTS_SHA,
    RECORDED,
    STREAM_FIELDS,
    Bounds,
    Outcome,
    ShardCall,
    outcomes_of,
    plan_calls,
)
from recsvc.store.transport.cluster_pipeline import ClusterPipelines
from recsvc.store.transport.redis_pipeline import ErrorReply, PipelinedRedis, PipelineError

# Re-exported: the writers' callers (api, tools, tests) import the log's names from here.
__all__ = ["DUPLICATE", "LOG_FULL", "LOG_FULL_REASON", "RECORDED", "RECORD_EVENTS",
           "RECORD_EVENTS_SHA", "STREAM_FIELDS", "Bounds", "EventLog", "Outcome", "ShardCall",
           "plan_calls", "record_sync", "run_sync", "script_args"]


def script_args(keys: schema.Keys, bounds: Bounds, now: float, event: Event) -> list[str]:
    """numkeys, KEYS and ARGV of RECORD_EVENTS for one ``feedback.events.Event``."""
    return plan_calls(keys, bounds, now, [event])[0].args


def _no_script(reply: Any) -> bool:
    return isinstance(reply, ErrorReply) and str(reply).startswith("NOSCRIPT")


class EventLog:
    """Records batches of events on the event loop: one pipelined write per batch."""

    def __init__(self, keys: schema.Keys, settings: Settings) -> None:
        self._redis = PipelinedRedis(settings.redis_url)
        # On a cluster each shard's call goes to the master of its slot (cluster_pipeline).
        self._cluster = ClusterPipelines(
            settings.redis_url, settings.redis_retry_after_failure_ms / 1000.0,
            max(settings.redis_timeout_ms, 250) / 1000.0) if settings.redis_cluster else None
        self.keys = keys
        self.bounds = Bounds.from_settings(settings)
        self._timeout = settings.feedback_timeout_ms / 1000.0

    async def record(self, events: Sequence[Event], deadline: float,
                     on_accept: Sequence[tuple[str, bool]] = ()) -> list[Outcome]:
        """Run the batch's calls; one Outcome per event, in order. StoreError if Redis fails
        (retry the batch: events already recorded come back as duplicates). ``on_accept``: the
        on-accept budgets to count on a cluster (``plan_calls``)."""
        if not events:
            return []
        calls = plan_calls(self.keys, self.bounds, time.time(), events, on_accept)
        return outcomes_of(calls, await self.run(calls, deadline), len(events))

    async def run(self, calls: Sequence[ShardCall], deadline: float) -> list[Any]:
        """The replies of ``calls``, in order (error replies raised as StoreError)."""
        commands = [("EVALSHA", RECORD_EVENTS_SHA, *c.args) for c in calls]
        replies = await self._send(commands, deadline)
        missing = [i for i, r in enumerate(replies) if _no_script(r)]
        if missing and self._cluster is not None:  # EVAL loads it on the call's own master
            again = await self._send([("EVAL", RECORD_EVENTS, *commands[i][2:])
                                      for i in missing], deadline)
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        elif missing:  # Redis restarted or flushed its scripts: load once, send those again
            (loaded,) = await self._send([("SCRIPT", "LOAD", RECORD_EVENTS)], deadline)
            if isinstance(loaded, ErrorReply):
                raise StoreError(f"cannot record feedback: {loaded}")
            again = await self._send([commands[i] for i in missing], deadline)
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, ErrorReply):
                raise StoreError(f"cannot record feedback: {reply}")
        return replies

    async def _send(self, commands: list[tuple[str, ...]], deadline: float) -> list[Any]:
        remaining = time_left(deadline, self._timeout)
        if self._cluster is not None:
            return await self._send_routed(commands, remaining)
        try:  # all in one write, one future for the batch: one round trip
            return await self._redis.execute_all(list(commands), timeout=remaining)
        except PipelineError as exc:
            raise StoreError(f"cannot record feedback: {exc}") from exc

    async def _send_routed(self, commands: list[tuple[str, ...]], timeout: float) -> list[Any]:
        """On a cluster: each call on its shard's master, all at once (a round trip per master
        in parallel); an error reply stays in its place, as ``execute_all`` leaves it."""
        assert self._cluster is not None
        results = await asyncio.gather(
            *(self._cluster.execute_many([command], timeout) for command in commands),
            return_exceptions=True)
        replies: list[Any] = []
        for result in results:
            if isinstance(result, ErrorReply):  # NOSCRIPT after a restart, or another error
                replies.append(result)
            elif isinstance(result, PipelineError):
                raise StoreError(f"cannot record feedback: {result}") from result
            elif isinstance(result, BaseException):
                raise result
            else:
                replies.append(result[0])
        return replies

    async def close(self) -> None:
        await self._redis.close()
        if self._cluster is not None:
            await self._cluster.close()


def time_left(deadline: float, timeout: float) -> float:
    """How long a feedback write may wait: ``timeout``, less when the caller's deadline is
    nearer; StoreError once it has passed (nothing is written then: the caller retries)."""
    remaining = min(timeout, deadline - time.monotonic())
    if remaining <= 0:
        raise StoreError("no time left to record feedback before the deadline")
    return remaining


def record_sync(client: redis.Redis, keys: schema.Keys, bounds: Bounds,
                events: Sequence[Event], on_accept: Sequence[tuple[str, bool]] = (),
                deadline: float | None = None) -> list[Outcome]:
    """The same as ``EventLog.record`` with blocking redis-py: one pipeline per batch (on a
    cluster redis-py's cluster pipeline: each call to its shard's master, all masters' calls
    written before any reply is read). With a ``deadline``, nothing is written once it has
    passed; the write itself waits out the client's socket timeout (redis-py has no timeout
    per call)."""
    if not events:
        return []
    if deadline is not None:
        time_left(deadline, math.inf)
    calls = plan_calls(keys, bounds, time.time(), events, on_accept)
    return outcomes_of(calls, run_sync(client, calls), len(events))


def run_sync(client: redis.Redis, calls: Sequence[ShardCall]) -> list[Any]:
    """``EventLog.run`` with blocking redis-py (one pipeline, one round trip)."""
    try:
        replies = _pipeline(client, calls)
        todo = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
        if todo:  # only those without the script are sent again (the others ran once already)
            client.script_load(RECORD_EVENTS)
            for i, reply in zip(todo, _pipeline(client, [calls[i] for i in todo]), strict=True):
                replies[i] = reply
    except redis.RedisError as exc:
        raise StoreError(f"cannot record feedback: {exc}") from exc
    for reply in replies:
        if isinstance(reply, Exception):
            raise StoreError(f"cannot record feedback: {reply}") from reply
    return replies


def _pipeline(client: redis.Redis, calls: Sequence[ShardCall]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for call in calls:
        pipe.execute_command("EVALSHA", RECORD_EVENTS_SHA, *call.args)  # type: ignore[no-untyped-call]
    return list(pipe.execute(raise_on_error=False))
