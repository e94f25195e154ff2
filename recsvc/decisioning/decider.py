"""The decider: everything a decision needs that changes only with the version or live state.

Built on the model watcher's thread whenever the active version, ``{p}:offers:rev``, the
budgets' ``~rev`` or the do-not-contact list move (and when the UTC day turns, for daily
budgets); requests take one reference, so a decision never mixes two states. Per segment it
holds the arrays a request needs, gathered in the segment's offer order: value, cost, levers,
the compiled customer rules, exempt offers, the p_accept of a popularity ranking.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from recsvc.core.model import STRATEGY_POPULAR, Catalogue, ModelVersion, SegmentModel
from recsvc.decisioning.budgets import BudgetState
from recsvc.decisioning.live import derived_model, merged_offers, open_to
from recsvc.decisioning.objective import (
    DEFAULT_BASE_RATE,
    OBJECTIVES,
    Calibration,
    logit,
    prior_p_accept,
)
from recsvc.decisioning.policy import Policy
from recsvc.decisioning.rules import AttributeSchema, Predicate, RuleError, compile_rule

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
BOOL = npt.NDArray[np.bool_]
HIGH_VALUE_QUANTILE = 0.75  # an offer worth more than 3/4 of the catalogue is "high_value"
# What ranked an offer, the first reason code of every answered offer.
PERSONAL_REASON, POPULAR_REASON, GLOBAL_REASON = (
    "personal_affinity", "popular_in_segment", "popular_overall")
REASON_KINDS = (PERSONAL_REASON, POPULAR_REASON, GLOBAL_REASON)


@dataclass(frozen=True)
class SegmentTables:
    """One segment's decision arrays, aligned with ``model.offers`` (local positions)."""

    model: SegmentModel
    value: F64
    cost: F64
    levers: F64 | None  # offer lever x segment lever; None when every lever is 1
    rules: tuple[Predicate, ...]  # distinct compiled rules
    rule_of: npt.NDArray[np.intp]  # 0 = no rule, k = rules[k - 1]
    broken: BOOL  # the offer's rule does not compile: never served (rule customer_rule)
    blocked: BOOL | None  # out of budget in this segment only
    exempt: BOOL  # of a type exempt from contact caps and do-not-contact
    is_new: BOOL
    on_serve: BOOL  # has an on-serve budget: reserved before the answer
    base_rate: float
    prior: float  # p_accept of a new offer
    calibration: Calibration | None
    popular_p: F64  # p_accept when ranked by popularity
    mean_clv: float
    mean_churn: float
    reasons: list[tuple[str, ...]]  # static reason codes per offer
    # Reason codes per offer with the ranking's own code first (personal, popular, global).
    reasons_by_kind: dict[str, list[tuple[str, ...]]] = field(default_factory=dict)
    logit_base: float = 0.0
    # Precomputed flags: the hot path tests them on every call.
    any_new: bool = False
    has_rules: bool = False
    any_on_serve: bool = False


@dataclass(frozen=True)
class Decider:
    base: ModelVersion  # as published: what customer records refer to
    model: ModelVersion  # with live changes applied: what answers are ranked with
    segments: list[SegmentTables]
    global_: SegmentTables
    schema: AttributeSchema
    policy: Policy
    objective: str
    offers: list[dict[str, Any]]  # merged catalogue (overrides applied, new offers appended)
    explain_catalogue: Catalogue  # true validity and channels, for explanations
    paused: frozenset[int] = frozenset()
    budgets: BudgetState = field(default_factory=BudgetState)
    dnc: frozenset[str] = frozenset()
    revisions: tuple[int, int, int] = (0, 0, 0)  # offers, budgets, dnc
    problems: tuple[str, ...] = ()
    value: F64 = field(default_factory=lambda: np.zeros(0))  # per catalogue index
    cost: F64 = field(default_factory=lambda: np.zeros(0))

    @property
    def version(self) -> str:
        return self.base.version

    def tables_named(self, name: str) -> SegmentTables | None:
        index = self.model.segment_index.get(name)
        return None if index is None else self.segments[index]


