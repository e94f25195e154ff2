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
