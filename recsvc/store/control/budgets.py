"""Budget counting in Redis: the reserve script (on serve) and the on-accept snippet.

All budgets live in one hash, ``{p}:budgets`` (one slot), so reserving several offers of an
answer is one atomic script: Redis runs scripts one at a time, so processes racing for the last
units never overspend. Spec format and counters: ``recsvc/decisioning/budgets.py``. On a Redis
Cluster on-accept units are counted per shard instead (``{p}:budgetuse:{s}``, by the feedback
script on the event's slot) and summed by the readers here and in ``store/control/live.py``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from recsvc.core import schema
from recsvc.decisioning.budgets import REV_FIELD, BudgetSpec, day_of, with_use
from recsvc.store.control.live import text_of

# The shared Lua: is ``offer`` within its limits (total, today, segment)? Counters as in the
# spec module; a malformed spec counts as exhausted.
_LIMITS_LUA = r"""
local function recsvc_budget_room(key, offer, spec, day, segment)
  local used = tonumber(redis.call('HGET', key, offer .. ':used') or '0')
  if spec.total ~= nil and used >= spec.total then return false end
  if spec.per_day ~= nil then
    local today = tonumber(redis.call('HGET', key, offer .. ':used:d:' .. day) or '0')
    if today >= spec.per_day then return false end
  end
  if segment ~= '' and type(spec.per_segment) == 'table' and spec.per_segment[segment] ~= nil then
    local seg = tonumber(redis.call('HGET', key, offer .. ':used:s:' .. segment) or '0')
    if seg >= spec.per_segment[segment] then return false end
  end
  return true
end
local function recsvc_budget_count(key, offer, spec, day, segment)
  redis.call('HINCRBY', key, offer .. ':used', 1)
  if spec.per_day ~= nil then
    redis.call('HINCRBY', key, offer .. ':used:d:' .. day, 1)
  end
  if segment ~= '' then redis.call('HINCRBY', key, offer .. ':used:s:' .. segment, 1) end
  if not recsvc_budget_room(key, offer, spec, day, segment) then
    redis.call('HINCRBY', key, '~rev', 1)  -- ran out: replicas reload and drop it
  end
end
"""

# KEYS[1] = budgets hash; ARGV = day, segment, limit, then (offer, budgeted 0/1) pairs in rank
# order. Walks the candidates, filling ``limit`` slots: an unbudgeted offer takes a slot, a
# budgeted one takes a slot only if it has a unit left, which it then uses. Returns the
# budgeted offers granted.
RESERVE_LUA = _LIMITS_LUA + r"""
local key, day, segment, limit = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local slots, granted = 0, {}
for i = 4, #ARGV, 2 do
  if slots >= limit then break end
  local offer, budgeted = ARGV[i], ARGV[i + 1]
  if budgeted == '0' then
    slots = slots + 1
  else
    local raw = redis.call('HGET', key, offer)
    if not raw then
      slots = slots + 1
      table.insert(granted, offer)  -- the budget was removed meanwhile: no limit
    else
      local ok, spec = pcall(cjson.decode, raw)
      if ok and spec.count ~= 'accept' and recsvc_budget_room(key, offer, spec, day, segment) then
        recsvc_budget_count(key, offer, spec, day, segment)
        slots = slots + 1
        table.insert(granted, offer)
      elseif ok and spec.count == 'accept' then
        slots = slots + 1
        table.insert(granted, offer)
      end
    end
  end
