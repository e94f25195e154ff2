"""The durable feedback log: one Lua script per event on the customer's slot.

The script (``RECORD_EVENT``) makes an event's three effects one atomic step on one Redis node
(docs/DESIGN.md section 6): the dedup check (``{p}:dedup:{s}``, a sorted set of ids trimmed by
age and size), the append to the shard's stream (``{p}:events:{s}``, refused when the stream is
full rather than trimmed: nothing acknowledged is dropped before training or an export holds it)
and the customer's live hash (``{p}:live:{s}:{customer}``: accepts, declines, ignored
impressions, contacts, segment; TTL refreshed). Acknowledged = the script returned.

Two writers send the same commands: ``EventLog`` on the event loop (one pipelined connection, a
whole batch in one write: one round trip) and ``record_sync`` (redis-py, for a threaded server
and the tools). Both load the script again when Redis answers NOSCRIPT (after a restart).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.core.errors import StoreError
from recsvc.decisioning.budgets import day_of
from recsvc.feedback.events import Event
from recsvc.store.budgets import ON_ACCEPT_LUA
from recsvc.store.redis_pipeline import ConnectionLost, ErrorReply, PipelinedRedis

# Fields of every stream entry, always all of them in this order: a stream stores the field
# names once per node of entries that share them, so entries cost only their values.
STREAM_FIELDS = ("id", "customer", "offer", "event", "ts", "value", "decision", "channel",
                 "segment")

RECORD_EVENT = ON_ACCEPT_LUA + """
local dedup, log, live, budgets = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, window, dedup_max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local max_len, ttl, kept = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local id, offer, event, ts = ARGV[7], ARGV[9], ARGV[10], ARGV[11]
local channel, segment = ARGV[14], ARGV[15]
if redis.call('ZSCORE', dedup, id) then return {2} end
if redis.call('XLEN', log) >= max_len then return {3} end
redis.call('ZADD', dedup, now, id)
redis.call('ZREMRANGEBYSCORE', dedup, '-inf', '(' .. (now - window))
local size = redis.call('ZCARD', dedup)
if size > dedup_max then redis.call('ZREMRANGEBYRANK', dedup, 0, size - dedup_max - 1) end
local sid = redis.call('XADD', log, '*', 'id', id, 'customer', ARGV[8], 'offer', offer,
  'event', event, 'ts', ts, 'value', ARGV[12], 'decision', ARGV[13], 'channel', channel,
  'segment', segment)
local function bump(field)
  local old = redis.call('HGET', live, field)
  local count, last = 0, 0
  if old then
    local c, l = string.match(old, '^(%d+) (%S+)$')
    count, last = tonumber(c) or 0, tonumber(l) or 0
  end
  local t = tonumber(ts)
  if t < last then t = last end
  redis.call('HSET', live, field, (count + 1) .. ' ' .. string.format('%.3f', t))
end
local touched = false
if event == 'accept' or event == 'redeem' then
  -- The first acceptance of the offer by this customer uses a unit of an on-accept budget
  -- (a redemption after the acceptance does not use a second one).
  if redis.call('HEXISTS', live, 'a:' .. offer) == 0 then
    recsvc_budget_on_accept(budgets, offer, segment, ARGV[16])
  end
  redis.call('HSET', live, 'a:' .. offer, ts)
  redis.call('HDEL', live, 'n:' .. offer)
  touched = true
elseif event == 'click' then
  redis.call('HDEL', live, 'n:' .. offer)
  touched = true
elseif event == 'decline' then
  bump('d:' .. offer)
  touched = true