def build_decider(model: ModelVersion, overrides: Mapping[str, Mapping[str, Any]] | None = None,
                  budgets: BudgetState | None = None, dnc: frozenset[str] = frozenset(),
                  objective: str = "", revisions: tuple[int, int, int] = (0, 0, 0)) -> Decider:
    """Pure: the version plus live state -> the decider. Never raises for bad live data (it is
    validated when written); a rule that does not compile removes its offer and is reported."""
    budgets = budgets or BudgetState()
    problems: list[str] = []
    meta = model.meta.as_dict()  # validated by the typed metadata; its plain view here
    try:
        policy = Policy.from_dict(meta.get("decisioning"))
    except ValueError as exc:
        problems.append(f"version {model.version}: decisioning settings ignored: {exc}")
        policy = Policy()
    kind = objective or policy.objective
    if kind not in OBJECTIVES:
        problems.append(f"objective {kind!r} unknown, using {policy.objective!r}")
        kind = policy.objective
    schema = AttributeSchema.from_meta(meta.get("attributes") or [],
                                       meta.get("attribute_values") or {})
    base_offers = model.offers or [{"offer_id": o} for o in model.catalogue.offer_ids]
    offers, is_new = merged_offers(base_offers, overrides or {})
    index_of = {str(o["offer_id"]): i for i, o in enumerate(offers)}
    paused = {i for i, o in enumerate(offers) if o.get("paused")}
    out_everywhere = {index_of[o] for o in budgets.exhausted if o in index_of}
    derived = derived_model(model, offers, is_new, paused | out_everywhere)
    compiled = _compile_rules(offers, schema, problems)
    value = np.array([float(o.get("value") or 0.0) for o in offers])
    cost = np.array([float(o.get("cost") or 0.0) for o in offers])
    lever = np.array([float(o.get("lever") or 1.0) for o in offers])
    exempt = np.array([str(o.get("type") or "") in policy.contacts.exempt_types
                       for o in offers], dtype=bool)
    on_serve = np.array([str(o["offer_id"]) in budgets.on_serve() for o in offers], dtype=bool)
    positive = value[value > 0]
    high_value = float(np.quantile(positive, HIGH_VALUE_QUANTILE)) if len(positive) else np.inf
    statics = [_static_reasons(o, new, float(v) >= high_value and v > 0, float(lv))
               for o, new, v, lv in zip(offers, is_new, value, lever, strict=True)]
    arrays = _Arrays(value, cost, lever, exempt, np.array(is_new, dtype=bool), on_serve,
                     compiled, statics)
    seg_meta: list[dict[str, Any]] = meta.get("segments") or []
    segments = []
    for i, segment in enumerate(derived.segments):
        info = seg_meta[i] if i < len(seg_meta) else {}
        try:
            calibration = Calibration.from_meta(info.get("calibration"), segment.name)
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"segment {segment.name!r}: calibration ignored: {exc}")
            calibration = None
        blocked_ids = budgets.exhausted_in.get(segment.name, frozenset())
        segments.append(_tables(segment, arrays, policy, info, calibration,
                                {index_of[o] for o in blocked_ids if o in index_of}))
    try:
        global_calibration = Calibration.from_meta(meta.get("global_calibration"), "(global)")
    except (ValueError, KeyError, TypeError) as exc:
        problems.append(f"global popularity: calibration ignored: {exc}")
        global_calibration = None
    global_tables = _tables(derived.global_popular, arrays, policy,
                            {"base_accept_rate": _mean_base_rate(seg_meta)}, global_calibration,
                            set(), popularity_calibrated=True)
    for problem in problems:
        log.error("%s", problem)
    return Decider(model, derived, segments, global_tables, schema, policy, kind, offers,
                   Catalogue.from_json(offers), frozenset(paused), budgets, dnc, revisions,
                   tuple(problems), value, cost)


@dataclass(frozen=True)
class _Arrays:
    value: F64
    cost: F64
    lever: F64
    exempt: BOOL
    is_new: BOOL
    on_serve: BOOL
    rules: list[str | Predicate | None]  # per offer: None, a predicate, or the compile error
    reasons: list[tuple[str, ...]]