end
return granted
"""

# A campaign's reservation of one offer: KEYS[1] = budgets hash; ARGV = offer, day, then the
# segment of each unit the campaign granted, best value first. Returns one 1 (reserved) or 0
# (no unit left: another process took it meanwhile) per unit, so the campaign drops and refills
# exactly the refused ones; the limits are the serving script's, so nothing is overspent.
CAMPAIGN_RESERVE_LUA = _LIMITS_LUA + r"""
local key, offer, day = KEYS[1], ARGV[1], ARGV[2]
local raw = redis.call('HGET', key, offer)
local ok, spec = false, nil
if raw then ok, spec = pcall(cjson.decode, raw) end
local out = {}
for i = 3, #ARGV do
  if not raw or (ok and spec.count == 'accept') then
    out[#out + 1] = 1  -- the budget was removed meanwhile, or counts accepts: no unit needed
  elseif ok and recsvc_budget_room(key, offer, spec, day, ARGV[i]) then
    recsvc_budget_count(key, offer, spec, day, ARGV[i])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""

# For the feedback helper's RecordFeedback script (on a single Redis the budgets hash is on the
# same node): call ``recsvc_budget_on_accept(budgets_key, offer, segment, day)`` for an accept
# or redeem; it counts a unit of an on-accept budget (never refuses: the customer accepted).
ON_ACCEPT_LUA = _LIMITS_LUA + r"""
local function recsvc_budget_on_accept(key, offer, segment, day)
  local raw = redis.call('HGET', key, offer)
  if not raw then return 0 end
  local ok, spec = pcall(cjson.decode, raw)
  if not ok or spec.count ~= 'accept' then return 0 end
  recsvc_budget_count(key, offer, spec, day, segment)
  return 1
end
"""

# Standalone: KEYS[1] = budgets; ARGV = offer, segment, day.
_ACCEPT_SCRIPT = ON_ACCEPT_LUA + "return recsvc_budget_on_accept(KEYS[1], ARGV[1], ARGV[2], " \
                                 "ARGV[3])\n"

# KEYS[1] = the customer's live hash; ARGV = field (c:<channel>), now, keep, ttl seconds.
CONTACT_LUA = r"""
local times = redis.call('HGET', KEYS[1], ARGV[1]) or ''
local list = {}
for t in string.gmatch(times, '%S+') do table.insert(list, t) end
table.insert(list, ARGV[2])
local keep = tonumber(ARGV[3])
while #list > keep do table.remove(list, 1) end
redis.call('HSET', KEYS[1], ARGV[1], table.concat(list, ' '))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return #list
"""


def reserve_args(day: str, segment: str, limit: int,
                 candidates: list[tuple[str, bool]]) -> list[str]:
    args = [day, segment, str(limit)]
    for offer, budgeted in candidates:
        args += [offer, "1" if budgeted else "0"]
    return args


def record_accept(client: redis.Redis, keys: schema.Keys, offer_id: str, segment: str = "",
                  now: float | None = None) -> bool:
    """Count one accept against an on-accept budget (what the RecordFeedback script does)."""
    day = day_of(time.time() if now is None else now)
    return bool(client.eval(_ACCEPT_SCRIPT, 1, keys.budgets, offer_id, segment, day))


def set_budget(client: redis.Redis, keys: schema.Keys, offer_id: str,
               spec: dict[str, Any]) -> BudgetSpec:
    """Validate and store a spec (counters are kept); ValueError names the offer and key."""
    parsed = BudgetSpec.parse(offer_id, spec)
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.budgets, offer_id, parsed.as_json())
    pipe.hincrby(keys.budgets, REV_FIELD, 1)
    pipe.execute()
    return parsed


def _counters(names: list[Any], offer_id: str) -> list[str]:
    return [text_of(f) for f in names if text_of(f).startswith(f"{offer_id}:used")]


def clear_budget(client: redis.Redis, keys: schema.Keys, offer_id: str,
                 reset_counters: bool = False) -> None:
    """Remove the spec (and with ``reset_counters`` its counters; on a cluster the shard
    counters of on-accept units too, after the spec: another slot, so not in its MULTI)."""
    fields = [offer_id]
    if reset_counters:
        fields += _counters(client.hkeys(keys.budgets), offer_id)
    pipe = client.pipeline(transaction=True)
    pipe.hdel(keys.budgets, *fields)
    pipe.hincrby(keys.budgets, REV_FIELD, 1)
    pipe.execute()
    if reset_counters and keys.cluster:
        pipe = client.pipeline(transaction=False)
        for shard, names in enumerate(_shard_fields(client, keys)):
            counters = _counters(names, offer_id)
            if counters:
                pipe.hdel(keys.budget_use(shard), *counters)
        pipe.execute()


def _shard_fields(client: redis.Redis, keys: schema.Keys) -> list[list[Any]]:
    pipe = client.pipeline(transaction=False)
    for shard in range(schema.SHARDS):
        pipe.hkeys(keys.budget_use(shard))
    return list(pipe.execute())


def budgets_of(client: redis.Redis, keys: schema.Keys) -> dict[str, str]:
    """The budgets hash; on a cluster with the shard counters of on-accept units summed into
    its counters (``<offer>:used...``: what the watcher decides exhaustion from)."""
    fields = {text_of(k): text_of(v) for k, v in client.hgetall(keys.budgets).items()}
    if not keys.cluster:
        return fields
    pipe = client.pipeline(transaction=False)
    for shard in range(schema.SHARDS):
        pipe.hgetall(keys.budget_use(shard))
    use: dict[str, int] = {}
    for counters in pipe.execute():
        for name, value in counters.items():
            use[text_of(name)] = use.get(text_of(name), 0) + int(value)
    return with_use(fields, use)


def spec_json(raw: str) -> dict[str, Any]:
    value = json.loads(raw)
    return value if isinstance(value, dict) else {}
