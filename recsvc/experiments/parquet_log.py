"""The decision log in Parquet: the export's rows (written per day partition) and the report's
fast path, which reads them, and the feedback it joins with, into the scorecard's coded columns
without a Python loop per row (``pyarrow.compute``: hashing, not dicts), so a report over 10
million decisions stays within a minute.

The one module of ``recsvc`` that imports pyarrow (the ``report`` extra); callers import it
lazily so serving never needs it. Events are read from ``recsvc events export`` files (all
columns text) or from any Parquet with the same names and numeric ``ts`` / ``value``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from recsvc.experiments import export_dir
from recsvc.experiments.decision_log import Decision
from recsvc.experiments.scorecard import KINDS, Decisions, Outcomes

_FLOATS = pa.list_(pa.float32())
_TEXTS = pa.list_(pa.string())
SCHEMA = pa.schema([
    ("shard", pa.int16()), ("stream_id", pa.string()), ("decision_id", pa.string()),
    ("ts", pa.float64()), ("customer_id", pa.string()), ("segment", pa.string()),
    ("version", pa.string()), ("arm", pa.string()), ("strategy", pa.string()),
    ("channel", pa.string()), ("offers", _TEXTS), ("scores", _FLOATS),
    ("propensities", _FLOATS), ("p_accept", _FLOATS), ("values", _FLOATS),
    ("costs", _FLOATS), ("candidate_version", pa.string()), ("candidate", _TEXTS),
    ("explored", pa.bool_()),  # absent in exports written before it: read as False
])
EVENT_COLUMNS = ("customer_id", "offer_id", "event", "ts", "decision_id", "value")
DAY_SECONDS = 86_400


def table_of(entries: Sequence[tuple[int, str, Decision]]) -> pa.Table:
    """One row per logged decision: (shard, stream id, decision)."""
    d = [e[2] for e in entries]
    return pa.table({
        "shard": pa.array([e[0] for e in entries], pa.int16()),
        "stream_id": [e[1] for e in entries], "decision_id": [x.decision_id for x in d],
        "ts": pa.array([x.ts for x in d], pa.float64()),
        "customer_id": [x.customer_id for x in d], "segment": [x.segment for x in d],
        "version": [x.version for x in d], "arm": [x.arm for x in d],
        "strategy": [x.strategy for x in d], "channel": [x.channel for x in d],
        "offers": [list(x.offers) for x in d], "scores": [x.scores.tolist() for x in d],
        "propensities": [x.propensities.tolist() for x in d],
        "p_accept": [x.p_accept.tolist() for x in d], "values": [x.values.tolist() for x in d],
        "costs": [x.costs.tolist() for x in d],
        "candidate_version": [x.candidate_version for x in d],
        "candidate": [list(x.candidate) for x in d],
        "explored": [x.explored for x in d],
    }, schema=SCHEMA)


def write_run(directory: Path, table: pa.Table, run: int, part: int) -> list[Path]:
    """The rows of one part of a run, one file per UTC day of the decisions."""
    days = pc.cast(pc.divide(table["ts"], DAY_SECONDS), pa.int64(), safe=False)
    days = pc.cast(pc.multiply(days, DAY_SECONDS * 1000), pa.timestamp("ms"))
    labels = pc.strftime(days, format="%Y-%m-%d")
    written = []
    for day in pc.unique(labels).to_pylist():
        path = export_dir.part_path(directory, day, run, part)
        pq.write_table(table.filter(pc.equal(labels, day)), path)
        written.append(path)
    return written


def write_table(path: Path, table: pa.Table) -> None:
    """A table written as one Parquet file (the synthetic generator's decisions and events)."""
    pq.write_table(table, path)


def _coded(column: pa.ChunkedArray | pa.Array, names: bool = True
           ) -> tuple[np.ndarray, list[str], pa.Array]:
    """Integer codes, the names as a list (unless ``names`` is False: millions of customer ids
    stay an Arrow array) and as an Arrow array."""
    unique = pc.unique(column)
    codes = pc.index_in(column, value_set=unique)
    return _ints(codes), unique.to_pylist() if names else [], unique


def _ints(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    filled = pc.fill_null(column, -1)
    if isinstance(filled, pa.ChunkedArray):
        filled = filled.combine_chunks() if filled.num_chunks else pa.array([], pa.int64())
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=np.int64)


def _floats(column: pa.ChunkedArray | pa.Array, missing: float = np.nan) -> np.ndarray:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = pc.if_else(pc.equal(column, ""), None, column)
    values = pc.fill_null(pc.cast(column, pa.float64()), missing)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], pa.float64())
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)


