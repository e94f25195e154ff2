"""The campaign's Redis side: customer state read in pipelined bulk, budget units reserved per
offer, the decision log and contacts written in bulk. One blocking hiredis-parsed connection.

Reads: per chunk of customers, the records grouped by shard (``Keys.customers_of_shard``) with
one HMGET of at most ``HMGET_FIELDS`` ids per command, the live hash of every customer (HGETALL;
most are empty) and, while an experiment runs, the challenger version's records: every command
of a chunk in one write, replies in order. Writes: the same entries serving writes (the decision
log's XADD, the contact script), pipelined in blocks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import hiredis

from recsvc.core import schema
from recsvc.core.errors import StoreError
from recsvc.store import budgets as budget_scripts
from recsvc.store.blocking_pipeline import _Connection
from recsvc.store.reader import LIVE_TTL_SECONDS, decision_log_command
from recsvc.store.redis_pipeline import Endpoint, PipelineError

HMGET_FIELDS = 1000
WRITE_BLOCK = 2000  # commands per write when sending the log and the contacts
_CONTACT_SHA = hashlib.sha1(budget_scripts.CONTACT_LUA.encode()).hexdigest()

Live = dict[bytes, bytes]


def _pack(command: tuple[bytes | str, ...]) -> bytes:
    packed: bytes = hiredis.pack_command(command)  # type: ignore[arg-type]
    return packed


class CampaignStore:
    def __init__(self, url: str, keys: schema.Keys, timeout: float = 120.0) -> None:
        self.keys = keys
        try:
            self._connection = _Connection(Endpoint.of(url), timeout)
        except PipelineError as exc:
            raise StoreError(str(exc)) from exc

    def _exchange(self, packed: list[bytes]) -> list[Any]:
        try:
            return self._connection.exchange(packed)
        except PipelineError as exc:
            raise StoreError(f"Redis: {exc}") from exc

    def states(self, version: str, customer_ids: Sequence[str], shards: Sequence[int],
               challenger: str = "") -> tuple[list[bytes | None], list[Live],
                                              list[bytes | None]]:
        """Records, live hashes and (with ``challenger``) the challenger's records of
        ``customer_ids``, in their order."""
        n = len(customer_ids)
        by_shard: dict[int, list[int]] = {}
        for i, shard in enumerate(shards):
            by_shard.setdefault(shard, []).append(i)
        groups: list[tuple[int, list[int]]] = []
        for shard, rows in by_shard.items():
            groups += [(shard, rows[at:at + HMGET_FIELDS])
                       for at in range(0, len(rows), HMGET_FIELDS)]
        versions = [version, challenger] if challenger else [version]
        packed = [_pack(("HMGET", self.keys.customers_of_shard(v, shard),
                         *(customer_ids[i] for i in rows)))
                  for v in versions for shard, rows in groups]
        live_key = self.keys.live_in
        for shard, customer_id in zip(shards, customer_ids, strict=True):
            key = live_key(shard, customer_id).encode()
            packed.append(b"*2\r\n$7\r\nHGETALL\r\n$%d\r\n%b\r\n" % (len(key), key))
        replies = self._exchange(packed)
        out: list[list[bytes | None]] = []
        for k in range(len(versions)):
            records: list[bytes | None] = [None] * n
            for (_, rows), reply in zip(groups, replies[k * len(groups):(k + 1) * len(groups)],
                                        strict=True):
                for i, raw in zip(rows, reply, strict=True):
                    records[i] = raw
            out.append(records)
        lives = [_pairs(r) if r else {} for r in replies[len(versions) * len(groups):]]
        return out[0], lives, out[1] if challenger else [None] * n

    def budgets(self) -> dict[str, str]:
        reply = self._exchange([_pack(("HGETALL", self.keys.budgets))])[0]
        return {k.decode(): v.decode() for k, v in _pairs(reply).items()}

    def reserve(self, offer_id: str, day: str, segments: Sequence[str]) -> list[bool]:
        """One script call: a unit of ``offer_id`` for each grant (its customer's segment),
        best first; which ones Redis granted."""
        reply = self._exchange([_pack(("EVAL", budget_scripts.CAMPAIGN_RESERVE_LUA, "1",
                                       self.keys.budgets, offer_id, day, *segments))])[0]
        return [bool(v) for v in reply]

    def write_log(self, entries: Iterable[tuple[str, list[bytes | str]]],
                  max_per_shard: int) -> int:
        """Decision-log entries (customer id, fields), as serving appends them; the count."""
        limit = str(max_per_shard)
        return self._send(_pack(decision_log_command(self.keys, c, limit, f))
                          for c, f in entries)

    def write_contacts(self, contacts: Iterable[tuple[str, str]], now: float, keep: int) -> int:
        """A contact on each (customer, channel), serving's contact script; the count."""
        self._exchange([_pack(("SCRIPT", "LOAD", budget_scripts.CONTACT_LUA))])
        stamp, kept, ttl = f"{now:.0f}", str(keep), str(LIVE_TTL_SECONDS)
        return self._send(_pack(("EVALSHA", _CONTACT_SHA, "1", self.keys.live(c), f"c:{ch}",
                                 stamp, kept, ttl)) for c, ch in contacts)

    def _send(self, packed: Iterable[bytes]) -> int:
        block: list[bytes] = []
        sent = 0
        for command in packed:
            block.append(command)
            if len(block) >= WRITE_BLOCK:
                self._exchange(block)
                sent += len(block)
                block = []
        if block:
            self._exchange(block)
            sent += len(block)
        return sent

    def close(self) -> None:
        self._connection.close()


def _pairs(reply: Any) -> Live:
    if isinstance(reply, dict):
        return reply
    items = iter(reply)
    return dict(zip(items, items, strict=True))
