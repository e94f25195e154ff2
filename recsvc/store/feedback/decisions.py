"""Reading the decision log (``{p}:decisions:{shard}``, docs/DESIGN.md section 6) back: the
report's input. Serving appends entries (``RecordReader.log_decision``); this reads them all."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import redis

from recsvc.core import schema
from recsvc.experiments.decision_log import Decision


def read_decisions(client: redis.Redis, keys: schema.Keys, page: int = 10_000
                   ) -> Iterator[Decision]:
    """Every logged decision, shard by shard in stream order; a malformed entry raises
    ValueError naming the decision and the field."""
    for shard in range(schema.SHARDS):
        start = "-"
        while True:
            raw: list[Any] = client.xrange(keys.decisions(shard), min=start, count=page) or []
            for _stream_id, fields in raw:
                yield Decision.from_fields(fields)
            if len(raw) < page:
                break
            start = f"({raw[-1][0].decode() if isinstance(raw[-1][0], bytes) else raw[-1][0]}"


# The export (``recsvc decisions export``) reads each shard after its cursor, and trims only what
# it has committed. Serving's ``MAXLEN ~`` bound is the backstop for memory: if the export falls
# that far behind, the oldest unexported entries go; the export counts them with ``added``.

def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def added(client: redis.Redis, keys: schema.Keys, shard: int) -> tuple[int, str] | None:
    """(entries ever added, the newest id) of one shard's stream; None when it does not exist.
    Entries added after the last export, minus those still there to read, were trimmed."""
    try:
        info = client.xinfo_stream(keys.decisions(shard))
    except redis.ResponseError:  # no such stream yet
        return None
    return int(info["entries-added"]), _text(info["last-generated-id"])


def read_after(client: redis.Redis, keys: schema.Keys, shard: int, after: str, upto: str,
               count: int) -> list[tuple[str, dict[bytes, bytes]]]:
    """Up to ``count`` entries of one shard with ids in (``after``, ``upto``]."""
    raw: list[Any] = client.xrange(keys.decisions(shard), min=f"({after}", max=upto,
                                   count=count) or []
    return [(_text(stream_id), fields) for stream_id, fields in raw]


def trim_upto(client: redis.Redis, keys: schema.Keys, shard: int, cursor: str) -> int:
    """Removes the entries up to and including ``cursor`` (already exported and committed)."""
    ms, seq = _key(cursor)
    return int(client.xtrim(keys.decisions(shard), minid=f"{ms}-{seq + 1}", approximate=False))
