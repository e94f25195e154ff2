"""The RecordFeedback script and its calls, without I/O: one call per shard per batch.

``RECORD_EVENTS`` makes the effects of a shard's events of one batch one atomic step on one
Redis node (docs/DESIGN.md section 6). Per event, in batch order: the dedup check
(``{p}:dedup:{s}``, a sorted set of ids), the append to the shard's stream (``{p}:events:{s}``,
refused when the stream is full rather than trimmed: nothing acknowledged is dropped before
training or an export holds it) and the customer's live hash (``{p}:live:{s}:{customer}``:
accepts, declines, ignored impressions, contacts, segment), plus a unit of an on-accept budget
for a customer's first acceptance of an offer. Once per call: the stream's length and the dedup
set's trims (by age before the checks, by size after the adds). Acknowledged = the call
returned.

``plan_calls`` turns a batch into those calls (keys and arguments per shard) and
``outcomes_of`` reads their replies back into one ``Outcome`` per event; the executors
(``store/feedback/events.py``: the event loop's pipelined connection, or blocking redis-py)
only send
them, so both server models run the same calls.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.core.errors import StoreError
from recsvc.decisioning.budgets import day_of
from recsvc.feedback.events import Event
from recsvc.store.control.budgets import ON_ACCEPT_LUA

# Fields of every stream entry, always all of them in this order: a stream stores the field
# names once per node of entries that share them, so entries cost only their values.
STREAM_FIELDS = ("id", "customer", "offer", "event", "ts", "value", "decision", "channel",
                 "segment")

COMMON_ARGS = 7  # now, window, dedup_max, max_len, ttl, kept, listed budgets (see below)
PER_EVENT = 11  # live key index, id, customer, offer, event, ts, value, decision, channel,
# segment, day (the day only for an accept or redeem: on-accept budgets count per day)
FIXED_KEYS = 3  # dedup, stream, budgets; then the live hash of each customer of the call
SPECS_IN_HASH = "-1"  # ARGV[7] on a single Redis: KEYS[3] is {p}:budgets, specs and counters

# KEYS: dedup, stream, budgets (a single Redis: {p}:budgets; a cluster: the shard's counters
# {p}:budgetuse:{s}), live hashes. ARGV: the six bounds; ARGV[7] '-1' (a single Redis: each
# accept looks its spec up in KEYS[3]) or n, the on-accept budgeted offers listed next as n
# (offer, has per_day '1'/'0') pairs (a cluster: the script cannot reach {p}:budgets, so the
# process's copy of the specs says what to count); then PER_EVENT per event.
# Returns two values per event: status (1 recorded, 2 duplicate, 3 log full), stream id or ''.
# Per call, not per event: the XLEN and the dedup set's trims. A ZADD NX is the dedup check and
# mark in one. (Reading each customer's fields once into Lua tables and writing them back once
# made fewer redis.calls but cost more Redis CPU than it saved at ~1.5 events per call.)
RECORD_EVENTS = ON_ACCEPT_LUA + r"""
local dedup, log, budgets = KEYS[1], KEYS[2], KEYS[3]
local now, window, dedup_max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local max_len, ttl, kept = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local listed, first, per_day_of = tonumber(ARGV[7]), 8, nil
if listed >= 0 then  -- a cluster: offer -> has a daily limit, counted in the shard's hash
  per_day_of = {}
  for j = 8, 7 + 2 * listed, 2 do per_day_of[ARGV[j]] = ARGV[j + 1] == '1' end
  first = 8 + 2 * listed
end
local function count_accept(offer, segment, day)
  if per_day_of == nil then
    recsvc_budget_on_accept(budgets, offer, segment, day)
    return
  end
  local per_day = per_day_of[offer]
  if per_day == nil then return end
  -- The same fields as in {p}:budgets; the watcher sums the 64 hashes and decides exhaustion.
  redis.call('HINCRBY', budgets, offer .. ':used', 1)
  if per_day then redis.call('HINCRBY', budgets, offer .. ':used:d:' .. day, 1) end
  if segment ~= '' then redis.call('HINCRBY', budgets, offer .. ':used:s:' .. segment, 1) end
