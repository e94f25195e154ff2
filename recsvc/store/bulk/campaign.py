"""The campaign's Redis side: customer state read in pipelined bulk, budget units reserved per
offer, the decision log and contacts written in bulk. One blocking hiredis-parsed connection.

Reads: per chunk of customers, the records grouped by shard (``Keys.customer_hash``) with
one HMGET of at most ``HMGET_FIELDS`` ids per command, the live hashes of each shard group in one
script call that returns only the non-empty ones (most are empty) and, while an experiment runs,
the challenger version's records: every command of a chunk in one write, sent before the
previous chunk is decided, replies read after. Writes: the same entries serving writes (the decision
log's XADD, the contact script), pipelined in blocks.

On a Redis Cluster (``cluster``) every command above is on one slot (a shard's hash tag, or the
control slot for the budgets): the same packed commands go through ``cluster_batch`` (each to
its slot's master, every master written before any reply is read); a single Redis keeps its
one connection and its code path. What was written is counted (``written``) so a failure can
say it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import hiredis

from recsvc.core import schema
from recsvc.core.errors import StoreError
from recsvc.store.control import budgets as budget_scripts
from recsvc.store.reads.reader import LIVE_TTL_SECONDS
from recsvc.store.transport.blocking_pipeline import Connection
from recsvc.store.transport.cluster_batch import ClusterBatch, Sent
from recsvc.store.transport.redis_pipeline import Endpoint, ErrorReply, PipelineError

HMGET_FIELDS = 1000
WRITE_BLOCK = 2000  # commands per write when sending the log and the contacts
RESERVE_UNITS = 2000  # grants per reserve script call (about 10 ms of Redis)
_CONTACT_SHA = hashlib.sha1(budget_scripts.CONTACT_LUA.encode()).hexdigest()
# KEYS: live hashes of one shard. Returns [position, HGETALL reply, ...] of the non-empty ones.
LIVE_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  local h = redis.call('HGETALL', key)
  if #h > 0 then out[#out + 1] = i; out[#out + 1] = h end
end
return out
"""
_LIVE_SHA = hashlib.sha1(LIVE_LUA.encode()).hexdigest()

Live = dict[bytes, bytes]


def _pack(command: tuple[bytes | str, ...]) -> bytes:
    packed: bytes = hiredis.pack_command(command)  # type: ignore[arg-type]
    return packed


@dataclass(frozen=True)
class Pending:
    """Reads sent and not yet read back."""

    customers: int
    groups: list[tuple[int, list[int]]]  # (shard, positions in the chunk) per command
    versions: int
    replies: int