def _flat(table: pa.Table, name: str, lengths: np.ndarray, missing: float) -> np.ndarray:
    """Per-offer numbers, aligned with the offers; ValueError naming a decision if not."""
    column = table[name]
    logged = _ints(pc.list_value_length(column))
    bad = np.flatnonzero((logged != lengths) & (logged != -1))
    if len(bad):
        first = table["decision_id"][int(bad[0])].as_py()
        raise ValueError(f"decision {first!r}: {name!r} holds {int(logged[bad[0]])} numbers "
                         f"for {int(lengths[bad[0]])} offers")
    out = np.full(int(lengths.sum()), missing)
    present = np.repeat(logged >= 0, lengths)
    out[present] = _floats(pc.list_flatten(column))
    return out


def read_decisions(directory: Path) -> tuple[Decisions, pa.ChunkedArray]:
    """The committed export as coded columns, and the decision ids (to place events by). A
    directory without a commit file is read whole (Parquet files of this schema from elsewhere),
    except files of the export's layout: those are a first run's that has not committed."""
    files = export_dir.readable_files(directory)
    if not files:
        raise ValueError(f"{directory}: no exported decisions (run `recsvc decisions export`)")
    table = ds.dataset([str(f) for f in files], format="parquet").to_table(columns=[
        "decision_id", "ts", "customer_id", "segment", "version", "arm", "offers",
        "propensities", "values", "costs", "candidate_version", "candidate"])
    lengths = np.maximum(_ints(pc.list_value_length(table["offers"])), 0)
    customer, _, customers = _coded(table["customer_id"], names=False)
    segment, segments, _ = _coded(table["segment"])
    version, versions, _ = _coded(table["version"])
    arm, arms, _ = _coded(table["arm"])
    offer, offer_names, offer_set = _coded(pc.list_flatten(table["offers"]))
    wanted = pc.and_(pc.not_equal(table["candidate_version"], ""),
                     pc.greater(pc.fill_null(pc.list_value_length(table["candidate"]), 0), 0))
    candidate_version = np.full(table.num_rows, -1, dtype=np.int64)
    candidate_names: list[str] = []
    candidate_row = candidate_offer = np.empty(0, dtype=np.int64)
    if pc.any(wanted).as_py():
        rows = np.flatnonzero(np.asarray(wanted.to_numpy(zero_copy_only=False)))
        chosen = table.take(pa.array(rows))
        codes, candidate_names, _ = _coded(chosen["candidate_version"])
        candidate_version[rows] = codes
        counts = _ints(pc.list_value_length(chosen["candidate"]))
        candidate_row = np.repeat(rows, counts)
        candidate_offer = _ints(pc.index_in(pc.list_flatten(chosen["candidate"]),
                                            value_set=offer_set))
    decisions = Decisions(
        _floats(table["ts"]), customer, len(customers), segment, segments, version, versions,
        arm, arms, lengths, offer, offer_names, _flat(table, "propensities", lengths, 1.0),
        _flat(table, "values", lengths, 0.0), _flat(table, "costs", lengths, 0.0),
        candidate_version, candidate_names, candidate_row, candidate_offer,
        customer_names=customers)
    return decisions, table["decision_id"]


def read_events(path: Path) -> pa.Table:
    """Feedback events: a Parquet file or a directory of them, with EVENT_COLUMNS."""
    table = ds.dataset(str(path), format="parquet").to_table()
    missing = [c for c in EVENT_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: events need the columns {', '.join(missing)}")
    return table


def events_columns(path: Path) -> dict[str, list[object]]:
    """The events as column lists (the small Redis-log path of the report)."""
    table = read_events(path)
    return {"customer_id": pc.cast(table["customer_id"], pa.string()).to_pylist(),
            "offer_id": pc.cast(table["offer_id"], pa.string()).to_pylist(),
            "event": pc.cast(table["event"], pa.string()).to_pylist(),
            "ts": _floats(table["ts"]).tolist(),
            "decision_id": pc.cast(table["decision_id"], pa.string()).to_pylist(),
            "value": [None if v != v else v for v in _floats(table["value"]).tolist()]}


def place_events(table: pa.Table, decisions: Decisions, decision_ids: pa.ChunkedArray
                 ) -> Outcomes:
    """Events (a table with EVENT_COLUMNS) placed against the decisions: the join, by hash."""
    def place(column: str, names: pa.Array | pa.ChunkedArray) -> np.ndarray:
        return _ints(pc.index_in(pc.cast(table[column], pa.string()), value_set=names))

    customers = decisions.customer_names
    if not isinstance(customers, pa.Array):
        customers = pa.array(customers, pa.string())
    return Outcomes(place("decision_id", decision_ids),
                    place("offer_id", pa.array(decisions.offer_names, pa.string())),
                    place("event", pa.array(KINDS, pa.string())), _floats(table["ts"]),
                    place("customer_id", customers), _floats(table["value"]))


def outcomes_from_columns(columns: dict[str, list[object]], decisions: Decisions,
                          decision_ids: pa.ChunkedArray) -> Outcomes:
    """Events read from the Redis streams, placed against exported decisions."""
    types = {"ts": pa.float64(), "value": pa.float64()}
    return place_events(pa.table({k: pa.array(v, types.get(k, pa.string()))
                                  for k, v in columns.items()}), decisions, decision_ids)
