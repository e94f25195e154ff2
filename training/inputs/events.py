"""The loop closes: logged feedback events join the training data, each counted once.

``read_stream`` takes a snapshot of the 64 shard streams (everything up to the newest id of
each, which becomes the version's ``feedback_cutoff``); ``export`` writes it to a file
(``recsvc events export``); ``merge`` writes the customers and interactions tables the job then
reads: the interaction events of the stream (outcomes never enter a confidence matrix) appended
to the interactions table, de-duplicated by ``event_id`` (within the stream, and against an
``event_id`` column of the table, e.g. an earlier export merged in by hand), customers the
model did not know added with the segment their events named. Events whose offer or customer
cannot be placed are left out and counted in the report, never reported as bad input rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import redis

from recsvc.core import schema
from recsvc.core.errors import DataError
from recsvc.store.feedback.streams import last_ids, read_entries, trim_safe
from training.inputs import tables

log = logging.getLogger(__name__)

INTERACTION_EVENTS = ("impression", "click", "accept", "redeem", "decline")
COLUMNS = ("event_id", "customer_id", "offer_id", "event", "ts", "value", "decision_id",
           "channel", "segment", "stream_id")
_FIELD_OF = {"event_id": "id", "customer_id": "customer", "offer_id": "offer",
             "event": "event", "ts": "ts", "value": "value", "decision_id": "decision",
             "channel": "channel", "segment": "segment"}


@dataclass
class StreamEvents:
    table: pa.Table  # COLUMNS, one row per stream entry, all text
    cutoff: dict[str, str]  # shard (as text) -> the last stream id read


@dataclass
class Merged:
    customers: str
    interactions: str
    report: dict[str, Any] = field(default_factory=dict)


def read_stream(client: redis.Redis, keys: schema.Keys) -> StreamEvents:
    upto = last_ids(client, keys)
    columns: dict[str, list[str]] = {c: [] for c in COLUMNS}
    for _shard, stream_id, fields in read_entries(client, keys, upto):
        for column, name in _FIELD_OF.items():
            columns[column].append(fields.get(name, ""))
        columns["stream_id"].append(stream_id)
    table = pa.table({c: pa.array(v, type=pa.string()) for c, v in columns.items()})
    return StreamEvents(table, {str(s): i for s, i in upto.items()})


def export(client: redis.Redis, keys: schema.Keys, out: str) -> StreamEvents:
    """Write the stream to ``out`` (.parquet or .csv) with an interactions-compatible header."""
    events = read_stream(client, keys)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if out.lower().endswith(".parquet"):
        pq.write_table(events.table, path)
    elif out.lower().endswith(".csv"):
        pacsv.write_csv(events.table, path)
    else:
        raise DataError(f"{out}: use a .parquet or .csv file name")
    return events


def _as_text(table: pa.Table) -> pa.Table:
    return pa.table({name: tables.text(table, name) for name in table.column_names})


def merge(customers_path: str, offers_path: str, interactions_path: str,
          events: StreamEvents, workdir: str) -> Merged:
    """Tables the job reads instead of the given ones (see the module docstring)."""
    stream = events.table
    report: dict[str, Any] = {"stream_events": stream.num_rows, "cutoff": events.cutoff}
    customers, bad_customers = tables.read_table(customers_path, ("customer_id", "segment"))
    offers = tables.text(tables.read_table(offers_path, ("offer_id",))[0], "offer_id")
    raw_interactions, bad_interactions = tables.read_table(
        interactions_path, ("customer_id", "offer_id", "event", "ts"))
    interactions = _as_text(raw_interactions)
    # The merged files no longer hold malformed lines: say which, so they are not lost silently.
    report["malformed_lines_left_out"] = {customers_path: bad_customers.lines[:1000],
                                          interactions_path: bad_interactions.lines[:1000]}
    # Interaction events only, the first of each event_id, none the table already holds.
    keep = pc.is_in(stream["event"], value_set=pa.array(INTERACTION_EVENTS)).to_numpy(
        zero_copy_only=False)
    report["outcome_events_left_out"] = int((~keep).sum())
    seen = set(interactions["event_id"].to_pylist()) if "event_id" in \
        interactions.column_names else set()
    seen.discard("")
    first = []
    for i, event_id in enumerate(stream["event_id"].to_pylist()):
        first.append(bool(keep[i]) and event_id not in seen)
        seen.add(event_id)
    report["duplicate_event_ids_left_out"] = int(keep.sum()) - sum(first)
    stream = stream.filter(pa.array(first))
    known_offer = pc.is_in(stream["offer_id"], value_set=offers).to_numpy(zero_copy_only=False)
    report["events_of_unknown_offers_left_out"] = int((~known_offer).sum())
    stream = stream.filter(pa.array(known_offer))
    # Customers the model does not know: added with the segment their latest event named.
    known = set(tables.text(customers, "customer_id").to_pylist())
    segment_of: dict[str, str] = {}
    for customer, segment in zip(stream["customer_id"].to_pylist(),
                                 stream["segment"].to_pylist(), strict=True):
        if customer not in known and segment:
            segment_of[customer] = segment
    placed = pc.is_in(stream["customer_id"],
                      value_set=pa.array(sorted(known | set(segment_of)), type=pa.string())
                      ).to_numpy(zero_copy_only=False)
    report["events_of_unknown_customers_left_out"] = int((~placed).sum())
    report["customers_added"] = len(segment_of)
    stream = stream.filter(pa.array(placed))
    report["events_merged"] = stream.num_rows
    if not stream.num_rows:
        return Merged(customers_path, interactions_path, report)
    added = pa.table({
        "customer_id": stream["customer_id"], "offer_id": stream["offer_id"],
        "event": stream["event"], "ts": stream["ts"], "event_id": stream["event_id"],
        "decision_id": stream["decision_id"]})  # joins the decision log (--decisions)
    base = interactions.select([c for c in interactions.column_names
                                if c in ("customer_id", "offer_id", "event", "ts", "weight",
                                         "event_id", "decision_id")])
    for name in ("weight", "event_id", "decision_id"):
        if name not in base.column_names:
            base = base.append_column(name, pa.array([""] * base.num_rows, type=pa.string()))
    added = added.append_column("weight", pa.array([""] * added.num_rows, type=pa.string()))
    merged = pa.concat_tables([base.select(added.column_names), added])
    out = Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    merged_customers = out / "customers_with_feedback.parquet"
    merged_interactions = out / "interactions_with_feedback.parquet"
    if segment_of:
        pq.write_table(_with_customers(customers, segment_of), merged_customers)
    pq.write_table(merged, merged_interactions)
    return Merged(str(merged_customers) if segment_of else customers_path,
                  str(merged_interactions), report)


def _with_customers(customers: pa.Table, segment_of: dict[str, str]) -> pa.Table:
    """``customers`` plus one row per new customer (other columns empty), types kept."""
    count = len(segment_of)
    given = {"customer_id": list(segment_of), "segment": list(segment_of.values())}
    columns = []
    for name in customers.column_names:
        kind = customers.schema.field(name).type
        values = pa.array(given[name], type=pa.string()) if name in given else \
            pa.nulls(count, type=pa.string())
        columns.append(pc.cast(values, kind))
    return pa.concat_tables([customers, pa.table(columns, names=customers.column_names)])


def trim(client: redis.Redis, keys: schema.Keys) -> int:
    """After a publish: trim the streams below what every kept version and the consumers hold."""
    removed = trim_safe(client, keys)
    if removed:
        log.info("feedback streams: %d entries trimmed (held by training)", removed)
    return removed


def for_training(client: redis.Redis, keys: schema.Keys, customers: str, offers: str,
                 interactions: str, workdir: str) -> Merged:
    """The tables a training run reads: the given ones, plus the stream when it holds events."""
    events = read_stream(client, keys)
    if not events.table.num_rows:
        return Merged(customers, interactions, {"stream_events": 0, "cutoff": events.cutoff})
    return merge(customers, offers, interactions, events, workdir)
