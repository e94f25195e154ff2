"""Decisions for many customers of one segment at once: the campaign's vectorized front. Pure.

The same steps as ``decide.decide``, on n x offers arrays instead of one row: the score matrix
is one product (``segment_scores`` with n vectors), eligibility one boolean matrix (the memoized
base mask, the segment's budget block, the customer rules, the records' accepted offers), the
objective ``objective.evaluate`` over the matrix, the top-k the same order (value descending,
ties by the segment's offer order). Only customers whose decision needs nothing else come
here: a known record that decodes, an empty live hash, not on the do-not-contact list, the
treatment arm, no exploration, no challenger; the caller sends everyone else through
``decide`` itself, one by one. Customer rules run per customer (the compiled closures of
``rules.py``: the same code serving runs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from recsvc.core.ranking import NO_SCORE, base_eligibility, segment_scores
from recsvc.decisioning import objective as obj
from recsvc.decisioning.decide import HIGH_RISK, attribute_values
from recsvc.decisioning.decider import Decider, SegmentTables

F64 = npt.NDArray[np.float64]
INTP = npt.NDArray[np.intp]


@dataclass(frozen=True)
class Rows:
    """n customers' candidates, best first: segment positions (``local``, -1 past ``count``),
    their p_accept and objective."""

    local: INTP
    count: INTP
    p_accept: F64
    objective: F64
    eligible: INTP  # eligible offers per customer (exploration's propensities need it)
    high_risk: npt.NDArray[np.bool_]  # the retention objective's retention_priority reason


def width_of(tables: SegmentTables, limit: int) -> int:
    """Candidates kept per customer: ``limit``, twice that when the segment has on-serve
    budgets (a budgeted offer without a unit leaves its slot to the next one, as in serving)."""
    return 2 * limit if tables.any_on_serve else limit


def decide_rows(d: Decider, tables: SegmentTables, vectors: npt.NDArray[np.float32] | None,
                n: int, accepted: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]],
                attributes: npt.NDArray[np.uint32] | None, now: float, channel: str,
                context: Mapping[str, str], width: int) -> Rows:
    """``vectors``: n x F (None: every customer ranked by the segment's popularity);
    ``accepted``: (row, catalogue index) pairs; ``attributes``: n x K words of the records."""
    segment = tables.model
    base = base_eligibility(segment, d.model.catalogue, now, channel)
    if tables.blocked is not None:
        base = base & ~tables.blocked
    mask = np.repeat(base[np.newaxis, :], n, axis=0)
    numbers: npt.NDArray[np.float32] | None = None
    size = len(d.schema.names)
    if attributes is None:
        attributes = np.full((n, size), 0xFFFFFFFF, dtype=np.uint32)
    if tables.has_rules or d.objective == obj.RETENTION:
        numbers = attributes.view(np.float32)
    if tables.has_rules:
        mask &= _rules_passed(tables, attributes, size, context)
    rows, index = accepted
    if len(rows):
        local = segment.local_of[index]
        keep = local >= 0
        mask[rows[keep], local[keep]] = False
    churn, clv = _churn_clv(d, tables, numbers, n)
    eligible = np.count_nonzero(mask, axis=1)
    by_score = vectors is not None and d.objective == obj.RELEVANCE and tables.levers is None \
        and not tables.any_new
    scores = None if vectors is None else segment_scores(segment, vectors)
    p, value, order = _ordering(d, tables, scores, churn, clv, by_score)
    if scores is None and order.shape[0] == 1:
        best = top_shared(order[0], mask, width)
    else:
        best, close = top_rows(order, mask, width)
        if scores is not None and vectors is not None and len(close):
            # A many-row product can differ from the one-row product serving computes in the
            # last bits; where that could reorder offers (values within float32 noise of each
            # other in a row's head or at its cut), the row is scored again as serving scores it.
            scores[close] = np.concatenate(
                [segment_scores(segment, vectors[i:i + 1]) for i in close.tolist()])
            if by_score:
                order = scores
            else:
                assert p is not None and value is not None
                p[close], value[close], _ = _ordering(d, tables, scores[close], churn[close],
                                                      clv[close], False)
                order = value
            best[close] = top_rows(order[close], mask[close], width)[0]
    count = np.minimum(eligible, width)
    taken = np.arange(width)[np.newaxis, :] < count[:, np.newaxis]
    best = np.where(taken, best, -1)
    safe = np.maximum(best, 0)
    row = np.arange(n)[:, np.newaxis]
    if by_score:
        assert scores is not None
        p_chosen = chosen_p_accept(tables, scores, safe)
        value_chosen = p_chosen
    else:
        assert p is not None and value is not None
        p_chosen = np.broadcast_to(p, (n, p.shape[1]))[row, safe]
        value_chosen = np.broadcast_to(value, (n, value.shape[1]))[row, safe]
    high = (churn >= HIGH_RISK) if d.objective == obj.RETENTION else np.zeros(n, dtype=bool)
    return Rows(best, count, np.where(taken, p_chosen, np.nan),
                np.where(taken, value_chosen, np.nan), eligible, high)


def _ordering(d: Decider, tables: SegmentTables, scores: npt.NDArray[np.float32] | None,
              churn: F64, clv: F64, by_score: bool
              ) -> tuple[F64 | None, F64 | None, npt.NDArray[np.floating[Any]]]:
    """(p_accept, objective, the ranking key): the served score itself when ``decide`` ranks by
    it (relevance without levers or new offers), else the objective."""
    if by_score:
        assert scores is not None
        return None, None, scores
    p = p_accept_rows(tables, scores)
    value = obj.evaluate(d.objective, p, tables.value, tables.cost, tables.levers,
                         churn[:, np.newaxis], clv[:, np.newaxis])
    return p, value, value


NOISE = 1e-5  # relative: far above float32 rounding of a product, far below a real difference


def _rules_passed(tables: SegmentTables, attributes: npt.NDArray[np.uint32], size: int,
                  context: Mapping[str, str]) -> npt.NDArray[np.bool_]:
    """n x offers: the offer's customer rule holds (the compiled closures, per customer)."""
    rules = tables.rules
    passed = np.ones((len(attributes), len(rules) + 1), dtype=bool)
    for i, words in enumerate(attributes):
        numbers, codes = attribute_values(words, size)
        for k, rule in enumerate(rules):
            passed[i, k + 1] = rule(numbers, codes, context)
    ok: npt.NDArray[np.bool_] = passed[:, tables.rule_of] & ~tables.broken
    return ok


def _churn_clv(d: Decider, tables: SegmentTables, numbers: npt.NDArray[np.float32] | None,
               n: int) -> tuple[F64, F64]:
    """Per customer as ``decide._churn_clv``: the record's value, the segment mean if missing."""
    if d.objective != obj.RETENTION or numbers is None:
        return np.zeros(n), np.zeros(n)
    names = d.schema.names

    def column(name: str, mean: float) -> F64:
        if name not in names:
            return np.full(n, mean)
        values = numbers[:, names.index(name)].astype(np.float64)
        return np.where(np.isnan(values), mean, values)

    return column("churn_risk", tables.mean_churn), column("clv", tables.mean_clv)


def p_accept_rows(tables: SegmentTables, scores: npt.NDArray[np.float32] | None) -> F64:
    """``decide._p_accept`` for n score rows at once (1 x offers for popularity)."""
    if scores is None:
        return tables.popular_p[np.newaxis, :]
    if tables.calibration is not None:
        p = tables.calibration.apply(scores)
        return np.where(tables.is_new, tables.prior, p) if tables.any_new else p
    if not tables.any_new:
        return prior_rows(scores, tables.base_rate)
    out = np.full(scores.shape, tables.prior)
    out[:, ~tables.is_new] = prior_rows(scores[:, ~tables.is_new], tables.base_rate)
    return out


def chosen_p_accept(tables: SegmentTables, scores: npt.NDArray[np.float32],
                    best: INTP) -> F64:
    """``decide._p_chosen`` for n rows: p_accept of the chosen positions only."""
    row = np.arange(len(scores))[:, np.newaxis]
    chosen = scores[row, best]
    if tables.calibration is not None:
        return tables.calibration.apply(chosen)
    mean, scale = _standardization(scores)
    z = (chosen.astype(np.float64) - mean[:, np.newaxis]) * scale[:, np.newaxis]
    result: F64 = 1.0 / (1.0 + np.exp(-(z + tables.logit_base)))
    return result


def prior_rows(scores: npt.NDArray[np.floating[Any]], base_rate: float) -> F64:
    """``objective.prior_p_accept`` of every row."""
    mean, scale = _standardization(scores)
    z = (scores.astype(np.float64) - mean[:, np.newaxis]) * scale[:, np.newaxis]
    result: F64 = 1.0 / (1.0 + np.exp(-(z + obj.logit(base_rate))))
    return result


def _standardization(scores: npt.NDArray[np.floating[Any]]) -> tuple[F64, F64]:
    """Per row: the mean and 1 / standard deviation (0 for a constant row), computed as
    ``objective.prior_p_accept`` computes them."""
    rows = scores.astype(np.float64)
    m = rows.shape[1]
    if not m:
        return np.zeros(len(rows)), np.zeros(len(rows))
    mean = rows.sum(axis=1) / m
    variance = np.einsum("ij,ij->i", rows, rows) / m - mean * mean
    scale = np.where(variance > 1e-18, 1.0 / np.sqrt(np.maximum(variance, 1e-300)), 0.0)
    return mean, scale


def top_rows(order: npt.NDArray[np.floating[Any]], mask: npt.NDArray[np.bool_],
             width: int) -> tuple[INTP, INTP]:
    """Per row, the best ``width`` eligible positions, ties in position order: what
    ``decide._top`` (a stable sort of each row) returns, by a partition and a sort of the
    head; rows where a tie straddles the cut are sorted whole. Also the rows whose head (the
    best ``width`` + 1) holds two values within ``NOISE`` of the row's largest magnitude (over
    every offer, eligible or not: a proxy for the size of the product's terms, which bounds
    its rounding): their order could hang on the last bits of a product."""
    n, m = mask.shape
    none = np.empty(0, dtype=np.intp)
    if width <= 0 or m == 0:
        return np.zeros((n, max(width, 0)), dtype=np.intp), none
    masked = np.where(mask, order, NO_SCORE)
    k = min(width + 1, m)
    row = np.arange(n)[:, np.newaxis]
    if k < m:
        head = np.argpartition(-masked, k - 1, axis=1)[:, :k]
    else:
        head = np.broadcast_to(np.arange(m), (n, m))
    values = masked[row, head]
    head = np.take_along_axis(head, np.lexsort((head, -values), axis=1), axis=1)
    values = masked[row, head].astype(np.float64)
    finite = np.isfinite(values)
    scale = np.max(np.abs(order), axis=1).astype(np.float64) if order.shape[0] == n \
        else np.full(n, float(np.max(np.abs(order))))
    with np.errstate(invalid="ignore"):  # -inf - -inf past the eligible ones: NaN, no tie
        gaps = values[:, :-1] - values[:, 1:]
    near = (gaps <= NOISE * np.maximum(scale, 1e-30)[:, np.newaxis]) & finite[:, 1:]
    close: INTP = np.flatnonzero(near.any(axis=1))
    best = head[:, :width]
    if width < m:
        cut = values[:, width - 1]
        # A value equal to the cut's outside the head: the head may hold the wrong tied ones.
        at_least = np.count_nonzero(masked >= masked[row[:, 0], best[:, -1]][:, np.newaxis],
                                    axis=1)
        redo = np.flatnonzero((at_least > width) & (cut > NO_SCORE))
        if len(redo):
            best[redo] = np.argsort(-masked[redo], axis=1, kind="stable")[:, :width]
    else:
        best = np.pad(best, ((0, 0), (0, width - best.shape[1])))
    result: INTP = np.ascontiguousarray(best)
    return result, close


def top_shared(order: npt.NDArray[np.floating[Any]], mask: npt.NDArray[np.bool_],
               width: int) -> INTP:
    """``top_rows`` when every row has the same order (popularity): one stable sort, then the
    first ``width`` eligible positions of each row in that order."""
    n, m = mask.shape
    if width <= 0 or m == 0:
        return np.zeros((n, max(width, 0)), dtype=np.intp)
    ranked = np.argsort(-order, kind="stable")
    in_order = mask[:, ranked]
    # Eligible positions first (in rank order), the rest after: a stable sort of "not eligible".
    first = np.argsort(~in_order, axis=1, kind="stable")[:, :width]
    out: INTP = ranked[first]
    if width > m:
        out = np.pad(out, ((0, 0), (0, width - m)))
    return out


def finite_or_nan(values: F64) -> list[float]:
    return [v if math.isfinite(v) else math.nan for v in values.tolist()]