elseif event == 'impression' then
  bump('n:' .. offer)
  if channel ~= '' then
    local field = 'c:' .. channel
    local times = {}
    local old = redis.call('HGET', live, field)
    if old then for t in string.gmatch(old, '%S+') do table.insert(times, tonumber(t)) end end
    table.insert(times, tonumber(ts))
    table.sort(times)
    local first = math.max(1, #times - kept + 1)
    local out = {}
    for i = first, #times do table.insert(out, string.format('%.3f', times[i])) end
    redis.call('HSET', live, field, table.concat(out, ' '))
  end
  touched = true
end
if segment ~= '' then
  redis.call('HSET', live, 'seg', segment)
  touched = true
end
if touched then redis.call('EXPIRE', live, ttl) end
return {1, sid}
"""
RECORD_EVENT_SHA = hashlib.sha1(RECORD_EVENT.encode()).hexdigest()

RECORDED, DUPLICATE, LOG_FULL = 1, 2, 3
LOG_FULL_REASON = ("event log full (RECSVC_EVENTS_MAX_PER_SHARD): training or `recsvc events "
                   "export` must catch up before more events are accepted; retry later")


@dataclass(frozen=True)
class Bounds:
    """The documented bounds of the log (from Settings)."""

    dedup_window_seconds: float
    dedup_max_per_shard: int
    events_max_per_shard: int
    live_ttl_seconds: int
    contacts_kept: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Bounds:
        return cls(settings.dedup_window_hours * 3600.0, settings.dedup_max_per_shard,
                   settings.events_max_per_shard, int(settings.live_ttl_days * 86400),
                   settings.contacts_kept)


@dataclass(frozen=True)
class Outcome:
    """What the script did with one event: RECORDED (with its stream id), DUPLICATE, LOG_FULL."""

    status: int
    stream_id: str = ""


def _fmt(value: float) -> str:
    return repr(float(value))


def script_args(keys: schema.Keys, bounds: Bounds, now: float, event: Event) -> list[str]:
    """numkeys, KEYS and ARGV of RECORD_EVENT for one ``feedback.events.Event``."""
    return batch_args(keys, bounds, now, [event])[0]


_SHARD_KEYS: dict[str, tuple[list[str], list[str]]] = {}


def _shard_keys(keys: schema.Keys) -> tuple[list[str], list[str]]:
    """Dedup and stream key of every shard, built once per prefix."""
    found = _SHARD_KEYS.get(keys.prefix)
    if found is None:
        found = ([keys.dedup(s) for s in range(schema.SHARDS)],
                 [keys.events(s) for s in range(schema.SHARDS)])
        _SHARD_KEYS[keys.prefix] = found
    return found


def batch_args(keys: schema.Keys, bounds: Bounds, now: float,
               events: Sequence[Event]) -> list[list[str]]:
    """RECORD_EVENT's arguments for each event (the bounds' text made once per batch)."""
    dedup, logs = _shard_keys(keys)
    common = [_fmt(now), _fmt(bounds.dedup_window_seconds), str(bounds.dedup_max_per_shard),
              str(bounds.events_max_per_shard), str(bounds.live_ttl_seconds),
              str(bounds.contacts_kept)]
    out = []
    for e in events:
        shard = schema.shard_of(e.customer_id)
        # On one Redis node the budgets hash is reachable from the same script (on a cluster it
        # lives in another slot: docs/DESIGN.md section 6).
        out.append(["4", dedup[shard], logs[shard], keys.live(e.customer_id), keys.budgets,
                    *common, e.event_id, e.customer_id, e.offer_id, e.event, repr(float(e.ts)),
                    "" if e.value is None else repr(float(e.value)), e.decision_id,
                    e.channel, e.segment, day_of(e.ts)])
    return out


def _outcome(reply: Any) -> Outcome:
    status = int(reply[0])
    if status == RECORDED:
        sid = reply[1]
        return Outcome(RECORDED, sid.decode() if isinstance(sid, bytes) else str(sid))
    return Outcome(status)


class EventLog:
    """Records batches of events on the event loop: one pipelined write per batch."""

    def __init__(self, keys: schema.Keys, settings: Settings) -> None:
        self._redis = PipelinedRedis(settings.redis_url)
        self.keys = keys
        self.bounds = Bounds.from_settings(settings)
        self._timeout = settings.feedback_timeout_ms / 1000.0

    async def record(self, events: Sequence[Event], deadline: float) -> list[Outcome]:
        """Run the script for every event (in order); StoreError if Redis fails (retry the
        batch: events already recorded come back as duplicates)."""
        if not events:
            return []
        now = time.time()
        commands = batch_args(self.keys, self.bounds, now, events)
        replies = await self._send(commands, deadline)
        missing = [i for i, r in enumerate(replies)
                   if isinstance(r, ErrorReply) and str(r).startswith("NOSCRIPT")]
        if missing:  # Redis restarted or flushed its scripts: load once, send those again
            await self._execute(deadline, "SCRIPT", "LOAD", RECORD_EVENT)
            again = await self._send([commands[i] for i in missing], deadline)
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        outcomes = []
        for reply in replies:
            if isinstance(reply, BaseException):
                raise StoreError(f"cannot record feedback: {reply}") from reply
            outcomes.append(_outcome(reply))
        return outcomes

    async def _send(self, commands: list[list[str]], deadline: float) -> list[Any]:
        timeout = self._remaining(deadline)
        # All asked in one turn of the loop: they leave in one write (one round trip).
        calls = [self._redis.execute("EVALSHA", RECORD_EVENT_SHA, *c, timeout=timeout)
                 for c in commands]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    async def _execute(self, deadline: float, *command: str) -> Any:
        try:
            return await self._redis.execute(*command, timeout=self._remaining(deadline))
        except (ConnectionLost, ErrorReply) as exc:
            raise StoreError(f"cannot record feedback: {exc}") from exc

    def _remaining(self, deadline: float) -> float:
        remaining = min(self._timeout, deadline - time.monotonic())
        if remaining <= 0:
            raise StoreError("no time left to record feedback before the deadline")
        return remaining

    async def close(self) -> None:
        await self._redis.close()


def record_sync(client: redis.Redis, keys: schema.Keys, bounds: Bounds,
                events: Sequence[Event]) -> list[Outcome]:
    """The same as ``EventLog.record`` with blocking redis-py: one pipeline per batch."""
    if not events:
        return []
    now = time.time()
    commands = batch_args(keys, bounds, now, events)
    try:
        replies = _pipeline(client, commands)
        todo = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
        if todo:  # only those without the script are sent again (the others ran once already)
            client.script_load(RECORD_EVENT)
            for i, reply in zip(todo, _pipeline(client, [commands[i] for i in todo]),
                                strict=True):
                replies[i] = reply
    except redis.RedisError as exc:
        raise StoreError(f"cannot record feedback: {exc}") from exc
    outcomes = []
    for reply in replies:
        if isinstance(reply, Exception):
            raise StoreError(f"cannot record feedback: {reply}") from reply
        outcomes.append(_outcome(reply))
    return outcomes


def _pipeline(client: redis.Redis, commands: list[list[str]]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command("EVALSHA", RECORD_EVENT_SHA, *command)  # type: ignore[no-untyped-call]
    return list(pipe.execute(raise_on_error=False))
