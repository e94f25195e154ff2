"""Reading the feedback streams whole (training, export) and trimming them only where safe.

An entry may leave its stream (``XTRIM MINID``) once every kept model version was trained on it
(the version's ``meta.feedback_cutoff``: the last stream id per shard its training read; a
version without a cutoff holds none) and, when fold-in consumers run, once the group ``foldin``
has delivered it and no consumer still holds it pending. Both the active and the previous
version count, so a rollback can still replay what the previous version lacks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import redis

from recsvc.core import schema

FOLDIN_GROUP = "foldin"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def last_ids(client: redis.Redis, keys: schema.Keys) -> dict[int, str]:
    """The newest entry id of each non-empty shard stream (a snapshot to read up to)."""
    pipe = client.pipeline(transaction=False)
    for shard in range(schema.SHARDS):
        pipe.xrevrange(keys.events(shard), count=1)
    return {shard: _text(reply[0][0]) for shard, reply in enumerate(pipe.execute()) if reply}


def read_entries(client: redis.Redis, keys: schema.Keys, upto: dict[int, str],
                 page: int = 10_000) -> Iterator[tuple[int, str, dict[str, str]]]:
    """(shard, stream id, fields) of every entry up to ``upto`` per shard, in stream order."""
    for shard, last in sorted(upto.items()):
        start = "-"
        while True:
            raw: list[Any] = client.xrange(keys.events(shard), min=start, max=last,
                                           count=page) or []
            for stream_id, fields in raw:
                yield shard, _text(stream_id), {_text(k): _text(v) for k, v in fields.items()}
            if len(raw) < page:
                break
            start = f"({_text(raw[-1][0])}"


def _cutoff(client: redis.Redis, keys: schema.Keys, version: str | None) -> dict[str, str]:
    if version is None:
        return {}
    raw = client.get(keys.meta(version))
    if raw is None:
        return {}
    cutoff = json.loads(raw).get("feedback_cutoff") or {}
    return {str(k): str(v) for k, v in cutoff.items()}


def safe_points(client: redis.Redis, keys: schema.Keys) -> dict[int, str]:
    """Per shard, the id below which entries may be trimmed (absent: nothing is safe)."""
    active, previous = (None if v is None else _text(v)
                        for v in client.mget(keys.active, keys.previous))
    cutoffs = [_cutoff(client, keys, active)]
    if previous is not None:
        cutoffs.append(_cutoff(client, keys, previous))
    safe: dict[int, str] = {}
    for shard in range(schema.SHARDS):
        points = [c.get(str(shard)) for c in cutoffs]
        if active is None or any(p is None for p in points):
            continue
        limit = min((p for p in points if p is not None), key=id_key)
        key = keys.events(shard)
        try:
            groups = client.xinfo_groups(key)
        except redis.ResponseError:  # no such stream
            continue
        for group in groups:
            if _text(group["name"]) != FOLDIN_GROUP:
                continue
            limit = min(limit, _text(group["last-delivered-id"]), key=id_key)
            pending = client.xpending(key, FOLDIN_GROUP)
            if pending["pending"]:
                limit = min(limit, _text(pending["min"]), key=id_key)
        safe[shard] = limit
    return safe


def trim_safe(client: redis.Redis, keys: schema.Keys) -> int:
    """Trim every shard stream below its safe point; returns the entries removed."""
    removed = 0
    for shard, limit in safe_points(client, keys).items():
        removed += int(client.xtrim(keys.events(shard), minid=limit, approximate=False))
    return removed
