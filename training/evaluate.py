"""Held-out splits and ranking metrics, written here on purpose: implicit 0.7.3's
``leave_k_out_split`` is buggy (upstream issue 639) and its ``precision_at_k`` is a capped recall.

Definitions (also in docs/DESIGN.md and every report):
- split: for each customer with at least ``min_history`` distinct accepted/redeemed offers, the
  ``k`` offers accepted most recently (ties: lower column first) are held out; their whole cells
  leave the training matrix, so no click or impression of a held-out pair leaks.
- precision@10: held-out offers in the top 10, divided by 10 (not by min(10, held out)).
- ndcg@10: DCG of the top 10 with binary gains over the ideal DCG of min(10, held out) hits.
- coverage: share of the segment's offers in at least one evaluated top 10.
- de-biased (``debiased_*``): the same hits, each held-out pair weighted by the inverse of its
  propensity of exposure (``propensity``: share of the segment's customers the offer was shown
  to), clipped at ``max_weight`` and self-normalised, so an accept of an offer the incumbent
  rarely showed counts for what it says about customers who were not shown it (SNIPS):
  ``sum_u sum_(i in H_u) w_i g_ui / sum_u sum_(i in H_u) w_i / |H_u|``; with every w = 1 it is the
  naive metric. When the decision log says with which probability the serving policy showed a
  held-out pair (``logged_propensity``: training/inputs/decisions.py), that probability replaces
  the estimate for that pair, clipped and self-normalised the same way.
- exploration slice (``exploration_*``): customers with an offer shown in an explored answer
  (shown uniformly at random among the eligible offers), and as relevant only their held-out
  pairs that an explored answer showed. Exposure there is uniform, so the plain hit rate needs no
  propensity: its expectation is (k / eligible) x the true expected precision of the ranking
  when every explored accept is held out (tests/unit/test_logged_propensity_metrics.py); with
  the usual holdout of each customer's latest accepts it is a lower-weighted version of it.
The top 10 never contains offers the customer accepted in the training part (the service
filters those too), and every strategy is scored by recsvc.ranking, the serving code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from recsvc.core.model import (
    STRATEGY_BLENDED,
    STRATEGY_PERSONALIZED,
    STRATEGY_POPULAR,
    SegmentModel,
)
from recsvc.core.ranking import segment_scores

K = 10
_DISCOUNT = 1.0 / np.log2(np.arange(2, K + 2))


@dataclass(frozen=True)
class Split:
    train: npt.NDArray[np.bool_]  # over cells: True = stays in training
    heldout: npt.NDArray[np.bool_]  # over cells: True = held out
    rows: npt.NDArray[np.int64]  # evaluated customers (local rows), sorted


def holdout_split(rows: npt.NDArray[np.int32], cols: npt.NDArray[np.int32],
                  accepted_at: npt.NDArray[np.float64], keep: npt.NDArray[np.bool_],
                  k: int, min_history: int) -> Split:
    """Hold out each eligible customer's ``k`` latest accepted cells among ``keep``."""
    positive = np.flatnonzero(keep & np.isfinite(accepted_at))
    order = np.lexsort((cols[positive], -accepted_at[positive], rows[positive]))
    ranked = positive[order]
    ranked_rows = rows[ranked]
    starts = np.flatnonzero(np.r_[True, ranked_rows[1:] != ranked_rows[:-1]]) if len(ranked) \
        else np.empty(0, dtype=np.int64)
    counts = np.diff(np.r_[starts, len(ranked)])
    position = np.arange(len(ranked)) - np.repeat(starts, counts)
    enough = np.repeat(counts >= min_history, counts)
    chosen = ranked[enough & (position < k)]
    heldout = np.zeros(len(rows), dtype=bool)
    heldout[chosen] = True
    return Split(train=keep & ~heldout, heldout=heldout,
                 rows=np.unique(rows[chosen]).astype(np.int64))


