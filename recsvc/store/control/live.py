"""Live state beside the versioned model (docs/DESIGN.md section 6): the watcher's reads.

The watcher's poll reads the active pointer and the three revision counters in one pipeline
(``poll``); when a counter moved it reads that piece whole (``load_live``). Requests never read
these keys: they get them from memory, within one poll of a change.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import redis

from recsvc.core import schema
from recsvc.core.errors import StoreError
from recsvc.decisioning.budgets import (
    ACCEPT,
    REV_FIELD,
    BudgetSpec,
    budget_state,
    day_of,
    use_fields,
)
from recsvc.decisioning.live import LiveData, Poll

log = logging.getLogger(__name__)


def text_of(value: bytes | str) -> str:
    """redis-py types replies as bytes or str; our clients never decode, so they are bytes."""
    return value.decode() if isinstance(value, bytes) else value


def dnc_rev_key(keys: schema.Keys) -> str:
    """String counter: bumped on every change of the do-not-contact set."""
    return f"{keys.do_not_contact}:rev"


def _int(raw: Any) -> int:
    try:
        return int(raw or 0)
    except (TypeError, ValueError):
        return 0


# On a cluster: the on-accept budget specs ``load_live`` last read, per deployment: the poll
# sums their counter fields over the shards. (The Store port's ``poll`` takes no argument; the
# specs change only with ``~rev``, which makes the watcher call ``load_live`` again.)
_ON_ACCEPT: dict[schema.Keys, dict[str, BudgetSpec]] = {}


def _add_use_reads(pipe: Any, keys: schema.Keys, fields: list[str]) -> None:
    for shard in range(schema.SHARDS):
        pipe.hmget(keys.budget_use(shard), fields)


def _summed(fields: list[str], replies: list[Any]) -> dict[str, int]:
    """Per field, the units counted over every shard (absent counters are 0)."""
    totals = dict.fromkeys(fields, 0)
    for values in replies:
        for name, value in zip(fields, values, strict=True):
            totals[name] += _int(value)
    return totals


def budget_use(client: redis.Redis, keys: schema.Keys, specs: Mapping[str, BudgetSpec],
               now: float) -> dict[str, int]:
    """On a cluster, the on-accept counters of ``specs`` that decide exhaustion today, summed
    over the 64 shard hashes (one pipeline: a cluster pipeline is one round trip per master).
    Empty on a single Redis, where the feedback script counts in ``{p}:budgets`` itself."""
    fields = use_fields(specs, day_of(now)) if keys.cluster else []
    if not fields:
        return {}
    pipe = client.pipeline(transaction=False)
    _add_use_reads(pipe, keys, fields)
    return _summed(fields, pipe.execute())


def poll(client: redis.Redis, keys: schema.Keys) -> Poll:
    """One round trip: the active pointer, the revision counters and the experiment record
    (and on a cluster, with on-accept budgets, their counters summed over the shards: the
    feedback script cannot bump ``~rev`` there, so the watcher decides exhaustion from them).

    No MULTI: the serving ACL user may read only (``+@read +@connection``). The pointer is read
    before the record, so the poll never pairs the new pointer with the record that
    ``recsvc experiments promote`` removes in the same script as it moves the pointer: at worst
    it sees the old pointer without the experiment (the champion alone, for one poll)."""
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.active)
    pipe.get(keys.offers_rev)
    pipe.hget(keys.budgets, REV_FIELD)
    pipe.get(dnc_rev_key(keys))
    pipe.hgetall(keys.experiments)
    fields = use_fields(_ON_ACCEPT.get(keys, {}), day_of(time.time())) if keys.cluster else []
    if fields:
        _add_use_reads(pipe, keys, fields)
    active, offers_rev, budgets_rev, dnc_rev, experiment, *use = pipe.execute()
    return Poll(None if active is None else text_of(active),
                (_int(offers_rev), _int(budgets_rev), _int(dnc_rev)),
                tuple(sorted((text_of(k), text_of(v)) for k, v in experiment.items())),
                tuple(sorted(_summed(fields, use).items())) if fields else ())


def load_live(client: redis.Redis, keys: schema.Keys) -> LiveData:
    """The overrides, budgets and do-not-contact list (one round trip; on a cluster with
    on-accept budgets a second one sums their shard counters into ``budget_use``)."""
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(keys.offers_live)
        pipe.hgetall(keys.budgets)
        pipe.smembers(keys.do_not_contact)
        overrides_raw, budgets_raw, dnc_raw = pipe.execute()
        budgets = {text_of(k): text_of(v) for k, v in budgets_raw.items()}
        use: dict[str, int] = {}
        if keys.cluster:
            now = time.time()
            specs = {o: s for o, s in budget_state(budgets, now).specs.items()
                     if s.count == ACCEPT}
            _ON_ACCEPT[keys] = specs
            use = budget_use(client, keys, specs, now)
    except redis.RedisError as exc:
        raise StoreError(f"cannot read live offer state: {exc}") from exc
    overrides: dict[str, dict[str, Any]] = {}
    for name, raw in overrides_raw.items():
        try:
            value = json.loads(raw)
        except ValueError:
            log.error("offer override %r is not JSON: ignored", name)
            continue
        if isinstance(value, dict):
            overrides[text_of(name)] = value
    return LiveData(overrides, budgets, frozenset(text_of(c) for c in dnc_raw), use)
