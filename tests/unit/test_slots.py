"""Redis Cluster routing's pure parts: the slot of a call, the slot map, redirections."""

from __future__ import annotations

import hiredis
import pytest
from redis.crc import key_slot

from recsvc.core import schema
from recsvc.store.reads import reader
from recsvc.store.transport.slots import (
    SLOTS,
    CrossSlotError,
    SlotMap,
    SlotMapError,
    by_master,
    call_slot,
    cluster_unavailable,
    command_slot,
    packed_slot,
    parse_cluster_slots,
    redirect,
)

KEYS = schema.Keys("recsvc", cluster=True)


def test_the_slot_of_a_command_is_its_first_keys() -> None:
    assert command_slot(("HGET", "a{x}b", "field")) == key_slot(b"x")
    assert command_slot((b"HGETALL", b"plain")) == key_slot(b"plain")
    assert command_slot(("XADD", "recsvc:decisions:{7}", "MAXLEN", "~", "10", "*", "f", "v")) \
        == key_slot(b"7")
    # Scripts: the first KEYS entry, never the script or its hash.
    assert command_slot(("EVALSHA", "ab" * 20, "1", "{recsvc}:budgets", "x")) \
        == key_slot(b"recsvc")
    assert command_slot(("EVAL", "return 1", "2", "k{3}", "other")) == key_slot(b"3")


def test_a_command_without_a_key_has_no_slot() -> None:
    with pytest.raises(CrossSlotError, match="without keys"):
        command_slot(("EVAL", "return 1", "0"))
    with pytest.raises(CrossSlotError, match="without a key"):
        command_slot(("PING",))


def test_every_request_call_the_layout_builds_is_on_one_slot() -> None:
    version, challenger = "20261124T101500Z-3f9a1c", "20261125T101500Z-aaaaaa"
    for customer in ("C1", "C0000002", "ü-3", "x" * 200):
        commands = reader.state_commands(KEYS, version, customer, challenger)
        shard_slot = key_slot(str(schema.shard_of(customer)).encode())
        assert call_slot(commands) == shard_slot
        assert command_slot(reader.decision_log_command(KEYS, customer, "10", ["f", "v"])) \
            == shard_slot
        assert command_slot(reader.contact_command(KEYS, customer, "email", 1.0, 3)) == shard_slot
    evalsha, evaluate = reader.reserve_commands(KEYS, "20261206", "seg", 3, [("o1", True)])
    assert call_slot([evalsha]) == call_slot([evaluate]) == key_slot(b"recsvc")


def test_a_call_over_several_slots_is_refused_loudly() -> None:
    with pytest.raises(CrossSlotError, match="spans slots"):
        call_slot([("HGET", "a{1}", "f"), ("HGET", "a{2}", "f")])
    with pytest.raises(CrossSlotError):
        call_slot([])
    # The single-Redis batch read (one HMGET of the whole hash) is not a cluster call.
    with pytest.raises(CrossSlotError):
        call_slot(reader.states_commands(KEYS, "v", ["C1", "C2", "C3", "C4"]))


def test_a_batch_chunk_is_one_call_per_shard_and_its_states_come_back_in_order() -> None:
    ids = [f"C{i}" for i in range(40)] + ["C3"]  # a repeated id keeps its place twice
    calls, positions = reader.sharded_states_commands(KEYS, "v", ids, challenger="w")
    assert sorted(i for p in positions for i in p) == list(range(len(ids)))
    for call, members in zip(calls, positions, strict=True):
        call_slot(call)  # one slot per call
        shard = schema.shard_of(ids[members[0]])
        assert call[0] == ("HMGET", KEYS.customer_hash("v", shard), *(ids[i] for i in members))
        assert call[-1] == ("HMGET", KEYS.customer_hash("w", shard), *(ids[i] for i in members))
    # Replies as Redis would give them: the record is the id's bytes, the live hash one field.
    replies = [[[ids[i].encode() for i in members],
                *([b"seen", ids[i].encode()] for i in members),
                [b"w-" + ids[i].encode() for i in members]]
               for members in positions]
    states = reader.sharded_states_of(replies, positions, len(ids))
    assert [s[0] for s in states] == [c.encode() for c in ids]
    assert [s[1] for s in states] == [{b"seen": c.encode()} for c in ids]
    assert [s[2] for s in states] == [b"w-" + c.encode() for c in ids]