@dataclass(frozen=True)
class Metrics:
    precision_at_10: float
    ndcg_at_10: float
    coverage: float
    debiased_precision_at_10: float | None = None
    debiased_ndcg_at_10: float | None = None
    exploration_precision_at_10: float | None = None
    exploration_ndcg_at_10: float | None = None
    exploration_customers: int = 0

    def as_dict(self) -> dict[str, float]:
        result = {"precision_at_10": round(self.precision_at_10, 6),
                  "ndcg_at_10": round(self.ndcg_at_10, 6), "coverage": round(self.coverage, 6)}
        if self.debiased_precision_at_10 is not None and self.debiased_ndcg_at_10 is not None:
            result["debiased_precision_at_10"] = round(self.debiased_precision_at_10, 6)
            result["debiased_ndcg_at_10"] = round(self.debiased_ndcg_at_10, 6)
        if self.exploration_precision_at_10 is not None \
                and self.exploration_ndcg_at_10 is not None:
            result["exploration_precision_at_10"] = round(self.exploration_precision_at_10, 6)
            result["exploration_ndcg_at_10"] = round(self.exploration_ndcg_at_10, 6)
            result["exploration_customers"] = self.exploration_customers
        return result

    def key(self, select_on: str) -> tuple[float, float]:
        """What tuning maximises. ``debiased``: de-biased precision@10, then de-biased ndcg@10;
        ``naive``: ndcg@10 (the choice before de-biasing), then precision@10.

        Precision first when de-biased: with one held-out accept per customer, the de-biased
        ndcg still rewards blends that put the few widely shown offers first, while what a
        campaign gets is the share of its 10 offers that are accepted.
        """
        if select_on == "debiased" and self.debiased_precision_at_10 is not None \
                and self.debiased_ndcg_at_10 is not None:
            return self.debiased_precision_at_10, self.debiased_ndcg_at_10
        return self.ndcg_at_10, self.precision_at_10


def inverse_propensity(shown_customers: npt.NDArray[np.float64], customers: int,
                       max_weight: float) -> npt.NDArray[np.float64]:
    """Per offer 1 / P(shown), P estimated as the share of customers it was shown to, clipped."""
    return clipped_inverse(shown_customers / max(customers, 1), max_weight)


def clipped_inverse(propensity: npt.NDArray[np.float64], max_weight: float
                    ) -> npt.NDArray[np.float64]:
    """1 / propensity, at most ``max_weight`` (estimated and logged propensities alike)."""
    result: npt.NDArray[np.float64] = 1.0 / np.maximum(propensity, 1.0 / max_weight)
    return result


def score_metrics(top: npt.NDArray[np.int64], relevant_rows: npt.NDArray[np.int64],
                  relevant_cols: npt.NDArray[np.int64], n_offers: int,
                  weights: npt.NDArray[np.float64] | None = None, *,
                  pair_weights: npt.NDArray[np.float64] | None = None) -> Metrics:
    """Metrics of top-10 lists (one row per customer, -1 pads) against held-out cells given as
    (row, column) pairs; rows index ``top``. ``weights`` (inverse propensity per offer column)
    or ``pair_weights`` (one per held-out pair) adds the de-biased metrics."""
    if pair_weights is None and weights is not None:
        pair_weights = weights[relevant_cols]
    weights = pair_weights
    n = len(top)
    if n == 0:
        return Metrics(0.0, 0.0, 0.0, None if weights is None else 0.0,
                       None if weights is None else 0.0)
    width = top.shape[1]
    codes = np.arange(n, dtype=np.int64)[:, None] * (n_offers + 1) + top
    wanted = relevant_rows.astype(np.int64) * (n_offers + 1) + relevant_cols
    hits = np.isin(codes, wanted) & (top >= 0)
    dcg = (hits * _DISCOUNT[:width]).sum(axis=1)
    held_all = np.bincount(relevant_rows, minlength=n)
    held = np.minimum(held_all, K)
    ideal = np.r_[0.0, np.cumsum(_DISCOUNT)][held]
    ndcg = np.divide(dcg, ideal, out=np.zeros(n), where=ideal > 0)
    shown = np.unique(top[top >= 0])
    metrics = Metrics(float(hits.sum(axis=1).mean() / K), float(ndcg.mean()),
                      float(len(shown) / n_offers) if n_offers else 0.0)
    if weights is None or not len(relevant_rows):
        return metrics
    # Item level: each held-out pair's gain (hit / 10 for precision, its discounted gain over
    # the customer's ideal for ndcg), weighted by w / |H_u| so that w = 1 gives the naive means.
    hit_rank = np.full(len(relevant_rows), -1, dtype=np.int64)
    at_row, at_rank = np.nonzero(hits)
    pair_of_hit = np.searchsorted(np.sort(wanted), codes[at_row, at_rank])
    order = np.argsort(wanted)
    hit_rank[order[pair_of_hit]] = at_rank
    found = hit_rank >= 0
    w = weights / held_all[relevant_rows]
    gain_p = found / K * held_all[relevant_rows]
    gain_n = np.where(found, _DISCOUNT[np.maximum(hit_rank, 0)], 0.0) \
        * held_all[relevant_rows] / ideal[relevant_rows]
    total = float(w.sum()) * n / len(np.unique(relevant_rows))
    return Metrics(metrics.precision_at_10, metrics.ndcg_at_10, metrics.coverage,
                   float((w * gain_p).sum() / total), float((w * gain_n).sum() / total))


