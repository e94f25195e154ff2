"""Reading and validating the three input tables (CSV, CSV.gz or Parquet).

Every check is vectorized (pyarrow/numpy): the job reads tens of millions of interactions. A bad
row is counted under the first rule it breaks, in the order of ``*_KINDS``, and reported with its
file and row number: the 1-based data row (for a CSV without embedded newlines, the line number
is the row number + 1, the header being line 1; the report lists both).

A CSV line that does not parse (wrong number of fields) is a bad row of kind ``malformed_line``,
located by its line number; the rows after it keep their own numbers. An invalid optional value
(``clv``, ``churn_risk``) never drops its customer: it is read as missing and counted under
``invalid_values``. Numeric timestamps in milliseconds, microseconds or nanoseconds (any value at
or above 1e11, i.e. past the year 5138 if read as seconds) are converted to seconds and counted.
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

CUSTOMER_KINDS = ("missing_customer_id", "duplicate_customer_id", "missing_segment")
# Optional customer values: an invalid one is read as missing; the customer stays.
INVALID_VALUE_KINDS = ("bad_clv", "bad_churn_risk")
MALFORMED = "malformed_line"  # a CSV line that does not parse; counted for every table
OFFER_KINDS = ("missing_offer_id", "duplicate_offer_id", "missing_segments", "bad_cost",
               "bad_value", "bad_valid_from", "bad_valid_to", "empty_validity_window")
INTERACTION_KINDS = ("unknown_customer", "unknown_offer", "unknown_event", "bad_ts",
                     "bad_weight")
MAX_LISTED_ROWS = 1000  # row numbers listed per kind in the report (counts are always exact)
MAX_LISTED_VALUES = 20  # distinct unknown values listed per kind (e.g. event names seen)
MAX_SAMPLE_CHARS = 200  # a malformed line is quoted up to this length
# Numeric timestamps at or above 1e11 are not seconds (1e11 s is the year 5138): by magnitude,
# milliseconds, microseconds or nanoseconds since the epoch, converted to seconds.
EPOCH_UNITS = (("milliseconds", 1e11, 1e14, 1e3), ("microseconds", 1e14, 1e17, 1e6),
               ("nanoseconds", 1e17, math.inf, 1e9))

_NUMBER = r"^\s*[-+]?((\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|inf|infinity|nan)\s*$"
_ZONED = r"(Z|z|[+-]\d\d:?\d\d)$"


@dataclass
class BadRows:
    """Bad rows per (file, kind): exact counts and the first MAX_LISTED_ROWS row numbers."""

    entries: dict[tuple[str, str], tuple[int, list[int]]] = field(default_factory=dict)
    # What was seen, per (file, kind): unknown values with counts, or malformed lines' text.
    seen: dict[tuple[str, str], dict[str, int] | list[str]] = field(default_factory=dict)
    # Per file, the 1-based data row of each parsed row, when malformed lines were skipped.
    numbers: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict)

    def add(self, path: str, kind: str, mask: npt.NDArray[np.bool_]) -> None:
        rows = np.flatnonzero(mask)
        if len(rows):
            numbers = self.numbers.get(path)
            self.add_rows(path, kind, numbers[rows] if numbers is not None else rows + 1)

    def add_rows(self, path: str, kind: str, rows: npt.NDArray[np.int64] | list[int]) -> None:
        """Rows given by their 1-based data row number."""
        if len(rows):
            count, listed = self.entries.get((path, kind), (0, []))
            listed = listed + [int(r) for r in rows[: MAX_LISTED_ROWS - len(listed)]]
            self.entries[(path, kind)] = (count + len(rows), listed)

    def in_file(self, path: str) -> int:
        return sum(c for (p, _), (c, _) in self.entries.items() if p == path)

    @property
    def total(self) -> int:
        return sum(count for count, _ in self.entries.values())

    def count(self, kind: str) -> int:
        return sum(c for (_, k), (c, _) in self.entries.items() if k == kind)

    def as_list(self) -> list[dict[str, Any]]:
        listed = []
        for (path, kind), (count, rows) in self.entries.items():
            entry: dict[str, Any] = {"file": path, "kind": kind, "count": count, "rows": rows}
            if _is_csv(path):
                entry["lines"] = [r + 1 for r in rows]
            if (path, kind) in self.seen:
                entry["seen"] = self.seen[(path, kind)]
            listed.append(entry)
        return listed


def _is_csv(path: str) -> bool:
    return path.lower().endswith((".csv", ".csv.gz"))


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
    rows_read: dict[str, int]  # rows in each file, malformed lines included
    invalid_values: BadRows = field(default_factory=BadRows)  # read as missing, rows kept
    ts_converted: dict[str, int] = field(default_factory=dict)  # unit -> rows converted

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


@dataclass(frozen=True)
class Malformed:
    """CSV lines skipped because they do not parse: 1-based line numbers and their text."""

    lines: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


def read_table(path: str, required: tuple[str, ...],
               types: dict[str, pa.DataType] | None = None,
               bad: BadRows | None = None) -> pa.Table:
    """CSV (every column as text unless ``types`` says otherwise), CSV.gz or Parquet.

    ``types`` is a memory optimisation for big files: ids read as dictionaries, numbers as
    float64. When a typed column holds a value that is not of its type, the file is read again
    with that column as text, so the value is reported as a bad row instead of failing the run.
    A CSV line with the wrong number of fields is skipped and recorded in ``bad`` (kind
    ``malformed_line``, with its line number), and the rows after it keep their numbers.
    """
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file")
    lowered = path.lower()
    malformed = Malformed()
    try:
        if lowered.endswith(".parquet"):
            table = pq.read_table(path)
        elif _is_csv(lowered):
            opener = gzip.open if lowered.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8", newline="") as handle:
                header = next(csv.reader([handle.readline()]), [])
            if not header:
                raise DataError(f"{path}: empty file, expected a header line")
            column_types = {name: pa.string() for name in header}
            typed = {k: v for k, v in (types or {}).items() if k in column_types}
            try:
                table, malformed = _read_csv(path, {**column_types, **typed})
            except pa.ArrowInvalid:
                numeric = [k for k, v in typed.items() if pa.types.is_floating(v)]
                table, malformed = _read_csv(path, {**column_types, **{
                    k: v for k, v in typed.items() if k not in numeric}})
        else:
            raise DataError(f"{path}: unknown format; use .csv, .csv.gz or .parquet")
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing required column(s) {missing}; found "
                        f"{table.column_names}")
    if malformed.lines and bad is not None:
        skipped = np.asarray(malformed.lines, dtype=np.int64) - 1  # data rows (header: line 1)
        total = table.num_rows + len(skipped)
        bad.add_rows(path, MALFORMED, skipped)
        bad.seen[(path, MALFORMED)] = malformed.texts
        bad.numbers[path] = np.delete(np.arange(1, total + 1, dtype=np.int64), skipped - 1)
    return table


def _read_csv(path: str, column_types: dict[str, pa.DataType],
              threads: bool = True) -> tuple[pa.Table, Malformed]:
    """Read with malformed lines skipped; if there were any, read again on one thread, the only
    way Arrow tells their line numbers (a rare case: the fast path stays parallel)."""
    found = Malformed()

    def skip(row: Any) -> str:
        if row.number is not None:
            found.lines.append(int(row.number))
        if len(found.texts) < MAX_LISTED_VALUES:
            found.texts.append(str(row.text)[:MAX_SAMPLE_CHARS])
        return "skip"

    table = pacsv.read_csv(
        path, read_options=pacsv.ReadOptions(use_threads=threads),
        parse_options=pacsv.ParseOptions(invalid_row_handler=skip),
        convert_options=pacsv.ConvertOptions(
            column_types=column_types, strings_can_be_null=False,
            quoted_strings_can_be_null=False, null_values=[""]))
    if found.texts and threads:
        return _read_csv(path, column_types, threads=False)
    return table, found


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
    values, bad, _ = _parse_time(table, name)
    return values, bad


def parse_epoch_time(table: pa.Table, name: str) -> tuple[
        npt.NDArray[np.float64], npt.NDArray[np.bool_], dict[str, int]]:
    """As parse_time, but numbers in milliseconds, microseconds or nanoseconds since the epoch
    are converted to seconds (by magnitude, see EPOCH_UNITS); returns the count per unit."""
    values, bad, numeric = _parse_time(table, name)
    converted: dict[str, int] = {}
    for unit, low, high, divisor in EPOCH_UNITS:
        rows = numeric & (values >= low) & (values < high)
        if rows.any():
            values[rows] /= divisor
            converted[unit] = int(rows.sum())
    return values, bad, converted


def _parse_time(table: pa.Table, name: str) -> tuple[
        npt.NDArray[np.float64], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Values, bad mask, and the mask of values that were given as numbers."""
    column, nothing = _column(table, name)
    n = table.num_rows
    if column is None:
        return nothing[0], nothing[1], np.zeros(n, dtype=bool)
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        micros = pc.cast(pc.cast(column, pa.timestamp("us")), pa.int64())
        values = np.asarray(micros.to_numpy(zero_copy_only=False), dtype=np.float64) / 1e6
        return values, np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        values, bad = parse_float(table, name)
        return values, bad, ~np.isnan(values)
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
    return values, bad, ~not_number & ~empty


