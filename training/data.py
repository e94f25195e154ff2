"""Reading and validating the three input tables (CSV, CSV.gz or Parquet).

Every check is vectorized (pyarrow/numpy): the job reads tens of millions of interactions. A bad
row is counted under the first rule it breaks, in the order of ``*_KINDS``, and reported with its
file and row number: the 1-based data row (for a CSV without embedded newlines, the line number
is the row number + 1, the header being line 1).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsvc.core.errors import DataError
from training.config import EVENTS

CUSTOMER_KINDS = ("missing_customer_id", "duplicate_customer_id", "missing_segment",
                  "bad_clv", "bad_churn_risk")
OFFER_KINDS = ("missing_offer_id", "duplicate_offer_id", "missing_segments", "bad_cost",
               "bad_value", "bad_valid_from", "bad_valid_to", "empty_validity_window",
               "bad_lever")
INTERACTION_KINDS = ("unknown_customer", "unknown_offer", "unknown_event", "bad_ts",
                     "bad_weight")
MAX_LISTED_ROWS = 1000  # row numbers listed per kind in the report (counts are always exact)

_NUMBER = r"^\s*[-+]?((\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|inf|infinity|nan)\s*$"
_ZONED = r"(Z|z|[+-]\d\d:?\d\d)$"


@dataclass
class BadRows:
    """Bad rows per (file, kind): exact counts and the first MAX_LISTED_ROWS row numbers."""

    entries: dict[tuple[str, str], tuple[int, list[int]]] = field(default_factory=dict)

    def add(self, path: str, kind: str, mask: npt.NDArray[np.bool_]) -> None:
        rows = np.flatnonzero(mask)
        if len(rows):
            count, listed = self.entries.get((path, kind), (0, []))
            listed = listed + (rows[: MAX_LISTED_ROWS - len(listed)] + 1).tolist()
            self.entries[(path, kind)] = (count + len(rows), listed)

    @property
    def total(self) -> int:
        return sum(count for count, _ in self.entries.values())

    def count(self, kind: str) -> int:
        return sum(c for (_, k), (c, _) in self.entries.items() if k == kind)

    def as_list(self) -> list[dict[str, Any]]:
        return [{"file": path, "kind": kind, "count": count, "rows": rows}
                for (path, kind), (count, rows) in self.entries.items()]


@dataclass
class Dataset:
    """Validated input, as arrays. Customers and offers are indexed by position."""

    customer_ids: pa.Array
    customer_segment: npt.NDArray[np.int32]
    segment_names: list[str]
    offers: list[dict[str, Any]]  # catalogue entries as the service reads them
    eligible: npt.NDArray[np.bool_]  # segments x offers
    customer: npt.NDArray[np.int32]  # one entry per kept interaction
    offer: npt.NDArray[np.int32]
    event: npt.NDArray[np.int8]  # index into config.EVENTS
    ts: npt.NDArray[np.float64]  # epoch seconds
    weight: npt.NDArray[np.float64] | None  # NaN when the row has none; None: no such column
    bad: BadRows
    ineligible: int  # interactions with an offer not open to the customer's segment
    fingerprint: str
    rows_read: dict[str, int]
    # Kept customers' columns other than id and segment (clv, churn_risk, extra attributes),
    # for decisioning's customer attributes (training/attributes.py).
    customer_columns: dict[str, pa.Array] = field(default_factory=dict)

    def drop_interactions(self) -> None:
        """Free the per-row arrays once the cells are built (they are the bulk of memory)."""
        empty = np.empty(0)
        self.customer = empty.astype(np.int32)
        self.offer = empty.astype(np.int32)
        self.event = empty.astype(np.int8)
        self.ts = empty
        self.weight = None

    @property
    def offer_ids(self) -> list[str]:
        return [o["offer_id"] for o in self.offers]


DICT = pa.dictionary(pa.int32(), pa.string())


def read_table(path: str, required: tuple[str, ...],
               types: dict[str, pa.DataType] | None = None) -> pa.Table:
    """CSV (every column as text unless ``types`` says otherwise), CSV.gz or Parquet.

    ``types`` is a memory optimisation for big files: ids read as dictionaries, numbers as
    float64. When a typed column holds a value that is not of its type, the file is read again
    with that column as text, so the value is reported as a bad row instead of failing the run.
    """
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file")
    lowered = path.lower()
    try:
        if lowered.endswith(".parquet"):
            table = pq.read_table(path)
        elif lowered.endswith((".csv", ".csv.gz")):
            opener = gzip.open if lowered.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8", newline="") as handle:
                header = next(csv.reader([handle.readline()]), [])
            if not header:
                raise DataError(f"{path}: empty file, expected a header line")
            column_types = {name: pa.string() for name in header}
            typed = {k: v for k, v in (types or {}).items() if k in column_types}
            try:
                table = _read_csv(path, {**column_types, **typed})
            except pa.ArrowInvalid:
                numeric = [k for k, v in typed.items() if pa.types.is_floating(v)]
                table = _read_csv(path, {**column_types, **{k: v for k, v in typed.items()
                                                            if k not in numeric}})
        else:
            raise DataError(f"{path}: unknown format; use .csv, .csv.gz or .parquet")
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing required column(s) {missing}; found "
                        f"{table.column_names}")
    return table


def _read_csv(path: str, column_types: dict[str, pa.DataType]) -> pa.Table:
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types=column_types, strings_can_be_null=False,
        quoted_strings_can_be_null=False, null_values=[""]))


def lookup(table: pa.Table, name: str, values: pa.Array) -> npt.NDArray[np.int32]:
    """Position of each row's (trimmed) value in ``values``, -1 when absent.

    Dictionary columns are looked up once per distinct value, not once per row.
    """
    column = table.column(name)
    if pa.types.is_dictionary(column.type):
        column = column.unify_dictionaries()  # one dictionary shared by every chunk
        if not column.num_chunks:
            return np.empty(0, dtype=np.int32)
        mapping = pc.index_in(pc.utf8_trim_whitespace(column.chunk(0).dictionary),
                              value_set=values)
        codes = np.asarray(pc.fill_null(mapping, -1).to_numpy(zero_copy_only=False),
                           dtype=np.int32)
        parts = []
        for chunk in column.chunks:
            indices = chunk.indices
            found = codes[np.asarray(pc.fill_null(indices, 0).to_numpy(zero_copy_only=False))]
            if indices.null_count:
                found[_mask(pc.is_null(indices))] = -1
            parts.append(found)
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int32)
    position = pc.index_in(text(table, name), value_set=values)
    return np.asarray(pc.fill_null(position, -1).to_numpy(zero_copy_only=False), dtype=np.int32)


def text(table: pa.Table, name: str) -> pa.Array:
    """A column as trimmed text ('' for null); absent columns read as all ''."""
    if name not in table.column_names:
        return pa.array([""] * table.num_rows, type=pa.string())
    column = table.column(name).combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        column = pc.cast(column, pa.string())
    return pc.utf8_trim_whitespace(pc.fill_null(column, ""))


def _mask(array: pa.Array) -> npt.NDArray[np.bool_]:
    return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)


def _column(table: pa.Table, name: str) -> tuple[
        pa.Array | None, tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]]:
    """The column, or None and what an absent optional column parses to (all NaN, none bad)."""
    n = table.num_rows
    absent = (np.full(n, np.nan), np.zeros(n, dtype=bool))
    if name not in table.column_names:
        return None, absent
    return table.column(name).combine_chunks(), absent


def parse_float(table: pa.Table, name: str) -> tuple[npt.NDArray[np.float64],
                                                       npt.NDArray[np.bool_]]:
    """Values (NaN when empty) and a mask of unparseable ones."""
    column, nothing = _column(table, name)
    if column is None:
        return nothing
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        values = np.array(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False),
                          dtype=np.float64)  # nulls become NaN
        return values, nothing[1]  # nothing is bad in a numeric column
    strings = text(table, name)
    empty = _mask(pc.equal(strings, ""))
    numeric = _mask(pc.match_substring_regex(strings, _NUMBER, ignore_case=True))
    safe = pc.if_else(pa.array(numeric), strings, "nan")
    values = np.array(pc.cast(safe, pa.float64()).to_numpy(zero_copy_only=False),
                      dtype=np.float64)
    return values, ~numeric & ~empty


def parse_time(table: pa.Table, name: str) -> tuple[npt.NDArray[np.float64],
                                                      npt.NDArray[np.bool_]]:
    """Epoch seconds (NaN when empty) from ISO-8601 text or Unix seconds; and a bad mask."""
    column, nothing = _column(table, name)
    if column is None:
        return nothing
    n = table.num_rows
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        micros = pc.cast(pc.cast(column, pa.timestamp("us")), pa.int64())
        values = np.asarray(micros.to_numpy(zero_copy_only=False), dtype=np.float64) / 1e6
        return values, np.zeros(n, dtype=bool)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return parse_float(table, name)
    strings = text(table, name)
    values, not_number = parse_float(table, name)
    empty = _mask(pc.equal(strings, ""))
    iso_rows = np.flatnonzero(not_number)
    bad = np.zeros(n, dtype=bool)
    if len(iso_rows):
        subset = strings.take(pa.array(iso_rows))
        zoned = _mask(pc.match_substring_regex(subset, _ZONED))
        for rows, tz in ((iso_rows[zoned], "UTC"), (iso_rows[~zoned], None)):
            if len(rows):
                parsed, failed = _parse_iso(strings.take(pa.array(rows)), tz)
                values[rows] = parsed
                bad[rows] = failed
    values[empty] = np.nan
    return values, bad


def _parse_iso(strings: pa.Array, tz: str | None) -> tuple[npt.NDArray[np.float64],
                                                           npt.NDArray[np.bool_]]:
    try:
        stamps = pc.cast(strings, pa.timestamp("us", tz=tz))
        micros = np.asarray(pc.cast(stamps, pa.int64()).to_numpy(zero_copy_only=False))
        return micros.astype(np.float64) / 1e6, np.zeros(len(strings), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass  # at least one value is not ISO-8601 for Arrow: decide row by row
    values = np.full(len(strings), np.nan)
    bad = np.zeros(len(strings), dtype=bool)
    for i, raw in enumerate(strings.to_pylist()):
        try:
            moment = datetime.fromisoformat(raw.replace("z", "Z"))
        except ValueError:
            bad[i] = True
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        values[i] = moment.timestamp()
    return values, bad


def first_occurrence(ids: pa.Array) -> npt.NDArray[np.bool_]:
    """True at the first row of each distinct id."""
    codes = np.asarray(pc.dictionary_encode(ids).indices.to_numpy(zero_copy_only=False))
    first = np.zeros(len(ids), dtype=bool)
    first[np.unique(codes, return_index=True)[1]] = True
    return first


def fingerprint(paths: list[str]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).name.encode())
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def load(customers_path: str, offers_path: str, interactions_path: str,
         weight_cap: float) -> Dataset:
    bad = BadRows()
    customers = read_table(customers_path, ("customer_id", "segment"))
    offers_table = read_table(offers_path, ("offer_id",))
    interactions = read_table(interactions_path, ("customer_id", "offer_id", "event", "ts"),
                              types={"customer_id": DICT, "offer_id": DICT, "event": DICT,
                                     "ts": pa.float64(), "weight": pa.float64()})

    # Customers
    ids = text(customers, "customer_id")
    segment = text(customers, "segment")
    clv, clv_bad = parse_float(customers, "clv")
    churn, churn_bad = parse_float(customers, "churn_risk")
    checks = [
        ("missing_customer_id", _mask(pc.equal(ids, ""))),
        ("duplicate_customer_id", ~first_occurrence(ids)),
        ("missing_segment", _mask(pc.equal(segment, ""))),
        ("bad_clv", clv_bad | ~(np.isnan(clv) | ((clv >= 0) & np.isfinite(clv)))),
        ("bad_churn_risk", churn_bad | ~(np.isnan(churn) | ((churn >= 0) & (churn <= 1)))),
    ]
    keep_customers = _first_failure(customers_path, checks, bad)
    customer_columns = {name: customers.column(name).combine_chunks().filter(
        pa.array(keep_customers)) for name in customers.column_names
        if name not in ("customer_id", "segment")}
    customer_ids = ids.filter(pa.array(keep_customers))
    encoded = pc.dictionary_encode(segment.filter(pa.array(keep_customers)))
    segment_names = [str(s) for s in encoded.dictionary.to_pylist()]
    customer_segment = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int32)

    # Offers
    offer_list, eligible = _load_offers(offers_path, offers_table, segment_names, bad)
    offer_ids = pa.array([o["offer_id"] for o in offer_list], type=pa.string())

    # Interactions
    cust = lookup(interactions, "customer_id", customer_ids)
    offer = lookup(interactions, "offer_id", offer_ids)
    event = lookup(interactions, "event", pa.array(EVENTS))
    ts, ts_bad = parse_time(interactions, "ts")
    has_weight = "weight" in interactions.column_names
    weight, weight_bad = parse_float(interactions, "weight") if has_weight else (None, None)
    rows_read = interactions.num_rows
    del interactions  # the arrays below are all that is needed from here on
    no_rows = np.zeros(len(cust), dtype=bool)
    weight_out = no_rows if weight is None else \
        ~np.isnan(weight) & ~(np.isfinite(weight) & (np.abs(weight) <= weight_cap))
    checks = [
        ("unknown_customer", cust < 0),
        ("unknown_offer", offer < 0),
        ("unknown_event", event < 0),
        ("bad_ts", ts_bad | ~np.isfinite(ts)),
        ("bad_weight", weight_out if weight_bad is None else weight_bad | weight_out),
    ]
    keep = _first_failure(interactions_path, checks, bad)
    cust_idx, offer_idx, event_idx = cust[keep], offer[keep], event[keep].astype(np.int8)
    del cust, offer, event
    open_to_customer = eligible[customer_segment[cust_idx], offer_idx]
    ts = ts[keep]
    return Dataset(
        customer_ids=customer_ids,
        customer_segment=customer_segment,
        segment_names=segment_names,
        offers=offer_list,
        eligible=eligible,
        customer=cust_idx[open_to_customer],
        offer=offer_idx[open_to_customer],
        event=event_idx[open_to_customer],
        ts=ts[open_to_customer],
        weight=None if weight is None else weight[keep][open_to_customer],
        bad=bad,
        ineligible=int((~open_to_customer).sum()),
        fingerprint=fingerprint([customers_path, offers_path, interactions_path]),
        rows_read={"customers": customers.num_rows, "offers": offers_table.num_rows,
                   "interactions": rows_read},
        customer_columns=customer_columns,
    )


def _first_failure(path: str, checks: list[tuple[str, npt.NDArray[np.bool_]]],
                   bad: BadRows) -> npt.NDArray[np.bool_]:
    """Counts each row under the first check it fails; returns the mask of good rows."""
    failed = np.zeros(len(checks[0][1]), dtype=bool)
    for kind, mask in checks:
        bad.add(path, kind, mask & ~failed)
        failed |= mask
    return ~failed


def _load_offers(path: str, table: pa.Table, segment_names: list[str],
                 bad: BadRows) -> tuple[list[dict[str, Any]], npt.NDArray[np.bool_]]:
    ids = text(table, "offer_id")
    segments = text(table, "segments") if "segments" in table.column_names else None
    cost, cost_bad = parse_float(table, "cost")
    value, value_bad = parse_float(table, "value")
    valid_from, from_bad = parse_time(table, "valid_from")
    valid_to, to_bad = parse_time(table, "valid_to")
    lever, lever_bad = parse_float(table, "lever")
    no_segments = (np.zeros(table.num_rows, dtype=bool) if segments is None
                   else _mask(pc.equal(segments, "")))
    checks = [
        ("missing_offer_id", _mask(pc.equal(ids, ""))),
        ("duplicate_offer_id", ~first_occurrence(ids)),
        ("missing_segments", no_segments),
        ("bad_cost", cost_bad | ~(np.isnan(cost) | ((cost >= 0) & np.isfinite(cost)))),
        ("bad_value", value_bad | ~(np.isnan(value) | ((value >= 0) & np.isfinite(value)))),
        ("bad_valid_from", from_bad),
        ("bad_valid_to", to_bad),
        ("empty_validity_window", ~np.isnan(valid_from) & ~np.isnan(valid_to)
         & (valid_to <= valid_from)),
        ("bad_lever", lever_bad | ~(np.isnan(lever) | ((lever > 0) & np.isfinite(lever)))),
    ]
    keep = _first_failure(path, checks, bad)
    titles = text(table, "title").to_pylist()
    channels = text(table, "channels").to_pylist()
    rules = text(table, "rule").to_pylist()
    types = text(table, "type").to_pylist()
    seg_specs = segments.to_pylist() if segments is not None else ["*"] * table.num_rows
    position = {name: i for i, name in enumerate(segment_names)}
    offers: list[dict[str, Any]] = []
    rows_eligible = []
    for row in np.flatnonzero(keep):
        spec = seg_specs[row]
        names = ["*"] if spec == "*" else [s.strip() for s in spec.split("|") if s.strip()]
        open_to = np.zeros(len(segment_names), dtype=bool)
        if names == ["*"]:
            open_to[:] = True
        else:
            for name in names:
                if name in position:
                    open_to[position[name]] = True
        rows_eligible.append(open_to)
        offers.append({
            "offer_id": ids[row].as_py(),
            "title": titles[row],
            "segments": names,
            "channels": [c.strip() for c in channels[row].split("|") if c.strip()],
            "valid_from": _finite_or_none(valid_from[row]),
            "valid_to": _finite_or_none(valid_to[row]),
            "cost": _finite_or_none(cost[row]),
            "value": _finite_or_none(value[row]),
            # Decisioning (optional columns): a customer rule, a business lever, a type.
            **({"rule": rules[row]} if rules[row] else {}),
            **({"lever": float(lever[row])} if not np.isnan(lever[row]) else {}),
            **({"type": types[row]} if types[row] else {}),
        })
    eligible = (np.stack(rows_eligible, axis=1) if rows_eligible
                else np.zeros((len(segment_names), 0), dtype=bool))
    return offers, eligible


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
