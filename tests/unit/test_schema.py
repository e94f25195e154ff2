"""The Redis layout is a contract between training and serving: names and bytes are fixed."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from recsvc.core import schema


def test_key_names_are_fixed_byte_for_byte() -> None:
    keys = schema.Keys("recsvc")
    v = "20261124T101500Z-3f9a1c"
    assert keys.active == "recsvc:active"
    assert keys.previous == "recsvc:previous"
    assert keys.versions == "recsvc:versions"
    assert keys.train_lock == "recsvc:lock:train"
    assert keys.meta(v) == "recsvc:v:20261124T101500Z-3f9a1c:meta"
    assert keys.offers(v) == "recsvc:v:20261124T101500Z-3f9a1c:offers"
    assert keys.segment(v, 3) == "recsvc:v:20261124T101500Z-3f9a1c:seg:3"
    assert keys.global_popularity(v) == "recsvc:v:20261124T101500Z-3f9a1c:global"
    assert keys.customers(v) == "recsvc:v:20261124T101500Z-3f9a1c:customers"
    assert len(keys.version_keys(v, 2)) == 6


def test_live_state_keys_carry_the_customer_shard_as_a_hash_tag() -> None:
    keys = schema.Keys("recsvc")
    shard = schema.shard_of("C0000001")
    assert shard == 2513447910 % 64 == 38  # CRC-32 of b"C0000001", part of the format
    assert keys.live("C0000001") == "recsvc:live:{38}:C0000001"
    assert keys.events(5) == "recsvc:events:{5}"
    assert keys.dedup(5) == "recsvc:dedup:{5}"
    assert keys.decisions(5) == "recsvc:decisions:{5}"
    assert (keys.budgets, keys.offers_live, keys.offers_rev, keys.do_not_contact,
            keys.experiments) == ("recsvc:budgets", "recsvc:offers:live", "recsvc:offers:rev",
                                  "recsvc:dnc", "recsvc:experiments")


def test_cluster_key_names_put_control_keys_on_one_slot_and_records_on_the_shard() -> None:
    """RECSVC_REDIS_CLUSTER: byte for byte, and the slots that make scripts legal and a
    Recommend one round trip (docs/DESIGN.md section 6, "Redis Cluster")."""
    from redis.crc import key_slot

    keys, v = schema.Keys("recsvc", cluster=True), "20261124T101500Z-3f9a1c"
    control = [keys.active, keys.previous, keys.versions, keys.train_lock, keys.meta(v),
               keys.offers(v), keys.segment(v, 3), keys.global_popularity(v), keys.budgets,
               keys.offers_live, keys.offers_rev, keys.do_not_contact, keys.experiments,
               keys.foldin_replayed]
    assert keys.active == "{recsvc}:active" and keys.meta(v) == "{recsvc}:v:" + v + ":meta"
    assert len({key_slot(k.encode()) for k in control}) == 1
    assert keys.customer_hash_of(v, "C0000001") == f"recsvc:v:{v}:customers:{{38}}"
    assert keys.live("C0000001") == "recsvc:live:{38}:C0000001"
    assert keys.budget_use(38) == "recsvc:budgetuse:{38}"
    for shard in (0, 38, 63):
        same = {keys.customer_hash(v, shard), keys.live_in(shard, "x"), keys.events(shard),
                keys.dedup(shard), keys.decisions(shard), keys.budget_use(shard)}
        assert len({key_slot(k.encode()) for k in same}) == 1
    assert len(keys.customer_hashes(v)) == schema.SHARDS
    assert len({key_slot(k.encode()) for k in keys.customer_hashes(v)}) == schema.SHARDS
    single = schema.Keys("recsvc")
    assert single.customer_hash_of(v, "C0000001") == single.customers(v)
    assert single.customer_hashes(v) == [single.customers(v)]


def test_version_ids_sort_by_time_and_are_unique() -> None:
    early = schema.new_version_id(datetime(2026, 1, 1, tzinfo=UTC))
    late = schema.new_version_id(datetime(2026, 1, 2, tzinfo=UTC))
    assert early.startswith("20260101T000000Z-") and early < late
    assert schema.new_version_id() != schema.new_version_id()


def test_customer_record_layout_is_header_then_vector_accepted_cells_attributes() -> None:
    raw = schema.encode_customer_record(2, np.array([1.0, -2.0], dtype=np.float32), [7, 300],
                                        cell_offers=[7, 9], cell_confidence=[4.0, -1.0],
                                        attributes=[5])
    assert raw == (bytes([2, 0, 2, 0, 2, 0, 2, 0, 2, 0, 1, 0])
                   + np.array([1.0, -2.0], dtype="<f4").tobytes()
                   + np.array([7, 300], dtype="<u4").tobytes()
                   + np.array([7, 9], dtype="<u4").tobytes()
                   + np.array([4.0, -1.0], dtype="<f4").tobytes()
                   + np.array([5], dtype="<u4").tobytes())
    record = schema.decode_customer_record(raw)
    assert record.segment_index == 2
    assert record.vector.tolist() == [1.0, -2.0]
    assert record.accepted.tolist() == [7, 300]
    assert record.cell_offers.tolist() == [7, 9]
    assert record.cell_confidence.tolist() == [4.0, -1.0]
    assert record.attributes.tolist() == [5]


def test_format_1_records_of_earlier_versions_still_decode() -> None:
    raw = (bytes([1, 0, 2, 0, 2, 0, 1, 0]) + np.array([1.0, -2.0], dtype="<f4").tobytes()
           + np.array([7], dtype="<u4").tobytes())
    record = schema.decode_customer_record(raw)
    assert (record.segment_index, record.vector.tolist(), record.accepted.tolist()) == \
        (2, [1.0, -2.0], [7])
    assert len(record.cell_offers) == len(record.attributes) == 0


def test_a_record_without_vector_decodes_to_an_empty_vector() -> None:
    record = schema.decode_customer_record(
        schema.encode_customer_record(0, np.empty(0, np.float32), []))
    assert len(record.vector) == 0 and len(record.accepted) == 0


@pytest.mark.parametrize("raw", [b"", b"\x01\x00", b"\x02" + bytes(9), b"\x03" + bytes(11),
                                 schema.pack_record_header(0, 2, 0) + bytes(4)])
def test_malformed_records_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        schema.decode_customer_record(raw)


def test_blob_codecs_round_trip() -> None:
    values = np.array([[0.5, 1.5], [2.5, -3.5]], dtype=np.float32)
    assert schema.decode_f32(schema.encode_f32(values)).reshape(2, 2).tolist() == values.tolist()
    assert schema.decode_u32(schema.encode_u32([1, 2**32 - 1])).tolist() == [1, 2**32 - 1]
    with pytest.raises(ValueError):
        schema.decode_f32(b"abc")


def test_feedback_keys_and_live_fields_are_fixed_byte_for_byte() -> None:
    keys = schema.Keys("recsvc")
    # crc32(b"c1") = 0x5ed72aa1 = 1591159457; % 64 = 33
    assert schema.shard_of("c1") == 33
    assert keys.live("c1") == "recsvc:live:{33}:c1"
    assert keys.foldin_replayed == "recsvc:foldin:replayed"
    assert schema.live_record_field("V1") == "r:V1"
    assert schema.live_folded_field("V1") == "f:V1"
    assert (schema.LIVE_SEGMENT, schema.LIVE_ACCEPTED, schema.LIVE_DECLINED, schema.LIVE_IGNORED,
            schema.LIVE_CONTACTS) == ("seg", "a:", "d:", "n:", "c:")