class CampaignStore:
    def __init__(self, url: str, keys: schema.Keys, timeout: float = 120.0,
                 cluster: bool = False) -> None:
        self.keys = keys
        # What Redis confirmed, and what was sent without an answer when a write failed.
        self.reserved: dict[str, int] = {}  # budget units per offer
        self.written: dict[str, int] = {"decision-log entries": 0, "contacts": 0}
        self.unconfirmed: dict[str, int] = {}
        self._connection: Connection | None = None
        self._batch: ClusterBatch | None = None
        self._sent: Sent | None = None  # the cluster's reads in flight
        if cluster:
            self._batch = ClusterBatch(url, timeout)
            self._batch.add_script(LIVE_LUA)
        else:
            try:
                self._connection = Connection(Endpoint.of(url), timeout)
            except PipelineError as exc:
                raise StoreError(str(exc)) from exc
            self._exchange([_pack(("SCRIPT", "LOAD", LIVE_LUA))])
        # ``Keys.live_in`` of every shard without the customer: a key is head + id.
        self._live_heads = [keys.live_in(shard, "") for shard in range(schema.SHARDS)]

    def _exchange(self, packed: list[bytes]) -> list[Any]:
        if self._batch is not None:
            replies = self._batch.execute(packed)
            for reply in replies:
                if isinstance(reply, ErrorReply):
                    raise StoreError(f"Redis: {reply}")
            return replies
        assert self._connection is not None
        try:
            return self._connection.exchange(packed)
        except PipelineError as exc:
            raise StoreError(f"Redis: {exc}") from exc

    def send_states(self, version: str, customer_ids: Sequence[str], shards: Sequence[int],
                    challenger: str = "") -> Pending:
        """Sends the reads of ``customer_ids`` (records, live hashes, the ``challenger``
        version's records) without waiting: the caller decides the previous chunk meanwhile
        and collects with ``receive_states``."""
        by_shard: dict[int, list[int]] = {}
        for i, shard in enumerate(shards):
            by_shard.setdefault(shard, []).append(i)
        groups: list[tuple[int, list[int]]] = []
        for shard, rows in by_shard.items():
            groups += [(shard, rows[at:at + HMGET_FIELDS])
                       for at in range(0, len(rows), HMGET_FIELDS)]
        versions = [version, challenger] if challenger else [version]
        heads = self._live_heads
        packed = [_pack(("HMGET", self.keys.customer_hash(v, shard),
                         *(customer_ids[i] for i in rows)))
                  for v in versions for shard, rows in groups]
        # The live hashes of a shard in one script call (one slot): only the non-empty ones
        # come back, so the reply of a chunk is a few entries instead of one per customer.
        packed += [_pack(("EVALSHA", _LIVE_SHA, str(len(rows)),
                          *[heads[shard] + customer_ids[i] for i in rows]))
                   for shard, rows in groups]
        if self._batch is not None:
            self._sent = self._batch.begin(packed)
            return Pending(len(customer_ids), groups, len(versions), len(packed))
        assert self._connection is not None
        try:
            self._connection.sock.sendall(b"".join(packed))
        except OSError as exc:
            raise StoreError(f"Redis: cannot send: {exc}") from exc
        return Pending(len(customer_ids), groups, len(versions), len(packed))

    def receive_states(self, pending: Pending) -> tuple[list[bytes | None], list[Live],
                                                        list[bytes | None]]:
        """Records, live hashes and the challenger's records of a ``send_states``, in order."""
        if self._batch is not None:
            assert self._sent is not None
            replies = self._batch.finish(self._sent)
            self._sent = None
        else:
            connection = self._connection
            assert connection is not None
            replies = [self._reply(connection) for _ in range(pending.replies)]
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError | ErrorReply):
                raise StoreError(f"Redis: {reply}")
        n, groups = pending.customers, pending.groups
        out: list[list[bytes | None]] = []
        for k in range(pending.versions):
            records: list[bytes | None] = [None] * n
            for (_, rows), reply in zip(groups, replies[k * len(groups):(k + 1) * len(groups)],
                                        strict=True):
                for i, raw in zip(rows, reply, strict=True):
                    records[i] = raw
            out.append(records)
        lives: list[Live] = [{}] * n
        for (_, rows), reply in zip(groups, replies[pending.versions * len(groups):],
                                    strict=True):
            for at in range(0, len(reply), 2):
                lives[rows[int(reply[at]) - 1]] = _pairs(reply[at + 1])
        return out[0], lives, out[1] if pending.versions > 1 else [None] * n

    def states(self, version: str, customer_ids: Sequence[str], shards: Sequence[int],
               challenger: str = "") -> tuple[list[bytes | None], list[Live],
                                              list[bytes | None]]:
        return self.receive_states(self.send_states(version, customer_ids, shards, challenger))

    @staticmethod
    def _reply(connection: Connection) -> Any:
        while True:
            reply = connection.reader.gets()
            if reply is not False:
                return reply
            try:
                data = connection.sock.recv(1 << 20)
            except OSError as exc:
                raise StoreError(f"Redis did not answer: {exc}") from exc
            if not data:
                raise StoreError("Redis closed the connection")
            connection.reader.feed(data)

    def budgets(self) -> dict[str, str]:
        reply = self._exchange([_pack(("HGETALL", self.keys.budgets))])[0]
        return {k.decode(): v.decode() for k, v in _pairs(reply).items()}

    def reserve(self, offer_id: str, day: str, segments: Sequence[str]) -> list[bool]:
        """A unit of ``offer_id`` for each grant (its customer's segment), best first; which
        ones Redis granted. One script call per ``RESERVE_UNITS`` grants: a script blocks
        Redis while it runs (~5 µs a unit), and serving's reads wait at most 25 ms."""
        granted: list[bool] = []
        for at in range(0, len(segments), RESERVE_UNITS):
            try:
                reply = self._exchange([_pack((
                    "EVAL", budget_scripts.CAMPAIGN_RESERVE_LUA, "1", self.keys.budgets,
                    offer_id, day, *segments[at:at + RESERVE_UNITS]))])[0]
            except StoreError:
                # The script may have run: its units are neither confirmed nor known free.
                self.unconfirmed[f"budget units of {offer_id}"] = len(segments[at:at +
                                                                              RESERVE_UNITS])
                raise
            granted += [bool(v) for v in reply]
            self.reserved[offer_id] = self.reserved.get(offer_id, 0) + sum(map(bool, reply))
        return granted

    def write_log(self, entries: Iterable[tuple[int, list[bytes | str]]],
                  max_per_shard: int) -> int:
        """Decision-log entries (customer's shard, fields), appended as serving appends them
        (``reader.decision_log_command``); the count."""
        packer: LogPacker | None = None

        def commands() -> Iterable[bytes]:
            nonlocal packer
            for shard, fields in entries:
                if packer is None:
                    packer = LogPacker(self.keys, max_per_shard, fields[0::2])
                yield packer.pack(shard, fields[1::2])

        return self._send(commands(), "decision-log entries")

    def write_contacts(self, contacts: Iterable[tuple[str, str]], now: float, keep: int) -> int:
        """A contact on each (customer, channel), serving's contact script; the count."""
        if self._batch is not None:
            self._batch.add_script(budget_scripts.CONTACT_LUA)
        else:
            self._exchange([_pack(("SCRIPT", "LOAD", budget_scripts.CONTACT_LUA))])
        stamp, kept, ttl = f"{now:.0f}", str(keep), str(LIVE_TTL_SECONDS)
        return self._send((_pack(("EVALSHA", _CONTACT_SHA, "1", self.keys.live(c), f"c:{ch}",
                                  stamp, kept, ttl)) for c, ch in contacts), "contacts")

    def _send(self, packed: Iterable[bytes], what: str) -> int:
        """Writes in blocks; a block's replies are read after the next block is sent, so Redis
        works on one while the next is encoded. StoreError after all when any failed; the
        writes answered are counted in ``written[what]`` as they are read."""
        if self._batch is not None:
            return self._send_cluster(packed, what)
        connection = self._connection
        assert connection is not None
        owed = sent = 0
        failed: list[str] = []
        block: list[bytes] = []

        def flush() -> None:
            nonlocal owed, sent
            try:
                connection.sock.sendall(b"".join(block))
            except OSError as exc:
                self.unconfirmed[what] = sent + len(block) - self.written[what]
                raise StoreError(f"Redis: cannot send: {exc}") from exc
            for _ in range(owed):
                reply = self._reply(connection)
                if isinstance(reply, hiredis.ReplyError):
                    failed.append(str(reply))
            self.written[what] += owed
            owed, sent = len(block), sent + len(block)
            block.clear()

        try:
            for command in packed:
                block.append(command)
                if len(block) >= WRITE_BLOCK:
                    flush()
            flush()
            for _ in range(owed):
                reply = self._reply(connection)
                if isinstance(reply, hiredis.ReplyError):
                    failed.append(str(reply))
            self.written[what] += owed
        except StoreError:
            self.unconfirmed.setdefault(what, sent - self.written[what])
            raise
        self.written[what] -= len(failed)
        if failed:
            raise StoreError(f"{len(failed)} of {sent} writes failed, the first: {failed[0]}")
        return sent

    def _send_cluster(self, packed: Iterable[bytes], what: str) -> int:
        """``_send`` on a cluster: a block to every master at once, the previous block's replies
        read meanwhile; the commands a MOVED (or ASK) answered are retried at the end, when no
        reply is owed any more (the retry uses the same connections)."""
        batch = self._batch
        assert batch is not None
        sent = 0
        failed: list[str] = []
        again: list[bytes] = []
        pending: Sent | None = None

        def collect(replies: list[Any], commands: list[bytes]) -> None:
            for command, reply in zip(commands, replies, strict=True):
                if batch.redirected(reply):
                    again.append(command)
                elif isinstance(reply, ErrorReply):
                    failed.append(str(reply))
                else:
                    self.written[what] += 1

        def blocks() -> Iterable[list[bytes]]:
            block: list[bytes] = []
            for command in packed:
                block.append(command)
                if len(block) >= WRITE_BLOCK:
                    yield block
                    block = []
            if block:
                yield block

        try:
            for block in blocks():
                ahead = batch.begin(block)
                sent += len(block)
                if pending is not None:
                    collect(batch.finish(pending, follow=False), pending.packed)
                pending = ahead
            if pending is not None:
                collect(batch.finish(pending, follow=False), pending.packed)
            if again:
                collect(batch.execute(again), again)
        except StoreError:
            self.unconfirmed[what] = sent - self.written[what] - len(failed)
            raise
        if failed:
            raise StoreError(f"{len(failed)} of {sent} writes failed, the first: {failed[0]}")
        return sent

    def report(self) -> str:
        """What this store wrote to Redis, in words (for an error that stops a campaign)."""
        parts = []
        if self.reserved:
            parts.append(f"{sum(self.reserved.values())} budget units reserved (" + ", ".join(
                f"{offer}: {n}" for offer, n in sorted(self.reserved.items())) + ")")
        parts += [f"{n} {what}" for what, n in self.written.items() if n]
        parts += [f"up to {n} more {what} sent without an answer"
                  for what, n in self.unconfirmed.items() if n]
        return "written to Redis before the failure: " + ("; ".join(parts) if parts else
                                                          "nothing")

    def close(self) -> None:
        if self._batch is not None:
            self._batch.close()
        if self._connection is not None:
            self._connection.close()


