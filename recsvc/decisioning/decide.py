"""One decision, pure: eligibility, customer rules, live policy, objective, top-k, reasons.

Fed by what one Redis round trip brought (the decoded record's parts and the live hash) and the
decider; called identically by Recommend and RecommendBatch. numpy over the segment's offers;
Python only per distinct customer rule and per answered offer.
"""

from __future__ import annotations

import itertools
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from recsvc.core.ranking import NO_SCORE, base_eligibility, drop_local
from recsvc.decisioning import objective as obj
from recsvc.decisioning.decider import (
    GLOBAL_REASON,
    PERSONAL_REASON,
    POPULAR_REASON,
    Decider,
    SegmentTables,
)
from recsvc.decisioning.explain import removed_offers
from recsvc.decisioning.policy import NOTHING_LIVE, LiveView, contact_capped
from recsvc.decisioning.rules import MISSING_CODE
from recsvc.ops import metrics

RETENTION_REASON = "retention_priority"
HIGH_RISK = 0.5  # churn_risk from which a retention-objective answer says retention_priority

_PROCESS = secrets.token_hex(4)
_COUNTER = itertools.count(1)


def new_decision_id() -> str:
    """Unique per answer: a random id per process and a counter (no system call per answer)."""
    return f"{_PROCESS}-{next(_COUNTER):x}"


@dataclass(frozen=True)
class Ask:
    """The question, as decisioning needs it (the serving layer validated it)."""

    customer_id: str
    limit: int
    now: float
    channel: str = ""
    excluded: Sequence[str] = ()
    context: Mapping[str, str] = field(default_factory=dict)
    explain: bool = False
    # Exploration (epsilon-greedy): with probability ``epsilon`` (drawn by the caller into
    # ``explore``) the answer shows eligible offers chosen uniformly at random instead.
    epsilon: float = 0.0
    explore: bool = False


@dataclass(frozen=True)
class Decision:
    """An answer's offers (catalogue indices of the decider's model), best first."""

    offers: list[int]
    p_accept: list[float]
    objective: list[float]
    reasons: list[tuple[str, ...]]
    removed: list[tuple[str, str, str]]  # (offer id, rule, detail), in rule order
    decision_id: str
    # On-serve budgets: ``offers`` are candidates (up to twice ``limit``) until the reserve
    # script granted units; ``finish`` keeps the first ``limit`` unbudgeted or granted ones.
    pending: bool = False
    limit: int = 0
    # The probability with which the policy showed each offer: 1 for a deterministic answer;
    # with exploration, (1 - epsilon) [greedy pick] + epsilon k / eligible (logged either way).
    propensities: list[float] = field(default_factory=list)
    explored: bool = False


_NO_NUMBERS: list[float] = []
_NO_CODES: list[int] = []


def attribute_values(attributes: npt.NDArray[np.uint32] | None,
                     size: int) -> tuple[list[float], list[int]]:
    """The record's attributes as Python lists: numbers (f32 bits) and codes; missing when the
    record has none (an unknown customer, a format-1 record)."""
    if attributes is None or len(attributes) != size:
        return [math.nan] * size, [MISSING_CODE] * size
    return attributes.view(np.float32).tolist(), attributes.tolist()


def decide(d: Decider, tables: SegmentTables, scores: npt.NDArray[np.float32] | None,
           accepted: npt.NDArray[np.uint32] | None, attributes: npt.NDArray[np.uint32] | None,
           live: LiveView, ask: Ask, global_list: bool = False) -> Decision:
    """``scores``: the customer's score row over the segment's offers, None for popularity."""
    segment = tables.model
    model = d.model
    mask = base_eligibility(segment, model.catalogue, ask.now, ask.channel)
    shared = True
    if tables.blocked is not None:
        mask, shared = mask & ~tables.blocked, False
    numbers, codes = _NO_NUMBERS, _NO_CODES
    if tables.has_rules or d.objective == obj.RETENTION:
        numbers, codes = attribute_values(attributes, len(d.schema.names))
    if tables.has_rules:
        passed = np.fromiter((rule(numbers, codes, ask.context) for rule in tables.rules),
                             dtype=bool, count=len(tables.rules))
        ok = np.concatenate(([True], passed))[tables.rule_of] & ~tables.broken
        mask, shared = mask & ok, False
    if d.dnc and ask.customer_id in d.dnc:
        mask, shared = mask & tables.exempt, False
    if live is not NOTHING_LIVE:
        if contact_capped(live, ask.channel, d.policy):
            metrics.contact_cap_hit(ask.channel)
            mask, shared = mask & tables.exempt, False
        dropped = [model.catalogue.index_of[o] for o in (*live.accepted, *live.suppressed)
                   if o in model.catalogue.index_of]
        if dropped:
            if shared:
                mask, shared = mask.copy(), False
            drop_local(mask, segment, np.asarray(dropped, dtype=np.int64))
    for taken in (accepted, _indices(model.catalogue.index_of, ask.excluded)):
        if taken is not None and len(taken):
            if shared:
                mask, shared = mask.copy(), False
            drop_local(mask, segment, taken)
    churn, clv = _churn_clv(d, tables, numbers)
    eligible = int(np.count_nonzero(mask))
    count = min(eligible, ask.limit)
    # Relevance without levers or new offers ranks by the served score itself (p_accept is
    # monotone in it), so p is computed for the answered offers only.
    by_score = scores is not None and d.objective == obj.RELEVANCE and tables.levers is None \
        and not tables.any_new
    p = value = None
    order: npt.NDArray[np.floating[Any]] | None = scores if by_score else None
    if order is None:
        p = _p_accept(tables, scores)
        value = obj.evaluate(d.objective, p, tables.value, tables.cost, tables.levers, churn,
                             clv)
        order = value
    assert order is not None
    best = _top(order, mask, count)
    pending = False
    propensities = [1.0] * len(best)
    # Segments with on-serve budgets never explore: their answers are reserved unit by unit.
    exploring = ask.epsilon > 0 and count > 0 and not tables.any_on_serve
    explore = exploring and ask.explore
    if exploring:
        greedy = best
        if explore:
            best = _EXPLORE_RNG.permutation(np.flatnonzero(mask))[:count]
        random_share = ask.epsilon * count / eligible
        in_greedy = np.isin(best, greedy)
        propensities = np.where(in_greedy, 1.0 - ask.epsilon + random_share,
                                random_share).tolist()
    if count and tables.any_on_serve and tables.on_serve[best].any():
        # Units are reserved before the answer; candidates beyond the limit stand in for
        # budgeted offers the reserve script cannot grant.
        best, pending = _top(order, mask, min(eligible, 2 * ask.limit)), True
    if explore and p is None and scores is not None:
        p = _p_accept(tables, scores)  # the random picks need their own p_accept
        value = p
    if p is None or value is None:
        assert scores is not None
        chosen = _p_chosen(tables, scores, best)
        p_list = value_list = chosen
    else:
        p_list, value_list = p[best].tolist(), value[best].tolist()
    base_reason = GLOBAL_REASON if global_list else (
        POPULAR_REASON if scores is None else PERSONAL_REASON)
    by_kind = tables.reasons_by_kind[base_reason]
    if d.objective == obj.RETENTION and churn >= HIGH_RISK:
        reasons = [(*by_kind[i], RETENTION_REASON) for i in best.tolist()]
    else:
        reasons = [by_kind[i] for i in best.tolist()]
    if explore:
        reasons = [(*r, EXPLORATION_REASON) for r in reasons]
    removed = removed_offers(d, tables, mask, numbers, codes, live, accepted, ask) \
        if ask.explain else []
    return Decision(segment.offers[best].tolist(), p_list, value_list, reasons, removed,
                    new_decision_id(), pending, ask.limit, propensities, explore)


