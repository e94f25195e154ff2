"""A batch job's packed commands on a Redis Cluster (``recsvc campaign``): each to the master of
its slot, one connection per master, every master written before any reply is read, the
replies handed back in the caller's order.

The map and the connections are ``ClusterThreadPipelines``' (used from one thread: one
connection per master). A ``MOVED`` re-reads the map and retries the commands it answered once
on their new master, an ``ASK`` asks the named node once; a redirection after that, a master
that cannot be reached or a map that cannot be read raises StoreError naming the node. Scripts
called by ``EVALSHA`` are loaded on a master before its first command (a promoted replica too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import hiredis

from recsvc.core.errors import StoreError
from recsvc.store.transport.blocking_pipeline import Connection
from recsvc.store.transport.cluster_blocking import ClusterThreadPipelines
from recsvc.store.transport.redis_pipeline import ErrorReply, PipelineError
from recsvc.store.transport.slots import Address, SlotMap, by_master, packed_slot, redirect

_ASKING: bytes = hiredis.pack_command(("ASKING",))


def _where(address: Address | None) -> str:
    return "the cluster" if address is None else f"Redis Cluster master {address[0]}:{address[1]}"


@dataclass(frozen=True)
class Sent:
    """Commands written to their masters, replies not read yet."""

    packed: list[bytes]
    # per master: where, the connection, the commands' positions, the script loads before them
    parts: list[tuple[Address, Connection, list[int], int]]


class ClusterBatch:
    def __init__(self, url: str, timeout: float) -> None:
        self.timeout = timeout
        self._pipes = ClusterThreadPipelines(url, 0.0, timeout)
        self._scripts: list[bytes] = []  # SCRIPT LOADs every master gets before its first command
        self._ready: set[Address] = set()  # masters that have them
        self._map = self._read_map()

    def add_script(self, lua: str) -> None:
        self._scripts.append(hiredis.pack_command(("SCRIPT", "LOAD", lua)))  # type: ignore[arg-type]
        self._ready.clear()

    def execute(self, packed: list[bytes]) -> list[Any]:
        """Replies in order; an error reply as an ErrorReply in its place."""
        return self.finish(self.begin(packed))

    def begin(self, packed: list[bytes]) -> Sent:
        """Write each command to its slot's master, every master before any reply is read.
        Several may be unread, read in the order sent; only the last may be ``finish``ed with
        ``follow`` (its retries use the same connections)."""
        return Sent(packed, self._write(packed, [packed_slot(p) for p in packed]))

    def finish(self, sent: Sent, follow: bool = True) -> list[Any]:
        """The replies of ``sent`` in order. ``follow`` False leaves a MOVED/ASK in its place
        (``redirected``): the caller retries those with ``execute`` once nothing is unread."""
        replies: list[Any] = [None] * len(sent.packed)
        came_from: dict[int, Address] = {}
        self._read(sent.parts, replies, came_from)
        redirected = [i for i, r in enumerate(replies)
                      if isinstance(r, ErrorReply) and redirect(str(r)) is not None]
        if not redirected or not follow:
            return replies
        # Once: MOVED re-reads the map (the commands go to the slot's master now), ASK goes to
        # the named node after an ASKING. A command redirected was not run: retrying is safe.
        asked: dict[Address, list[int]] = {}
        moved: list[int] = []
        for i in redirected:
            kind, _, target = redirect(str(replies[i])) or ("", 0, ("", 0))
            if kind == "ASK":
                node = target if target[0] else (came_from[i][0], target[1])
                asked.setdefault(node, []).append(i)
            else:
                moved.append(i)
        if moved:
            self._map = self._read_map()
        parts = self._write([sent.packed[i] for i in moved], [packed_slot(sent.packed[i])
                                                              for i in moved])
        parts = [(a, c, [moved[k] for k in members], n) for a, c, members, n in parts]
        for node, members in asked.items():
            connection = self._begin(node, [c for i in members for c in (_ASKING,
                                                                           sent.packed[i])])
            parts.append((node, connection, members, -1))  # -1: each after an ASKING
        self._read(parts, replies, came_from)
        for i in redirected:
            if isinstance(replies[i], ErrorReply) and redirect(str(replies[i])) is not None:
                raise StoreError(f"{_where(came_from[i])}: still redirected after the slot "
                                 f"map was read again: {replies[i]}")
        return replies

    @staticmethod
    def redirected(reply: Any) -> bool:
        return isinstance(reply, ErrorReply) and redirect(str(reply)) is not None

    def _write(self, packed: list[bytes], slots: list[int]
               ) -> list[tuple[Address, Connection, list[int], int]]:
        parts: list[tuple[Address, Connection, list[int], int]] = []
        for address, members in by_master(slots, self._map).items():
            if address is None:
                raise StoreError(f"Redis Cluster: slot {slots[members[0]]} has no master "
                                 "(the cluster is not serving all its slots)")
            loads = [] if address in self._ready else self._scripts
            connection = self._begin(address, [*loads, *(packed[i] for i in members)])
            self._ready.add(address)
            parts.append((address, connection, members, len(loads)))
        return parts

    def _begin(self, address: Address, packed: list[bytes]) -> Connection:
        try:
            return self._pipes.link(address).begin_packed(packed, self.timeout)
        except PipelineError as exc:
            raise StoreError(f"{_where(address)} cannot be reached: {exc}") from exc

    def _read(self, parts: list[tuple[Address, Connection, list[int], int]], replies: list[Any],
              came_from: dict[int, Address]) -> None:
        for address, connection, members, loads in parts:
            count = 2 * len(members) if loads < 0 else loads + len(members)
            try:
                got = self._pipes.link(address).finish(connection, count)
            except PipelineError as exc:
                raise StoreError(f"{_where(address)} did not answer: {exc}") from exc
            if loads < 0:
                got = got[1::2]  # the ASKINGs' OKs
            else:
                for reply in got[:loads]:
                    if isinstance(reply, ErrorReply):
                        raise StoreError(f"{_where(address)}: SCRIPT LOAD failed: {reply}")
                got = got[loads:]
            for i, reply in zip(members, got, strict=True):
                replies[i] = reply
                came_from[i] = address

    def _read_map(self) -> SlotMap:
        try:
            return self._pipes.read_map(self.timeout)
        except PipelineError as exc:
            raise StoreError(f"cannot read the Redis Cluster slot map: {exc}") from exc

    def close(self) -> None:
        self._pipes.close()
