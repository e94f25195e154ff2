"""The loop closes: the next training run learns from logged events, each counted once, the
cutoff is in the version's meta, and the stream is trimmed only below what is safe."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.feedback.events import Event
from recsvc.store.feedback.events import Bounds, record_sync
from tests.integration.helpers import FAST_CONFIG, cli, planted
from tests.integration.serving import train
from training.inputs.events import StreamEvents, merge

pytestmark = pytest.mark.integration
T = 1_800_000_000.0


def events_of_new_customer() -> list[Event]:
    return [Event(f"n{j}", "new-1", f"a{j}", "accept", T + j, segment="main")
            for j in range(1, 4)] + [Event("o1", "a-test", "", "churn", T),
                                     Event("z1", "a-test", "gone", "click", T)]


@pytest.mark.cluster
def test_training_merges_logged_events_records_the_cutoff_and_trims_safely(
        tmp_path: Path, settings: Settings, client: redis.Redis) -> None:
    data = planted(tmp_path)
    keys = schema.keys_for(settings)
    train(data, settings.redis_url, settings.key_prefix, FAST_CONFIG)
    bounds = Bounds.from_settings(settings)
    record_sync(client, keys, bounds, events_of_new_customer())
    exported = tmp_path / "out" / "events.parquet"
    result = cli(["events", "export", "--out", str(exported)], settings.redis_url,
                 settings.key_prefix)
    assert result.returncode == 0, result.stderr
    table = pq.read_table(exported)
    assert table.num_rows == 5 and sorted(table["event_id"].to_pylist()) == [
        "n1", "n2", "n3", "o1", "z1"]

    second = train(data, settings.redis_url, settings.key_prefix, FAST_CONFIG)
    meta = json.loads(client.get(keys.meta(second)))
    shard = schema.shard_of("new-1")
    newest = client.xrevrange(keys.events(shard), count=1)[0][0].decode()
    assert meta["feedback_cutoff"][str(shard)] == newest
    assert client.hget(keys.customer_hash_of(second, "new-1"), "new-1") is not None  # known now
    logged = sum(client.xlen(keys.events(s)) for s in range(schema.SHARDS))
    assert logged == 5  # the previous version has no cutoff: nothing is safe to trim yet

    record_sync(client, keys, bounds, [Event("late", "a-test", "b1", "click", T + 9)])
    third = train(data, settings.redis_url, settings.key_prefix, FAST_CONFIG)
    assert json.loads(client.get(keys.meta(third)))["feedback_cutoff"]
    remaining = [e for s in range(schema.SHARDS) for e in client.xrange(keys.events(s))]
    # Every entry below both kept versions' cutoffs is gone; the cutoff entries stay.
    kept_ids = sorted(fields[b"id"].decode() for _, fields in remaining)
    assert "late" in kept_ids and len(remaining) < 6


def test_merge_counts_each_event_id_once_and_never_an_outcome(tmp_path: Path) -> None:
    data = planted(tmp_path / "d")
    interactions = tmp_path / "interactions.csv"
    interactions.write_text("customer_id,offer_id,event,ts,event_id\n"
                            "a0,a1,accept,1700000000,seen-before\n")
    rows = [("seen-before", "a0", "a1", "accept", "1800000000.0", "", "", "", "", "1-0"),
            ("x", "a0", "b2", "click", "1800000001.0", "", "dec-7", "", "", "1-1"),
            ("x", "a0", "b2", "click", "1800000001.0", "", "", "", "", "1-2"),
            ("nps1", "a0", "", "nps", "1800000002.0", "9", "", "", "", "1-3")]
    columns = list(zip(*rows, strict=True))
    names = ("event_id", "customer_id", "offer_id", "event", "ts", "value", "decision_id",
             "channel", "segment", "stream_id")
    table = pa.table({n: pa.array(c, type=pa.string()) for n, c in zip(names, columns,
                                                                       strict=True)})
    merged = merge(str(data / "customers.csv"), str(data / "offers.csv"), str(interactions),
                   StreamEvents(table, {"0": "1-3"}), str(tmp_path / "work"))
    out = pq.read_table(merged.interactions)
    assert out["event_id"].to_pylist() == ["seen-before", "x"]
    assert out["decision_id"].to_pylist() == ["", "dec-7"]  # joins the decision log
    assert merged.report["duplicate_event_ids_left_out"] == 2
    assert merged.report["outcome_events_left_out"] == 1
