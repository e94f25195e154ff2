"""Reading and validating the three input tables (CSV, CSV.gz or Parquet).

Every check is vectorized (pyarrow/numpy): the job reads tens of millions of interactions. A bad
row is counted under the first rule it breaks, in the order of ``*_KINDS``, and reported with its
file and row number: the 1-based data row (for a CSV without embedded newlines, the line number
is the row number + 1, the header being line 1; the report lists both).

A CSV line that does not parse (wrong number of fields) is a bad row of kind ``malformed_line``,
located by its line number; the rows after it keep their own numbers. An invalid optional value
(``clv``, ``churn_risk``) never drops its customer: it is read as missing and counted under
``invalid_values``; so does an invalid display value of an offer (``description``,
``image_url``, ``accept_label``, ``decline_label``: checks in recsvc/core/display.py), the offer
staying without it. Numeric timestamps in milliseconds, microseconds or nanoseconds (any value at
or above 1e11, i.e. past the year 5138 if read as seconds) are converted to seconds and counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from recsvc.core.display import DISPLAY_FIELDS, problem, quoted
from training.config import EVENTS
from training.inputs.tables import (
    DICT,
    MAX_LISTED_VALUES,
    fingerprint,
    first_occurrence,
    is_csv,
    lookup,
    mask,
    optional_float,
    parse_epoch_time,
    parse_float,
    parse_time,
    read_table,
    text,
)

CUSTOMER_KINDS = ("missing_customer_id", "duplicate_customer_id", "missing_segment")
# Optional values: an invalid one is read as missing; the customer or offer stays.
INVALID_VALUE_KINDS = ("bad_clv", "bad_churn_risk", *(f"bad_{name}" for name in DISPLAY_FIELDS))
MALFORMED = "malformed_line"  # a CSV line that does not parse; counted for every table
OFFER_KINDS = ("missing_offer_id", "duplicate_offer_id", "missing_segments", "bad_cost",
               "bad_value", "bad_valid_from", "bad_valid_to", "empty_validity_window",
               "bad_lever")
INTERACTION_KINDS = ("unknown_customer", "unknown_offer", "unknown_event", "bad_ts",
                     "bad_weight")
MAX_LISTED_ROWS = 1000  # row numbers listed per kind in the report (counts are always exact)


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
            if is_csv(path):
                entry["lines"] = [r + 1 for r in rows]
            if (path, kind) in self.seen:
                entry["seen"] = self.seen[(path, kind)]
            listed.append(entry)
        return listed


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
    # Kept customers' columns other than id and segment (clv, churn_risk, extra attributes),
    # for decisioning's customer attributes (training/inputs/attributes.py); invalid clv/churn_risk
    # values are missing there too.
    customer_columns: dict[str, pa.Array] = field(default_factory=dict)
    # Per kept interaction, when the table has a decision_id column ('' when none); the logged
    # propensity (NaN: not in the decision log) and explored flag once joined with ``--decisions``.
    decision_id: pa.Array | None = None
    logged_propensity: npt.NDArray[np.float64] | None = None
    explored: npt.NDArray[np.bool_] | None = None

    def drop_interactions(self) -> None:
        """Free the per-row arrays once the cells are built (they are the bulk of memory)."""
        empty = np.empty(0)
        self.customer = empty.astype(np.int32)
        self.offer = empty.astype(np.int32)
        self.event = empty.astype(np.int8)
        self.ts = empty
        self.weight = None
        self.decision_id = self.logged_propensity = self.explored = None

    @property
    def offer_ids(self) -> list[str]:
        return [o["offer_id"] for o in self.offers]


def read(path: str, required: tuple[str, ...], bad: BadRows,
         types: dict[str, pa.DataType] | None = None) -> pa.Table:
    """read_table, with malformed lines recorded as bad rows and later rows renumbered."""
    table, malformed = read_table(path, required, types)
    if malformed.lines:
        skipped = np.asarray(malformed.lines, dtype=np.int64) - 1  # data rows (header: line 1)
        total = table.num_rows + len(skipped)
        bad.add_rows(path, MALFORMED, skipped)
        bad.seen[(path, MALFORMED)] = malformed.texts
        bad.numbers[path] = np.delete(np.arange(1, total + 1, dtype=np.int64), skipped - 1)
    return table


def load(customers_path: str, offers_path: str, interactions_path: str,
         weight_cap: float, decision_ids: bool = False) -> Dataset:
    """``decision_ids``: keep the interactions' decision_id column (for ``--decisions`` only:
    millions of mostly empty strings otherwise)."""
    bad = BadRows()
    customers = read(customers_path, ("customer_id", "segment"), bad)
    offers_table = read(offers_path, ("offer_id",), bad)
    interactions = read(interactions_path, ("customer_id", "offer_id", "event", "ts"), bad,
                        types={"customer_id": DICT, "offer_id": DICT, "event": DICT,
                               "ts": pa.float64(), "weight": pa.float64()})

    # Customers
    ids = text(customers, "customer_id")
    segment = text(customers, "segment")
    checks = [
        ("missing_customer_id", mask(pc.equal(ids, ""))),
        ("duplicate_customer_id", ~first_occurrence(ids)),
        ("missing_segment", mask(pc.equal(segment, ""))),
    ]
    keep_customers = _first_failure(customers_path, checks, bad)
    invalid_values = BadRows(numbers={k: v for k, v in bad.numbers.items()
                                      if k in (customers_path, offers_path)})
    for kind, column, low, high in (("bad_clv", "clv", 0.0, math.inf),
                                    ("bad_churn_risk", "churn_risk", 0.0, 1.0)):
        _, invalid = optional_float(customers, column, low, high)
        invalid_values.add(customers_path, kind, invalid & keep_customers)
    customer_columns = {name: customers.column(name).combine_chunks().filter(
        pa.array(keep_customers)) for name in customers.column_names
        if name not in ("customer_id", "segment")}
    for column, low, high in (("clv", 0.0, math.inf), ("churn_risk", 0.0, 1.0)):
        if column in customer_columns:  # the parsed number, NaN where invalid or missing
            parsed, _ = optional_float(customers, column, low, high)
            customer_columns[column] = pa.array(parsed[keep_customers], type=pa.float64())
    customer_ids = ids.filter(pa.array(keep_customers))
    encoded = pc.dictionary_encode(segment.filter(pa.array(keep_customers)))
    segment_names = [str(s) for s in encoded.dictionary.to_pylist()]
    customer_segment = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int32)

    # Offers
    offer_list, eligible = _load_offers(offers_path, offers_table, segment_names, bad,
                                        invalid_values)
    offer_ids = pa.array([o["offer_id"] for o in offer_list], type=pa.string())

    # Interactions
    cust = lookup(interactions, "customer_id", customer_ids)
    offer = lookup(interactions, "offer_id", offer_ids)
    event = lookup(interactions, "event", pa.array(EVENTS))
    ts, ts_bad, ts_converted = parse_epoch_time(interactions, "ts")
    decision_id = text(interactions, "decision_id") \
        if decision_ids and "decision_id" in interactions.column_names else None
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
        customer_columns=customer_columns,
        decision_id=None if decision_id is None else
        decision_id.filter(pa.array(keep)).filter(pa.array(open_to_customer)),
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
    for kind, rows in checks:
        bad.add(path, kind, rows & ~failed)
        failed |= rows
    return ~failed


def _load_offers(path: str, table: pa.Table, segment_names: list[str], bad: BadRows,
                 invalid: BadRows) -> tuple[list[dict[str, Any]], npt.NDArray[np.bool_]]:
    ids = text(table, "offer_id")
    segments = text(table, "segments") if "segments" in table.column_names else None
    cost, cost_bad = parse_float(table, "cost")
    value, value_bad = parse_float(table, "value")
    valid_from, from_bad = parse_time(table, "valid_from")
    valid_to, to_bad = parse_time(table, "valid_to")
    lever, lever_bad = parse_float(table, "lever")
    no_segments = (np.zeros(table.num_rows, dtype=bool) if segments is None
                   else mask(pc.equal(segments, "")))
    checks = [
        ("missing_offer_id", mask(pc.equal(ids, ""))),
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
    display = _display_columns(path, table, keep, invalid)
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
            # For agent screens (optional columns): only the valid, non-empty ones.
            **{name: values[row] for name, values in display.items() if values[row]},
        })
    eligible = (np.stack(rows_eligible, axis=1) if rows_eligible
                else np.zeros((len(segment_names), 0), dtype=bool))
    return offers, eligible


def _display_columns(path: str, table: pa.Table, keep: npt.NDArray[np.bool_],
                     invalid: BadRows) -> dict[str, list[str]]:
    """The display columns the table has, per row; an invalid value of a kept offer is ''
    and counted under ``bad_<column>`` with its row and the first few reasons."""
    columns: dict[str, list[str]] = {}
    for name in DISPLAY_FIELDS:
        if name not in table.column_names:
            continue
        # Trimmed as every text column; a description keeps its inner line breaks.
        given = text(table, name).to_pylist()
        values = list(given)
        wrong = np.zeros(len(values), dtype=bool)
        reasons: list[str] = []
        for row in np.flatnonzero(keep):
            reason = problem(name, given[row]) if given[row] else None
            if reason is not None:
                wrong[row] = True
                values[row] = ""
                if len(reasons) < MAX_LISTED_VALUES:
                    reasons.append(f"{_where(path, invalid, int(row))}: {name} "
                                   f"{quoted(given[row])} {reason}")
        if wrong.any():
            invalid.add(path, f"bad_{name}", wrong)
            invalid.seen[(path, f"bad_{name}")] = reasons
        columns[name] = values
    return columns


def _where(path: str, rows: BadRows, position: int) -> str:
    """'row N' (and 'line N + 1' for a CSV) of the table's ``position``-th parsed row."""
    numbers = rows.numbers.get(path)
    row = int(numbers[position]) if numbers is not None else position + 1
    return f"row {row}, line {row + 1}" if is_csv(path) else f"row {row}"


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
