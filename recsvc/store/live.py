"""Live state beside the versioned model (docs/DESIGN.md section 6): the watcher's reads.

The watcher's poll reads the active pointer and the three revision counters in one pipeline
(``poll``); when a counter moved it reads that piece whole (``load_live``). Requests never read
these keys: they get them from memory, within one poll of a change.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis

from recsvc.core import schema
from recsvc.core.errors import StoreError
from recsvc.decisioning.budgets import REV_FIELD
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


def poll(client: redis.Redis, keys: schema.Keys) -> Poll:
    """One round trip: the active pointer, the revision counters and the experiment record.

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
    active, offers_rev, budgets_rev, dnc_rev, experiment = pipe.execute()
    return Poll(None if active is None else text_of(active),
                (_int(offers_rev), _int(budgets_rev), _int(dnc_rev)),
                tuple(sorted((text_of(k), text_of(v)) for k, v in experiment.items())))


def load_live(client: redis.Redis, keys: schema.Keys) -> LiveData:
    """The overrides, budgets and do-not-contact list (one round trip)."""
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(keys.offers_live)
        pipe.hgetall(keys.budgets)
        pipe.smembers(keys.do_not_contact)
        overrides_raw, budgets_raw, dnc_raw = pipe.execute()
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
    return LiveData(overrides,
                    {text_of(k): text_of(v) for k, v in budgets_raw.items()},
                    frozenset(text_of(c) for c in dnc_raw))