def with_exploration(metrics: Metrics, top: npt.NDArray[np.int64],
                     relevant_rows: npt.NDArray[np.int64], relevant_cols: npt.NDArray[np.int64],
                     explored: npt.NDArray[np.bool_], slice_rows: npt.NDArray[np.int64],
                     n_offers: int) -> Metrics:
    """``metrics`` plus the exploration slice's: the naive metrics of the customers
    ``slice_rows`` (rows of ``top``) against their held-out pairs that were ``explored``."""
    if not len(slice_rows):
        return metrics
    local = np.full(len(top), -1, dtype=np.int64)
    local[slice_rows] = np.arange(len(slice_rows))
    keep = explored & (local[relevant_rows] >= 0)
    on_slice = score_metrics(top[slice_rows], local[relevant_rows[keep]], relevant_cols[keep],
                             n_offers)
    return replace(metrics, exploration_precision_at_10=on_slice.precision_at_10,
                   exploration_ndcg_at_10=on_slice.ndcg_at_10,
                   exploration_customers=len(slice_rows))


def top10(segment: SegmentModel, vectors: npt.NDArray[np.float32] | None, n: int,
          exclude_rows: npt.NDArray[np.int64], exclude_cols: npt.NDArray[np.int64],
          chunk: int = 4096) -> npt.NDArray[np.int64]:
    """Top 10 local columns for ``n`` customers (-1 pads), excluding the given cells.

    ``vectors`` holds one row per customer, or None for popularity; ``exclude_rows`` index
    customers 0..n-1.
    """
    n_offers = len(segment.offers)
    width = min(K, n_offers)
    result = np.full((n, K), -1, dtype=np.int64)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        block = vectors[start:stop] if vectors is not None else None
        scores = np.array(np.broadcast_to(segment_scores(segment, block),
                                          (stop - start, n_offers)), dtype=np.float32)
        inside = (exclude_rows >= start) & (exclude_rows < stop)
        scores[exclude_rows[inside] - start, exclude_cols[inside]] = -np.inf
        if width == 0:
            continue
        # Ties keep catalogue order across the cut too, as in ranking.top_k (a stable sort there;
        # here a partition on unique keys, three times cheaper than sorting every row).
        keys = _best_first_keys(scores)
        part = np.argpartition(keys, width - 1, axis=1)[:, :width]
        order = np.argsort(np.take_along_axis(keys, part, axis=1), axis=1)
        best = np.take_along_axis(part, order, axis=1)
        best_scores = np.take_along_axis(scores, best, axis=1)
        best[~np.isfinite(best_scores)] = -1
        result[start:stop, :width] = best
    return result


def segment_model(strategy: str, items: npt.NDArray[np.float32] | None,
                  popularity: npt.NDArray[np.float32], blend_weight: float) -> SegmentModel:
    """A SegmentModel over local columns, so evaluation scores exactly as serving does."""
    n = len(popularity)
    return SegmentModel.build("eval", strategy, blend_weight, np.arange(n, dtype=np.uint32),
                              popularity, items, n)


def strategy_for(weight: float) -> str:
    if weight >= 1.0:
        return STRATEGY_PERSONALIZED
    return STRATEGY_POPULAR if weight <= 0.0 else STRATEGY_BLENDED


def _best_first_keys(scores: npt.NDArray[np.float32]) -> npt.NDArray[np.uint64]:
    """Per cell a unique key, smaller for a higher score and, among equal scores, an earlier column.

    The float32 bits are mapped to an unsigned integer in the order of the values (flip the sign
    bit of positives, every bit of negatives), reversed, and followed by the column number.
    """
    normalized = scores + np.float32(0.0)  # -0.0 becomes 0.0: they compare equal
    bits = normalized.view(np.uint32)
    negative = (normalized.view(np.int32) >> 31).view(np.uint32)  # all ones where negative
    # Positives: flip the 31 value bits (bigger value, smaller key, below 2**31); negatives keep
    # their bits (sign bit set: above every positive; more negative, bigger key).
    descending = bits ^ (~negative & np.uint32(0x7FFFFFFF))
    columns = np.arange(scores.shape[1], dtype=np.uint64)
    keys: npt.NDArray[np.uint64] = (descending.astype(np.uint64) << np.uint64(32)) | columns
    return keys


def cell_scores(segment: SegmentModel, vectors: npt.NDArray[np.float32] | None,
                rows: npt.NDArray[np.int64], cols: npt.NDArray[np.int64],
                chunk: int = 4096) -> npt.NDArray[np.float64]:
    """The served score of each (row, column) cell: rows index ``vectors`` (None: popularity)."""
    result = np.empty(len(rows), dtype=np.float64)
    if vectors is None:
        result[:] = segment_scores(segment, None)[0, cols]
        return result
    unique, inverse = np.unique(rows, return_inverse=True)
    for start in range(0, len(unique), chunk):
        block = segment_scores(segment, vectors[unique[start:start + chunk]])
        inside = (inverse >= start) & (inverse < start + chunk)
        result[inside] = block[inverse[inside] - start, cols[inside]]
    return result