end
-- Ids older than the window are forgotten first: every event of the call sees the same window.
redis.call('ZREMRANGEBYSCORE', dedup, '-inf', '(' .. (now - window))
local length = redis.call('XLEN', log)
local out, added = {}, false
local function bump(live, field, ts)
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
local function contact(live, channel, ts)
  -- The kept times stay as written (formatting them all again cost more than the rest of the
  -- event); the new one goes in after every time not later than it.
  local field, t = 'c:' .. channel, tonumber(ts)
  local texts, times, sorted = {}, {}, true
  local old = redis.call('HGET', live, field)
  if old then
    for text in string.gmatch(old, '%S+') do
      local value = tonumber(text) or 0
      if #times > 0 and value < times[#times] then sorted = false end
      texts[#texts + 1] = text
      times[#times + 1] = value
    end
  end
  if not sorted then  -- written out of order elsewhere: sorted again, all in one format
    table.sort(times)
    for k, value in ipairs(times) do texts[k] = string.format('%.3f', value) end
  end
  local at = #times + 1
  while at > 1 and times[at - 1] > t do at = at - 1 end
  table.insert(texts, at, string.format('%.3f', t))
  redis.call('HSET', live, field, table.concat(texts, ' ', math.max(1, #texts - kept + 1)))
end
for i = first, #ARGV, 11 do
  local live, id, offer, event, ts = KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 3],
    ARGV[i + 4], ARGV[i + 5]
  local channel, segment = ARGV[i + 8], ARGV[i + 9]
  -- An id in the set (also from earlier in this call) is a duplicate; with the stream full an
  -- event is refused and not marked seen (a retry once there is room records it).
  local status = 3
  if length < max_len then
    status = redis.call('ZADD', dedup, 'NX', now, id) == 1 and 1 or 2
  elseif redis.call('ZSCORE', dedup, id) then
    status = 2
  end
  out[#out + 1] = status
  if status ~= 1 then
    out[#out + 1] = ''
  else
    added = true
    length = length + 1
    out[#out + 1] = redis.call('XADD', log, '*', 'id', id, 'customer', ARGV[i + 2],
      'offer', offer, 'event', event, 'ts', ts, 'value', ARGV[i + 6],
      'decision', ARGV[i + 7], 'channel', channel, 'segment', segment)
    local touched = false
    if event == 'accept' or event == 'redeem' then
      -- The first acceptance of the offer by this customer uses a unit of an on-accept
      -- budget (a redemption after the acceptance does not use a second one).
      if redis.call('HEXISTS', live, 'a:' .. offer) == 0 then
        count_accept(offer, segment, ARGV[i + 10])
      end
      redis.call('HSET', live, 'a:' .. offer, ts)
      redis.call('HDEL', live, 'n:' .. offer)
      touched = true
    elseif event == 'click' then
      redis.call('HDEL', live, 'n:' .. offer)
      touched = true
    elseif event == 'decline' then
      bump(live, 'd:' .. offer, ts)
      touched = true
    elseif event == 'impression' then
      bump(live, 'n:' .. offer, ts)
      if channel ~= '' then contact(live, channel, ts) end
      touched = true
    end
    if segment ~= '' then
      redis.call('HSET', live, 'seg', segment)
      touched = true
    end
    if touched then redis.call('EXPIRE', live, ttl) end
  end
end
if added then  -- the newest dedup_max ids are kept
  redis.call('ZREMRANGEBYRANK', dedup, 0, -(dedup_max + 1))
end
return out
"""
RECORD_EVENTS_SHA = hashlib.sha1(RECORD_EVENTS.encode()).hexdigest()

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


class Outcome(NamedTuple):  # a NamedTuple: one is built per event, cheaper than a dataclass
    """What the script did with one event: RECORDED (with its stream id), DUPLICATE, LOG_FULL."""

    status: int
    stream_id: str = ""


_DUPLICATE, _LOG_FULL = Outcome(DUPLICATE), Outcome(LOG_FULL)


class ShardCall(NamedTuple):
    """One ``EVALSHA RECORD_EVENTS_SHA *args`` on one shard's slot: ``args`` are numkeys, the
    keys and ARGV; ``positions`` the indices of its events in the batch, in batch order."""

    shard: int
    args: list[str]
    positions: list[int]


_SHARD_KEYS: dict[str, tuple[list[str], list[str]]] = {}


def _shard_keys(keys: schema.Keys) -> tuple[list[str], list[str]]:
    """Dedup and stream key of every shard, built once per prefix."""
    found = _SHARD_KEYS.get(keys.prefix)
    if found is None:
        found = ([keys.dedup(s) for s in range(schema.SHARDS)],
                 [keys.events(s) for s in range(schema.SHARDS)])
        _SHARD_KEYS[keys.prefix] = found
    return found


def _fmt(value: float) -> str:
    return repr(float(value))


def plan_calls(keys: schema.Keys, bounds: Bounds, now: float, events: Sequence[Event],
               on_accept: Sequence[tuple[str, bool]] = ()) -> list[ShardCall]:
    """The batch as one call per shard it touches (shards in order of first appearance; each
    call's events in batch order, so a duplicate inside the batch meets its first copy).

    On a single Redis every key of a call carries the shard's hash tag but ``{p}:budgets``,
    which the script reads the on-accept specs from. On a cluster (``keys.cluster``) every key
    is on the shard's slot: on-accept units go to the shard's ``budget_use`` hash, for the
    offers ``on_accept`` lists (offer, has a daily limit: ``BudgetState.on_accept``, the
    process's copy of the specs, at most a poll old)."""
    common = [_fmt(now), _fmt(bounds.dedup_window_seconds), str(bounds.dedup_max_per_shard),
              str(bounds.events_max_per_shard), str(bounds.live_ttl_seconds),
              str(bounds.contacts_kept)]
    if keys.cluster:
        common.append(str(len(on_accept)))
        for offer, per_day in on_accept:
            common += (offer, "1" if per_day else "0")
    else:
        common.append(SPECS_IN_HASH)
    groups: dict[int, tuple[dict[str, str], list[str], list[int]]] = {}
    for position, e in enumerate(events):
        shard = schema.shard_of(e.customer_id)
        group = groups.get(shard)
        if group is None:
            group = groups[shard] = ({}, [], [])
        lives, argv, positions = group
        index = lives.get(e.customer_id)
        if index is None:  # KEYS index (1-based) of the customer's live hash in this call
            index = lives[e.customer_id] = str(FIXED_KEYS + 1 + len(lives))
        argv += (index, e.event_id, e.customer_id, e.offer_id, e.event, repr(float(e.ts)),
                 "" if e.value is None else repr(float(e.value)), e.decision_id, e.channel,
                 e.segment, day_of(e.ts) if e.event in ("accept", "redeem") else "")
        positions.append(position)
    dedup, logs = _shard_keys(keys)
    calls = []
    for shard, (lives, argv, positions) in groups.items():
        budgets = keys.budget_use(shard) if keys.cluster else keys.budgets
        args = [str(FIXED_KEYS + len(lives)), dedup[shard], logs[shard], budgets,
                *(keys.live_in(shard, customer) for customer in lives), *common, *argv]
        calls.append(ShardCall(shard, args, positions))
    return calls


def outcomes_of(calls: Sequence[ShardCall], replies: Sequence[Any],
                count: int) -> list[Outcome]:
    """One Outcome per event of the batch (``count`` events), in batch order, from each call's
    reply (replies in the order of ``calls``; error replies are the executor's to raise)."""
    found: list[Outcome | None] = [None] * count
    for call, reply in zip(calls, replies, strict=True):
        if not isinstance(reply, list) or len(reply) != 2 * len(call.positions):
            raise StoreError(f"the feedback script answered {reply!r:.80} for "
                             f"{len(call.positions)} events")
        for j, position in enumerate(call.positions):
            status = int(reply[2 * j])
            if status == RECORDED:
                sid = reply[2 * j + 1]
                found[position] = Outcome(RECORDED, sid.decode() if isinstance(sid, bytes)
                                          else str(sid))
            elif status == DUPLICATE:
                found[position] = _DUPLICATE
            elif status == LOG_FULL:
                found[position] = _LOG_FULL
            else:
                raise StoreError(f"the feedback script answered an unknown status {status}")
    outcomes = [o for o in found if o is not None]
    if len(outcomes) != count:
        raise StoreError("the feedback script calls did not cover every event of the batch")
    return outcomes
