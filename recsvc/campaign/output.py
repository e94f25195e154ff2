"""The campaign's Parquet file: one row per customer and offer rank, one row (a null offer) per
customer without an offer. Strings that repeat (offer ids, strategies, arms, segments, reasons)
are dictionary-encoded from the run's small vocabularies: no Python per row.

Columns (README "Campaigns"): customer_id, known (the model has a record of the customer),
segment, rank (1 = best; 0 on a row without an offer), offer_id (null: no offer), score
(= p_accept, as Recommend's score), p_accept, objective, value, cost, strategy, arm,
decision_id (the decision-log entry's id), reasons (the offer's reason codes, comma-separated),
reason (the answer's reason in words: why popular, why no offer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Answers:
    """What the campaign answered: the kept pairs (sorted by customer, then rank) and, per
    customer, codes into the vocabularies."""

    ids: Sequence[str]
    pair_customer: I64
    pair_rank: I64
    pair_offer: I64
    pair_p: F64
    pair_objective: F64
    pair_value: F64
    pair_cost: F64
    pair_reasons: I64
    segment: I64
    strategy: I64
    arm: I64
    reason: I64
    known: npt.NDArray[np.bool_]
    token: str  # decision ids are "<token>-<customer row>"
    offers: Sequence[str]
    segments: Sequence[str]
    strategies: Sequence[str]
    arms: Sequence[str]
    reasons: Sequence[str]  # both the reason codes of offers and the answers' reasons
    first: int = 0  # the campaign row of ids[0] (a block of the campaign's customers)


def decision_ids(token: str, rows: I64) -> pa.Array:
    return pc.binary_join_element_wise(pa.scalar(token), pa.array(rows).cast(pa.string()), "-")


DICTIONARIES = ["customer_id", "decision_id", "segment", "offer_id", "strategy", "arm", "reasons",
                "reason"]


class Writer:
    """Row groups appended as blocks of customers are answered; the file appears under its
    name only on ``close`` (never a half-written file under the name asked for)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    def append(self, a: Answers) -> None:
        table = table_of(a)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Dictionaries only where the column is one already; no statistics: ~30% less time.
            self._writer = pq.ParquetWriter(self.partial, table.schema, write_statistics=False,
                                            use_dictionary=DICTIONARIES)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> int:
        if self._writer is not None:
            self._writer.close()
            self.partial.replace(self.path)
        return self.rows

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self.partial.unlink(missing_ok=True)


def write(path: Path, a: Answers) -> int:
    """Writes the file in one piece; the number of rows."""
    writer = Writer(path)
    writer.append(a)
    return writer.close()


def table_of(a: Answers) -> pa.Table:
    """One block's rows: its customers in order, each with their offers by rank."""
    n = len(a.ids)
    counts = np.bincount(a.pair_customer, minlength=n)
    empty = np.flatnonzero(counts == 0)
    if len(empty):  # rows without an offer merged in, in customer order
        customer = np.concatenate((a.pair_customer, empty))
        order = np.argsort(customer, kind="stable")
        customer = customer[order]
        with_offer = order < len(a.pair_customer)
        pick = np.where(with_offer, order, 0)
        missing: npt.NDArray[np.bool_] | None = ~with_offer
    else:  # every customer has an offer: the pairs are the rows, as they are
        customer, pick, missing = a.pair_customer, None, None

    def pairs(values: npt.NDArray[np.generic], dtype: pa.DataType) -> pa.Array:
        if not len(a.pair_customer):
            return pa.nulls(len(customer), dtype)
        return pa.array(values if pick is None else values[pick], dtype, mask=missing)

    def coded(codes: npt.NDArray[np.int64], vocabulary: Sequence[str],
              mask: npt.NDArray[np.bool_] | None = None) -> pa.Array:
        indices = pa.array(codes, pa.int64(), mask=mask)
        return pa.DictionaryArray.from_arrays(indices, pa.array(list(vocabulary), pa.string()))

    def per_pair(values: I64) -> I64:
        if not len(a.pair_customer):
            return np.zeros(len(customer), np.int64)
        return values if pick is None else values[pick]

    rank = per_pair(a.pair_rank) if missing is None else np.where(missing, 0, per_pair(
        a.pair_rank))
    rows = pa.array(customer, pa.int64())
    table = pa.table({
        # Per customer, not per row: dictionaries indexed by the customer's position.
        "customer_id": pa.DictionaryArray.from_arrays(rows, pa.array(a.ids, pa.string())),
        "known": pa.array(a.known[customer]),
        "segment": coded(a.segment[customer], a.segments),
        "rank": pa.array(rank.astype(np.int32)),
        "offer_id": coded(per_pair(a.pair_offer), a.offers, mask=missing),
        "score": pairs(a.pair_p.astype(np.float32), pa.float32()),
        "p_accept": pairs(a.pair_p, pa.float64()),
        "objective": pairs(a.pair_objective, pa.float64()),
        "value": pairs(a.pair_value, pa.float64()),
        "cost": pairs(a.pair_cost, pa.float64()),
        "strategy": coded(a.strategy[customer], a.strategies),
        "arm": coded(a.arm[customer], a.arms),
        "decision_id": pa.DictionaryArray.from_arrays(
            rows, decision_ids(a.token, a.first + np.arange(n))),
        "reasons": coded(per_pair(a.pair_reasons), a.reasons, mask=missing),
        "reason": coded(a.reason[customer], a.reasons),
    })
    return table