class LogPacker:
    """XADD commands of decision-log entries packed from one template: every entry has the
    same field names (``decision_log.entry_fields``), so only the values are formatted (a
    third of hiredis.pack_command's time for 33 arguments; the same bytes)."""

    def __init__(self, keys: schema.Keys, max_per_shard: int,
                 names: Sequence[bytes | str]) -> None:
        limit = str(max_per_shard).encode()
        head = b"*%d\r\n$4\r\nXADD\r\n$%%d\r\n%%b\r\n$6\r\nMAXLEN\r\n$1\r\n~\r\n" \
            b"$%d\r\n%b\r\n$1\r\n*\r\n" % (6 + 2 * len(names), len(limit), limit)
        body = b"".join(b"$%d\r\n%b\r\n$%%d\r\n%%b\r\n" % (len(n), n)
                        for n in (_bytes(name) for name in names))
        self._template = head + body
        self._keys = [keys.decisions(shard).encode() for shard in range(schema.SHARDS)]

    def pack(self, shard: int, values: Sequence[bytes | str]) -> bytes:
        """``values``: bytes (a str is encoded, at a cost: give bytes where it matters)."""
        key = self._keys[shard]
        raws = [v if type(v) is bytes else v.encode() for v in values]  # type: ignore[union-attr]
        packed: bytes = self._template % (len(key), key, *chain.from_iterable(
            zip(map(len, raws), raws, strict=True)))
        return packed


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _pairs(reply: Any) -> Live:
    if isinstance(reply, dict):
        return reply
    items = iter(reply)
    return dict(zip(items, items, strict=True))