def optional_float(table: pa.Table, name: str, low: float,
                   high: float) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """An optional number in [low, high]: values with anything invalid (unparseable, NaN,
    infinite, out of range) set to NaN, i.e. missing; and the mask of those invalid values."""
    values, unparseable = parse_float(table, name)
    column, _ = _column(table, name)
    if column is None:
        return values, unparseable
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        present = ~_mask(pc.is_null(column))
    else:
        present = ~_mask(pc.equal(text(table, name), ""))
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(values) & (values >= low) & (values <= high)
    invalid = unparseable | (present & ~valid)
    values[invalid] = np.nan
    return values, invalid


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
    customers = read_table(customers_path, ("customer_id", "segment"), bad=bad)
    offers_table = read_table(offers_path, ("offer_id",), bad=bad)
    interactions = read_table(interactions_path, ("customer_id", "offer_id", "event", "ts"),
                              types={"customer_id": DICT, "offer_id": DICT, "event": DICT,
                                     "ts": pa.float64(), "weight": pa.float64()}, bad=bad)

    # Customers
    ids = text(customers, "customer_id")
    segment = text(customers, "segment")
    checks = [
        ("missing_customer_id", _mask(pc.equal(ids, ""))),
        ("duplicate_customer_id", ~first_occurrence(ids)),
        ("missing_segment", _mask(pc.equal(segment, ""))),
    ]
    keep_customers = _first_failure(customers_path, checks, bad)
    invalid_values = BadRows(numbers={k: v for k, v in bad.numbers.items()
                                      if k == customers_path})
    for kind, column, low, high in (("bad_clv", "clv", 0.0, math.inf),
                                    ("bad_churn_risk", "churn_risk", 0.0, 1.0)):
        _, invalid = optional_float(customers, column, low, high)
        invalid_values.add(customers_path, kind, invalid & keep_customers)
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
    ts, ts_bad, ts_converted = parse_epoch_time(interactions, "ts")
    has_weight = "weight" in interactions.column_names
    weight, weight_bad = parse_float(interactions, "weight") if has_weight else (None, None)
    unknown_events = _values_seen(interactions, "event", (event < 0) & (cust >= 0) & (offer >= 0))
    rows_read = {"customers": customers.num_rows, "offers": offers_table.num_rows,
                 "interactions": interactions.num_rows}
    for name, path in (("customers", customers_path), ("offers", offers_path),
                       ("interactions", interactions_path)):
        rows_read[name] += bad.entries.get((path, MALFORMED), (0, []))[0]
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
    if unknown_events:
        bad.seen[(interactions_path, "unknown_event")] = unknown_events
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
        rows_read=rows_read,
        invalid_values=invalid_values,
        ts_converted=ts_converted,
    )


def _values_seen(table: pa.Table, name: str, mask: npt.NDArray[np.bool_]) -> dict[str, int]:
    """The most frequent distinct values of ``name`` among the rows in ``mask``, with counts."""
    rows = np.flatnonzero(mask)
    if not len(rows):
        return {}
    counts = pc.value_counts(text(table, name).take(pa.array(rows))).to_pylist()
    counts.sort(key=lambda c: (-c["counts"], c["values"]))
    return {str(c["values"]): int(c["counts"]) for c in counts[:MAX_LISTED_VALUES]}


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
    ]
    keep = _first_failure(path, checks, bad)
    titles = text(table, "title").to_pylist()
    channels = text(table, "channels").to_pylist()
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
        })
    eligible = (np.stack(rows_eligible, axis=1) if rows_eligible
                else np.zeros((len(segment_names), 0), dtype=bool))
    return offers, eligible


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