def test_cluster_slots_reply_becomes_a_map_of_masters_and_nodes() -> None:
    reply = [
        [0, 5460, [b"127.0.0.1", 7000, b"id0"], [b"127.0.0.1", 7003, b"id3"]],
        [5461, 10922, [b"", 7001, b"id1"]],  # an empty host: the node asked
        [10923, 16383, [b"10.0.0.2", 7002, b"id2"], [b"10.0.0.5", 7005, b"id5"]],
    ]
    slot_map = parse_cluster_slots(reply, ("h.example", 7001))
    assert slot_map.owners[0] == slot_map.owners[5460] == ("127.0.0.1", 7000)
    assert slot_map.owners[5461] == ("h.example", 7001)
    assert slot_map.owners[16383] == ("10.0.0.2", 7002)
    assert len(slot_map.owners) == SLOTS
    assert slot_map.masters == {("127.0.0.1", 7000), ("h.example", 7001), ("10.0.0.2", 7002)}
    assert slot_map.nodes[:3] == (("127.0.0.1", 7000), ("h.example", 7001), ("10.0.0.2", 7002))
    assert set(slot_map.nodes[3:]) == {("127.0.0.1", 7003), ("10.0.0.5", 7005)}
    moved = slot_map.moved(17, ("127.0.0.1", 7003))
    assert moved.owners[17] == ("127.0.0.1", 7003) and slot_map.owners[17] != moved.owners[17]


def test_a_partial_map_leaves_slots_unassigned_and_bad_replies_are_named() -> None:
    partial = parse_cluster_slots([[0, 99, [b"127.0.0.1", 7000]]], ("127.0.0.1", 7000))
    assert partial.owners[99] == ("127.0.0.1", 7000) and partial.owners[100] is None
    for bad, named in [([], "no slot"), ([[0, 20000, [b"h", 1]]], "out of bounds"),
                       ([[0, 1]], "not \\[start"), ([[0, 1, [b"h"]]], "not \\[host"),
                       ([[0, 1, [b"h", b"port"]]], "port is not a number"), (b"x", "no slot")]:
        with pytest.raises(SlotMapError, match=named):
            parse_cluster_slots(bad, ("h", 1))


def test_redirections_and_cluster_states_are_read_from_error_replies() -> None:
    assert redirect("MOVED 3999 127.0.0.1:6381") == ("MOVED", 3999, ("127.0.0.1", 6381))
    assert redirect("ASK 12 10.0.0.1:7000") == ("ASK", 12, ("10.0.0.1", 7000))
    assert redirect("MOVED 3999 :6381") == ("MOVED", 3999, ("", 6381))
    assert redirect("MOVED 1 [::1]:7000") == ("MOVED", 1, ("[::1]", 7000))
    assert redirect("WRONGTYPE Operation against a key") is None
    assert redirect("MOVED nonsense") is None
    assert cluster_unavailable("CLUSTERDOWN The cluster is down")
    assert cluster_unavailable("TRYAGAIN Multiple keys request during rehashing")
    assert not cluster_unavailable("NOSCRIPT No matching script")


def test_calls_are_grouped_by_master_in_first_seen_order() -> None:
    a, b = ("h", 1), ("h", 2)
    owners: list[tuple[str, int] | None] = [a] * 100 + [b] * 100 + [None] * (SLOTS - 200)
    slot_map = SlotMap(tuple(owners), (a, b))
    assert by_master([150, 3, 120, 5, 300], slot_map) == {b: [0, 2], a: [1, 3], None: [4]}


def test_the_slot_of_a_packed_command_is_the_unpacked_ones() -> None:
    """What a batch job packs itself (the campaign) is routed from its bytes."""
    from recsvc.store.bulk.campaign import LogPacker

    commands = [("HMGET", KEYS.customer_hash("v1", 3), "c1", "c2"),
                ("EVALSHA", "ab" * 20, "2", KEYS.live_in(9, "c1"), KEYS.live_in(9, "c2")),
                ("EVAL", "return 1", "1", KEYS.budgets, "offer", "day", "gold"),
                ("HGETALL", KEYS.budgets)]
    for command in commands:
        packed = hiredis.pack_command(command)  # type: ignore[arg-type]
        assert packed_slot(packed) == command_slot(command)
    log = LogPacker(KEYS, 100, [b"id", b"offers"]).pack(5, [b"x", "o1|o2"])
    assert packed_slot(log) == key_slot(b"5")