EXPLORATION_REASON = "exploration"  # an offer shown at random so it keeps getting evidence
_EXPLORE_RNG = np.random.default_rng()


def finish(decision: Decision, budgeted: set[int], granted: set[int]) -> Decision:
    """The answer once the reserve script granted units: the first ``limit`` candidates that
    are unbudgeted or granted (a budgeted offer without a unit is skipped)."""
    keep = [k for k, i in enumerate(decision.offers) if i not in budgeted or i in granted]
    keep = keep[:decision.limit]
    return Decision([decision.offers[k] for k in keep], [decision.p_accept[k] for k in keep],
                    [decision.objective[k] for k in keep], [decision.reasons[k] for k in keep],
                    decision.removed, decision.decision_id,
                    propensities=[decision.propensities[k] for k in keep]
                    if decision.propensities else [],
                    explored=decision.explored)


def _indices(index_of: Mapping[str, int], ids: Sequence[str]) -> npt.NDArray[np.int64] | None:
    if not ids:
        return None
    found = [index_of[o] for o in ids if o in index_of]
    return np.asarray(found, dtype=np.int64) if found else None


def _p_accept(tables: SegmentTables, scores: npt.NDArray[np.float32] | None
              ) -> npt.NDArray[np.float64]:
    if scores is None:
        return tables.popular_p
    if tables.calibration is not None:
        p = tables.calibration.apply(scores)
        return np.where(tables.is_new, tables.prior, p) if tables.any_new else p
    if not tables.any_new:
        return obj.prior_p_accept(scores, tables.base_rate)
    # New offers (zero factors) stay out of the standardization: trained offers keep their p.
    p = np.full(len(scores), tables.prior)
    p[~tables.is_new] = obj.prior_p_accept(scores[~tables.is_new], tables.base_rate)
    return p


def _p_chosen(tables: SegmentTables, scores: npt.NDArray[np.float32],
              best: npt.NDArray[np.intp]) -> list[float]:
    """p_accept of the answered offers only (the standardization still sees the whole row)."""
    if tables.calibration is not None:
        chosen: list[float] = tables.calibration.apply(scores[best]).tolist()
        return chosen
    return obj.prior_of(scores, best, tables.logit_base)


def _churn_clv(d: Decider, tables: SegmentTables, numbers: list[float]) -> tuple[float, float]:
    """The customer's churn risk and CLV (the segment means when missing)."""
    if d.objective != obj.RETENTION:
        return 0.0, 0.0
    churn = clv = math.nan
    names = d.schema.names
    if "churn_risk" in names:
        churn = numbers[names.index("churn_risk")]
    if "clv" in names:
        clv = numbers[names.index("clv")]
    return (tables.mean_churn if math.isnan(churn) else churn,
            tables.mean_clv if math.isnan(clv) else clv)


def _top(value: npt.NDArray[np.floating[Any]], mask: npt.NDArray[np.bool_],
         count: int) -> npt.NDArray[np.intp]:
    """The best ``count`` eligible positions; ties keep catalogue order (stable sort)."""
    if count <= 0:
        return np.empty(0, dtype=np.intp)
    masked = np.where(mask, value, NO_SCORE)
    return np.argsort(-masked, kind="stable")[:count]