def _compile_rules(offers: Sequence[Mapping[str, Any]], schema: AttributeSchema,
                   problems: list[str]) -> list[str | Predicate | None]:
    cache: dict[str, Predicate | str] = {}
    result: list[str | Predicate | None] = []
    for offer in offers:
        text = str(offer.get("rule") or "").strip()
        if not text:
            result.append(None)
            continue
        if text not in cache:
            try:
                cache[text] = compile_rule(text, schema)
            except RuleError as exc:
                cache[text] = f"rule {text!r} does not compile: {exc}"
                problems.append(f"offer {offer['offer_id']!r}: {cache[text]} (never served)")
        result.append(cache[text])
    return result


def _static_reasons(offer: Mapping[str, Any], new: bool, high_value: bool,
                    lever: float) -> tuple[str, ...]:
    codes = []
    if new:
        codes.append("new_offer_prior")
    if high_value:
        codes.append("high_value")
    if lever > 1:
        codes.append("business_priority")
    if offer.get("rule"):
        codes.append("customer_rule_matched")
    return tuple(codes)


def _mean_base_rate(seg_meta: Sequence[Mapping[str, Any]]) -> float | None:
    rates = [float(s["base_accept_rate"]) for s in seg_meta if s.get("base_accept_rate")]
    return sum(rates) / len(rates) if rates else None


def _tables(segment: SegmentModel, arrays: _Arrays, policy: Policy, info: Mapping[str, Any],
            calibration: Calibration | None, blocked: set[int],
            popularity_calibrated: bool = False) -> SegmentTables:
    idx = segment.offers.astype(np.intp)
    distinct: dict[int, int] = {}  # id(predicate) -> position + 1
    rules: list[Predicate] = []
    rule_of = np.zeros(len(idx), dtype=np.intp)
    broken = np.zeros(len(idx), dtype=bool)
    for local, i in enumerate(idx.tolist()):
        rule = arrays.rules[i]
        if isinstance(rule, str):
            broken[local] = True
        elif rule is not None:
            if id(rule) not in distinct:
                rules.append(rule)
                distinct[id(rule)] = len(rules)
            rule_of[local] = distinct[id(rule)]
    segment_lever = float(policy.segment_levers.get(segment.name, 1.0))
    levers = arrays.lever[idx] * segment_lever
    base_rate = float(info.get("base_accept_rate") or DEFAULT_BASE_RATE)
    prior = policy.new_offer_prior or base_rate
    is_new = arrays.is_new[idx]
    # A segment's calibration maps the score it serves; popularity has its own map when the
    # training published one (issue 13), else the segment's map only when the segment is served
    # by popularity (a personal segment's map reads personal scores: another scale).
    popular_map = calibration if (popularity_calibrated
                                  or segment.strategy == STRATEGY_POPULAR) else None
    with contextlib.suppress(ValueError, KeyError, TypeError):
        popular_map = Calibration.from_meta(info.get("popularity_calibration")) or popular_map
    popular_p = (popular_map.apply(segment.popularity) if popular_map is not None
                 else prior_p_accept(segment.popularity[~is_new], base_rate))
    if popular_map is None:
        full = np.full(len(idx), prior)
        full[~is_new] = popular_p
        popular_p = full
    else:
        popular_p = np.where(is_new, prior, popular_p)
    blocked_local = None
    if blocked:
        blocked_local = np.isin(idx, np.fromiter(blocked, dtype=np.intp))
    return SegmentTables(
        model=segment, value=arrays.value[idx], cost=arrays.cost[idx],
        levers=None if np.all(levers == 1.0) else levers, rules=tuple(rules), rule_of=rule_of,
        broken=broken, blocked=blocked_local, exempt=arrays.exempt[idx], is_new=is_new,
        on_serve=arrays.on_serve[idx], base_rate=base_rate, prior=prior,
        calibration=calibration, popular_p=popular_p,
        mean_clv=float(info.get("mean_clv") or 0.0),
        mean_churn=float(info.get("mean_churn_risk") or 0.0),
        reasons=[arrays.reasons[i] for i in idx.tolist()],
        reasons_by_kind={kind: [(kind, *arrays.reasons[i]) for i in idx.tolist()]
                         for kind in REASON_KINDS},
        logit_base=logit(base_rate),
        any_new=bool(is_new.any()), has_rules=bool(rules) or bool(broken.any()),
        any_on_serve=bool(arrays.on_serve[idx].any()),
    )


def segment_open(offer: Mapping[str, Any], segment_name: str) -> bool:
    return open_to(offer, segment_name)
