"""Interactions -> per-segment customer x offer confidence matrices.

How a cell's confidence is made (documented in docs/DESIGN.md):
1. each row's value is its ``weight`` when given, else the event's default weight, times
   ``0.5 ** (age / half_life)`` when a half-life is set (age from the newest interaction);
2. repeated (customer, offer, event) rows are aggregated on purpose: ``max`` (default: the value
   of largest magnitude, so ten impressions weigh what one does) or ``sum``;
3. the cell is the sum over its events; a cell with impressions and no click, accept or redeem
   may add ``negative_impression_weight`` ("seen, not liked"), an option the tuning can test.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix

from training.config import EVENTS, TrainConfig
from training.inputs.data import Dataset

_IMPRESSION, _CLICK, _ACCEPT, _REDEEM = (EVENTS.index(e) for e in
                                         ("impression", "click", "accept", "redeem"))
_N_EVENTS = len(EVENTS)


@dataclass(frozen=True)
class Cells:
    """Aggregated customer x offer cells of one segment, in local (row, column) indices."""

    rows: npt.NDArray[np.int32]
    cols: npt.NDArray[np.int32]
    confidence: npt.NDArray[np.float32]  # without the negative-impression option
    impression_only: npt.NDArray[np.bool_]
    accepted_at: npt.NDArray[np.float64]  # newest accept/redeem time, -inf when none
    interactions: int  # input rows behind these cells
    customers: npt.NDArray[np.int64]  # local row -> dataset customer index
    offers: npt.NDArray[np.int64]  # local column -> catalogue index
    # With a decision log (--decisions): per cell the largest logged propensity of its joined
    # interactions (NaN: none joined) and whether an explored answer showed it.
    logged_propensity: npt.NDArray[np.float64] | None = None
    explored: npt.NDArray[np.bool_] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.customers), len(self.offers)

    @property
    def accepted(self) -> npt.NDArray[np.bool_]:
        return np.isfinite(self.accepted_at)

    def values(self, negative_weight: float | None) -> npt.NDArray[np.float32]:
        if negative_weight is None:
            return self.confidence
        return np.where(self.impression_only, np.float32(negative_weight) + self.confidence,
                        self.confidence).astype(np.float32)

    def _used(self, values: npt.NDArray[np.float32], keep: npt.NDArray[np.bool_] | None,
              positive_only: bool) -> npt.NDArray[np.bool_]:
        use = values > 0 if positive_only else values != 0
        return use if keep is None else use & keep

    def trained_rows(self, negative_weight: float | None,
                     positive_only: bool = False) -> npt.NDArray[np.bool_]:
        """Customers with at least one cell in ``matrix(negative_weight, None, positive_only)``."""
        use = self._used(self.values(negative_weight), None, positive_only)
        return np.bincount(self.rows[use], minlength=self.shape[0]) > 0

    def matrix(self, negative_weight: float | None, keep: npt.NDArray[np.bool_] | None = None,
               positive_only: bool = False) -> csr_matrix:
        """customers x offers CSR (float32) of the cells in ``keep``; zero cells dropped."""
        values = self.values(negative_weight)
        use = self._used(values, keep, positive_only)
        matrix = csr_matrix((values[use], (self.rows[use], self.cols[use])), shape=self.shape,
                            dtype=np.float32)
        matrix.sum_duplicates()
        return matrix

    def popularity(self, keep: npt.NDArray[np.bool_] | None = None) -> npt.NDArray[np.float32]:
        """Per offer: the sum of positive confidence over customers (the baseline's score)."""
        use = self.confidence > 0 if keep is None else (self.confidence > 0) & keep
        return np.bincount(self.cols[use], weights=self.confidence[use],
                           minlength=self.shape[1]).astype(np.float32)


@dataclass(frozen=True)
class _Pairs:
    """Aggregated (customer, offer) cells over all segments."""

    customer: npt.NDArray[np.int64]
    offer: npt.NDArray[np.int64]
    confidence: npt.NDArray[np.float32]
    impression_only: npt.NDArray[np.bool_]
    accepted_at: npt.NDArray[np.float64]
    rows: npt.NDArray[np.int64]
    logged_propensity: npt.NDArray[np.float64] | None = None
    explored: npt.NDArray[np.bool_] | None = None


CHUNK_ROWS = 4_000_000  # interactions aggregated at a time: bounds the temporary memory


def _aggregate(data: Dataset, rows: npt.NDArray[np.int64] | slice, config: TrainConfig,
               newest: float) -> _Pairs:
    n_offers = len(data.offers)
    event = data.event[rows]
    defaults = np.array([config.event_weight(e) for e in EVENTS], dtype=np.float32)
    value = defaults[event]
    if data.weight is not None:
        weight = data.weight[rows]
        given = ~np.isnan(weight)
        value[given] = weight[given]
    ts = data.ts[rows]
    if config.half_life_days > 0:
        value = (value * np.power(0.5, (newest - ts) / 86400.0 / config.half_life_days)
                 ).astype(np.float32)
    key = (data.customer[rows].astype(np.int64) * n_offers + data.offer[rows]) * _N_EVENTS + event
    order = np.argsort(key, kind="stable")
    key, value, ts = key[order], value[order], ts[order]
    logged = None if data.logged_propensity is None else data.logged_propensity[rows][order]
    explored = None if data.explored is None else data.explored[rows][order]
    del order, event
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    if config.duplicates == "sum":
        event_value = np.add.reduceat(value, starts)
    else:
        high = np.maximum.reduceat(value, starts)
        low = np.minimum.reduceat(value, starts)
        event_value = np.where(np.abs(low) > np.abs(high), low, high)
        del high, low
    event_ts = np.maximum.reduceat(ts, starts)
    rows_per_event = np.diff(np.r_[starts, len(key)])
    event_key = key[starts]
    if logged is not None and explored is not None:
        logged = np.fmax.reduceat(logged, starts)
        explored = np.maximum.reduceat(explored, starts)
    del key, value, ts, starts
    event = (event_key % _N_EVENTS).astype(np.int8)
    pair = event_key // _N_EVENTS
    del event_key
    pair_starts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
    positive_ts = np.where((event == _ACCEPT) | (event == _REDEEM), event_ts, -np.inf)
    engaged = (event == _CLICK) | (event == _ACCEPT) | (event == _REDEEM)
    pair_id = pair[pair_starts]
    return _Pairs(
        customer=pair_id // n_offers,
        offer=pair_id % n_offers,
        confidence=np.add.reduceat(event_value, pair_starts).astype(np.float32),
        impression_only=(np.maximum.reduceat(event == _IMPRESSION, pair_starts)
                         & ~np.maximum.reduceat(engaged, pair_starts)),
        accepted_at=np.maximum.reduceat(positive_ts, pair_starts),
        rows=np.add.reduceat(rows_per_event, pair_starts),
        # A cell shown by several logged decisions: the largest propensity, so the smallest
        # weight (P(shown at least once) is at least that).
        logged_propensity=None if logged is None else np.fmax.reduceat(logged, pair_starts),
        explored=None if explored is None else np.maximum.reduceat(explored, pair_starts),
    )


def _all_pairs(data: Dataset, config: TrainConfig) -> _Pairs:
    """Aggregates customer range by customer range: a cell never spans two customers."""
    total = len(data.customer)
    if total == 0:
        empty_i = np.empty(0, dtype=np.int64)
        return _Pairs(empty_i, empty_i, np.empty(0, np.float32), np.empty(0, bool),
                      np.empty(0), empty_i)
    newest = float(data.ts.max())
    chunks = max(1, -(-total // CHUNK_ROWS))
    if chunks == 1:
        return _aggregate(data, slice(None), config, newest)
    bounds = np.linspace(0, len(data.customer_segment), chunks + 1).astype(np.int64)
    parts = []
    for lo, hi in itertools.pairwise(bounds):
        rows = np.flatnonzero((data.customer >= lo) & (data.customer < hi))
        parts.append(_aggregate(data, rows, config, newest))
    joined: list[Any] = [None if getattr(parts[0], f) is None else
                         np.concatenate([getattr(p, f) for p in parts])
                         for f in ("customer", "offer", "confidence", "impression_only",
                                   "accepted_at", "rows", "logged_propensity", "explored")]
    return _Pairs(*joined)


def build_cells(data: Dataset, config: TrainConfig) -> list[Cells]:
    """One Cells per segment, in ``data.segment_names`` order."""
    pairs = _all_pairs(data, config)
    segment_of_pair = data.customer_segment[pairs.customer]
    cells = []
    for s in range(len(data.segment_names)):
        customers = np.flatnonzero(data.customer_segment == s)
        offers = np.flatnonzero(data.eligible[s])
        local_row = np.full(len(data.customer_segment), -1, dtype=np.int64)
        local_row[customers] = np.arange(len(customers))
        local_col = np.full(len(data.offers), -1, dtype=np.int64)
        local_col[offers] = np.arange(len(offers))
        mine = np.flatnonzero(segment_of_pair == s)
        cells.append(Cells(
            rows=local_row[pairs.customer[mine]].astype(np.int32),
            cols=local_col[pairs.offer[mine]].astype(np.int32),
            confidence=pairs.confidence[mine],
            impression_only=pairs.impression_only[mine],
            accepted_at=pairs.accepted_at[mine],
            interactions=int(pairs.rows[mine].sum()),
            customers=customers,
            offers=offers,
            logged_propensity=None if pairs.logged_propensity is None
            else pairs.logged_propensity[mine],
            explored=None if pairs.explored is None else pairs.explored[mine],
        ))
    return cells


def global_popularity(data: Dataset, cells: list[Cells]) -> tuple[npt.NDArray[np.int64],
                                                                   npt.NDArray[np.float32]]:
    """Offers open to every segment and their popularity summed over all segments."""
    open_to_all = np.flatnonzero(data.eligible.all(axis=0)) if len(data.segment_names) else \
        np.arange(len(data.offers))
    totals = np.zeros(len(data.offers), dtype=np.float64)
    for segment_cells in cells:
        totals[segment_cells.offers] += segment_cells.popularity()
    return open_to_all, totals[open_to_all].astype(np.float32)
