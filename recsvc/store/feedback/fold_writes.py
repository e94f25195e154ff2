"""Writing fold-in records to the customer live hash, with a compare-and-set.

``FOLD_WRITE`` sets ``r:<version>`` (the record) and ``f:<version>`` (the stream ids folded into
it) together, only if ``f:<version>`` still holds what the consumer read: two consumers folding
the same customer never overwrite each other's work (the loser reads again and retries). The
same script deletes the ``r:``/``f:`` fields of versions that are neither active nor previous.
"""

from __future__ import annotations

import hashlib
from typing import Any

import redis

FOLD_WRITE = """
local live = KEYS[1]
local current = redis.call('HGET', live, ARGV[2]) or ''
if current ~= ARGV[3] then return 0 end
redis.call('HSET', live, ARGV[1], ARGV[4], ARGV[2], ARGV[5])
for _, field in ipairs(redis.call('HKEYS', live)) do
  local kind = string.sub(field, 1, 2)
  if kind == 'r:' or kind == 'f:' then
    local version = string.sub(field, 3)
    if version ~= ARGV[7] and version ~= ARGV[8] then redis.call('HDEL', live, field) end
  end
end
redis.call('EXPIRE', live, ARGV[6])
return 1
"""
FOLD_WRITE_SHA = hashlib.sha1(FOLD_WRITE.encode()).hexdigest()


def fold_write_args(live_key: str, record_field: str, folded_field: str, expected: str,
                    record: bytes, folded: str, ttl_seconds: int, active: str,
                    previous: str) -> list[Any]:
    """numkeys, KEYS and ARGV of FOLD_WRITE (``expected`` "" = the field must be absent)."""
    return ["1", live_key, record_field, folded_field, expected, record, folded,
            str(ttl_seconds), active, previous]


def run_fold_writes(client: redis.Redis, commands: list[list[Any]]) -> list[bool]:
    """All writes in one pipeline; True per write that won its compare-and-set."""
    if not commands:
        return []
    if not client.script_exists(FOLD_WRITE_SHA)[0]:  # after a Redis restart
        client.script_load(FOLD_WRITE)
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command("EVALSHA", FOLD_WRITE_SHA, *command)  # type: ignore[no-untyped-call]
    return [int(r) == 1 for r in pipe.execute()]
