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


def test_version_ids_sort_by_time_and_are_unique() -> None:
    early = schema.new_version_id(datetime(2026, 1, 1, tzinfo=UTC))
    late = schema.new_version_id(datetime(2026, 1, 2, tzinfo=UTC))
    assert early.startswith("20260101T000000Z-") and early < late
    assert schema.new_version_id() != schema.new_version_id()


def test_customer_record_layout_is_header_then_le_float32_then_le_uint32() -> None:
    raw = schema.encode_customer_record(2, np.array([1.0, -2.0], dtype=np.float32), [7, 300])
    assert raw == (bytes([1, 0, 2, 0, 2, 0, 2, 0])
                   + np.array([1.0, -2.0], dtype="<f4").tobytes()
                   + np.array([7, 300], dtype="<u4").tobytes())
    record = schema.decode_customer_record(raw)
    assert record.segment_index == 2
    assert record.vector.tolist() == [1.0, -2.0]
    assert record.accepted.tolist() == [7, 300]


def test_a_record_without_vector_decodes_to_an_empty_vector() -> None:
    record = schema.decode_customer_record(
        schema.encode_customer_record(0, np.empty(0, np.float32), []))
    assert len(record.vector) == 0 and len(record.accepted) == 0


@pytest.mark.parametrize("raw", [b"", b"\x01\x00", b"\x02" + bytes(7),
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


def test_live_keys_carry_the_customer_shard_as_hash_tag_byte_for_byte() -> None:
    keys = schema.Keys("recsvc")
    # crc32(b"c1") = 0x5ed72aa1 = 1591159457; % 64 = 33
    assert schema.shard_of("c1") == 33
    assert keys.live("c1") == "recsvc:live:{33}:c1"
    assert keys.events(33) == "recsvc:events:{33}"
    assert keys.dedup(33) == "recsvc:dedup:{33}"
    assert keys.foldin_replayed == "recsvc:foldin:replayed"
    assert keys.foldin_replay_lock("V") == "recsvc:foldin:lock:V"
    assert schema.live_record_field("V1") == "r:V1"
    assert schema.live_folded_field("V1") == "f:V1"
    assert schema.shard_of("é") == __import__("zlib").crc32("é".encode()) % 64
    assert {schema.shard_of(f"c{i}") for i in range(2000)} == set(range(schema.SHARDS))
