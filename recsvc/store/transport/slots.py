"""Redis Cluster routing, the pure parts: the slot of a hot-path call, the slot map from
``CLUSTER SLOTS``, redirections, and which master gets which of a batch's calls.

The hot-path connections (``cluster_pipeline``) do the I/O; nothing here touches a socket.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

SLOTS = REDIS_CLUSTER_HASH_SLOTS
Address = tuple[str, int]
Command = tuple[bytes | str, ...]

# Commands whose first key is not their second word: EVAL/EVALSHA name the script, then the
# number of keys, then the keys.
_SCRIPTS = frozenset((b"EVAL", b"EVALSHA", "EVAL", "EVALSHA", b"eval", b"evalsha", "eval",
                      "evalsha"))


class CrossSlotError(ValueError):
    """A call whose commands are on several slots: a programming error (the key layout puts
    everything one request reads on one slot), never sent."""


class SlotMapError(ValueError):
    """A ``CLUSTER SLOTS`` reply that cannot be read."""


def _encoded(key: bytes | str) -> bytes:
    return key if isinstance(key, bytes) else key.encode()


def command_slot(command: Command) -> int:
    """The slot of one command: its first key's (EVAL/EVALSHA: the first KEYS entry; the
    others the hot path sends, XADD, HGET, HGETALL, HMGET, HSET: the second word)."""
    if command[0] in _SCRIPTS:
        if len(command) < 4 or int(command[2]) < 1:
            raise CrossSlotError(f"{command[0]!r} without keys has no slot on a cluster")
        return key_slot(_encoded(command[3]))
    if len(command) < 2:
        raise CrossSlotError(f"{command[0]!r} without a key has no slot on a cluster")
    return key_slot(_encoded(command[1]))


def packed_slot(packed: bytes) -> int:
    """``command_slot`` of one command packed as RESP (``*N``, then ``$len`` bulk strings, as
    ``hiredis.pack_command`` writes it): a batch job routes what it packed itself."""
    end = packed.index(b"\r\n")
    count, at = int(packed[1:end]), end + 2
    words: list[bytes] = []
    for _ in range(min(count, 4)):  # the key is at most the fourth word (EVALSHA sha n key)
        end = packed.index(b"\r\n", at)
        size, at = int(packed[at + 1:end]), end + 2
        words.append(packed[at:at + size])
        at += size + 2
    return command_slot(tuple(words))


def call_slot(commands: Sequence[Command]) -> int:
    """The one slot of a pipelined call; CrossSlotError when its commands span several."""
    if not commands:
        raise CrossSlotError("an empty call has no slot")
    slot = command_slot(commands[0])
    for command in commands[1:]:
        other = command_slot(command)
        if other != slot:
            raise CrossSlotError(
                f"one call spans slots {slot} and {other} ({command[0]!r} "
                f"{command[1]!r:.60}): a hot-path call must stay on one slot")
    return slot


@dataclass(frozen=True)
class SlotMap:
    """Which master serves each slot, and every node named (where to ask for the next map)."""

    owners: tuple[Address | None, ...]  # per slot, its master (None: unassigned)
    nodes: tuple[Address, ...]  # masters first, then replicas

    @property
    def masters(self) -> set[Address]:
        return {a for a in self.owners if a is not None}

    def moved(self, slot: int, address: Address) -> SlotMap:
        """This map with one slot's master changed (a MOVED reply), until the next full read."""
        owners = list(self.owners)
        owners[slot] = address
        nodes = self.nodes if address in self.nodes else (address, *self.nodes)
        return SlotMap(tuple(owners), nodes)


def _address(node: Any, asked: Address) -> Address:
    """A node entry ``[host, port, ...]``; an empty or ``?`` host is the host asked (Redis
    answers so when it does not know its own address)."""
    if not isinstance(node, list | tuple) or len(node) < 2:
        raise SlotMapError(f"a node entry is not [host, port, ...]: {node!r:.80}")
    raw = node[0]
    host = raw.decode() if isinstance(raw, bytes) else str(raw)
    try:
        port = int(node[1])
    except (TypeError, ValueError) as exc:
        raise SlotMapError(f"a node's port is not a number: {node[1]!r:.40}") from exc
    return (host if host not in ("", "?") else asked[0], port)


def parse_cluster_slots(reply: Any, asked: Address) -> SlotMap:
    """``CLUSTER SLOTS`` (``[[start, end, master, replica...], ...]``) as a SlotMap. ``asked``
    is the node that answered (its host stands in for an empty one)."""
    if not isinstance(reply, list) or not reply:
        raise SlotMapError(f"CLUSTER SLOTS answered {reply!r:.80} (no slot is served)")
    owners: list[Address | None] = [None] * SLOTS
    masters: list[Address] = []
    replicas: list[Address] = []
    for entry in reply:
        if not isinstance(entry, list) or len(entry) < 3:
            raise SlotMapError(f"a CLUSTER SLOTS entry is not [start, end, master, ...]: "
                               f"{entry!r:.80}")
        start, end = int(entry[0]), int(entry[1])
        if not 0 <= start <= end < SLOTS:
            raise SlotMapError(f"a CLUSTER SLOTS range is out of bounds: {start}-{end}")
        master = _address(entry[2], asked)
        owners[start:end + 1] = [master] * (end - start + 1)
        if master not in masters:
            masters.append(master)
        for node in entry[3:]:
            replica = _address(node, asked)
            if replica not in replicas:
                replicas.append(replica)
    return SlotMap(tuple(owners), (*masters, *(r for r in replicas if r not in masters)))


def redirect(message: str) -> tuple[str, int, Address] | None:
    """A ``MOVED <slot> <host>:<port>`` or ``ASK ...`` error reply as (kind, slot, address);
    None for any other error."""
    kind, _, rest = message.partition(" ")
    if kind not in ("MOVED", "ASK"):
        return None
    slot, _, where = rest.strip().partition(" ")
    host, _, port = where.rpartition(":")
    try:
        return kind, int(slot), (host, int(port))
    except ValueError:
        return None


def cluster_unavailable(message: str) -> bool:
    """An error reply that says the cluster cannot serve the slot now (a failover under way)."""
    return message.startswith(("CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN"))


def by_master(slots: Sequence[int], slot_map: SlotMap) -> dict[Address | None, list[int]]:
    """The indices of ``slots`` grouped by their master, in first-seen order (None: a slot the
    map does not assign)."""
    groups: dict[Address | None, list[int]] = {}
    owners = slot_map.owners
    for i, slot in enumerate(slots):
        groups.setdefault(owners[slot], []).append(i)
    return groups
