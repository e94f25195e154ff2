"""What the fold-in has not done yet: per event shard, the entries, the group's pending entries
and the oldest entry not folded in; and the stream lengths the serving process exports.

Read for metrics (at scrape time or every few seconds), never per request. ``read_backlog`` is
two round trips whatever the shard count: ``TIME``, ``XLEN``, ``XINFO GROUPS`` and ``XPENDING``
of every shard in one pipeline, then the first entry after each shard's ``last-delivered-id``
(on a cluster: TIME asked first, and each pipeline a round trip per master).
The age is measured on Redis's clock: stream ids are Redis's clock at acceptance (``XADD *``),
so the consumer's host clock (skewed or not) never enters the lag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from recsvc.core import schema
from recsvc.store.feedback.streams import FOLDIN_GROUP, id_key


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class ShardBacklog:
    length: int  # entries in the stream (folded or not: training still reads them)
    pending: int  # delivered to the group, not acknowledged yet
    oldest_unfolded: str | None  # stream id of the oldest entry pending or never delivered


@dataclass(frozen=True)
class Backlog:
    now_ms: int  # Redis's clock when read
    shards: tuple[ShardBacklog, ...]

    @property
    def length(self) -> int:
        return sum(s.length for s in self.shards)

    @property
    def pending(self) -> int:
        return sum(s.pending for s in self.shards)

    @property
    def lag_seconds(self) -> float:
        """Age of the oldest entry not folded in yet; 0 when everything is folded."""
        oldest = [id_key(s.oldest_unfolded)[0] for s in self.shards
                  if s.oldest_unfolded is not None]
        return max(0.0, (self.now_ms - min(oldest)) / 1000.0) if oldest else 0.0


def read_backlog(client: redis.Redis, keys: schema.Keys, group: str = FOLDIN_GROUP) -> Backlog:
    """The fold-in group's backlog over every event shard (two round trips)."""
    pipe = client.pipeline(transaction=False)
    clock: Any = None
    if keys.cluster:  # a cluster pipeline refuses TIME (no key): asked of one node first
        clock = client.time()
    else:
        pipe.time()
    for shard in range(schema.SHARDS):
        key = keys.events(shard)
        pipe.xlen(key)
        pipe.xinfo_groups(key)  # an error reply when the stream does not exist
        pipe.xpending(key, group)  # NOGROUP error reply before the consumer first ran
    replies = pipe.execute(raise_on_error=False)
    if clock is not None:
        replies.insert(0, clock)
    seconds, micros = replies[0]
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    lengths, delivered, pending, oldest_pending = [], [], [], []
    for shard in range(schema.SHARDS):
        length, groups, summary = replies[1 + 3 * shard: 4 + 3 * shard]
        if isinstance(length, Exception):
            raise length
        lengths.append(int(length))
        info = None if isinstance(groups, Exception) else next(
            (g for g in groups if _text(g["name"]) == group), None)
        # No group yet: nothing was ever delivered, every entry is unfolded.
        delivered.append(None if info is None else _text(info["last-delivered-id"]))
        count = 0 if isinstance(summary, Exception) else int(summary["pending"])
        pending.append(count)
        oldest_pending.append(_text(summary["min"]) if count else None)
    pipe = client.pipeline(transaction=False)
    for shard in range(schema.SHARDS):
        after = delivered[shard]
        pipe.xrange(keys.events(shard), min=f"({after}" if after else "-", count=1)
    first_new = [_text(raw[0][0]) if raw else None for raw in pipe.execute()]
    shards = []
    for shard in range(schema.SHARDS):
        candidates = [i for i in (oldest_pending[shard], first_new[shard]) if i is not None]
        shards.append(ShardBacklog(lengths[shard], pending[shard],
                                   min(candidates, key=id_key) if candidates else None))
    return Backlog(now_ms, tuple(shards))


def stream_lengths(client: redis.Redis, keys: schema.Keys) -> dict[str, tuple[int, int]]:
    """``events`` and ``decisions``: (entries over every shard, entries in the longest shard).
    128 ``XLEN`` (each O(1) in Redis) in one round trip."""
    pipe = client.pipeline(transaction=False)
    for shard in range(schema.SHARDS):
        pipe.xlen(keys.events(shard))
        pipe.xlen(keys.decisions(shard))
    replies = [int(r) for r in pipe.execute()]
    events, decisions = replies[0::2], replies[1::2]
    return {"events": (sum(events), max(events)), "decisions": (sum(decisions), max(decisions))}
