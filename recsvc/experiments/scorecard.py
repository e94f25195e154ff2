"""The retention scorecard: decisions joined with what customers did, per arm, segment, offer and
model version, with the uplift of treatment over control and off-policy estimates. Pure numpy.

Attribution (stated in every report):
- an offer event (accept, redeem, decline, click) counts for the decision whose ``decision_id``
  it carries, when it happened within ``window_days`` after that decision;
- a customer belongs to the arm of their first decision in the data; outcome events (``churn``,
  ``renew``, ``nps``) count for the customer when they happened after their first decision and
  within the window after their last one; a customer is *retained* when their last outcome is
  ``renew`` (customers without an outcome are left out of the retention rate);
- value net of cost, per customer: the catalogue value minus the cost of every offer they
  accepted, as logged with the decision (0 for a customer who accepted nothing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from recsvc.experiments import stats
from recsvc.experiments.arms import CONTROL, TREATMENT

DAY = 86_400.0


@dataclass
class Decisions:
    """Column arrays, one row per decision; the ``offers`` lists and their per-offer numbers."""

    decision_id: list[str]
    ts: npt.NDArray[np.float64]
    customer_id: list[str]
    segment: list[str]
    version: list[str]
    arm: list[str]
    offers: list[list[str]]
    propensities: list[list[float]]
    values: list[list[float]]
    costs: list[list[float]]
    candidate: list[list[str]]  # a shadow challenger's offers, for off-policy evaluation
    candidate_version: list[str]

    @classmethod
    def from_columns(cls, columns: Mapping[str, Sequence[Any]]) -> Decisions:
        n = len(columns["decision_id"])
        empty: list[list[Any]] = [[] for _ in range(n)]
        return cls(list(columns["decision_id"]), np.asarray(columns["ts"], dtype=np.float64),
                   list(columns["customer_id"]), list(columns["segment"]),
                   list(columns["version"]), list(columns["arm"]),
                   [list(o) for o in columns["offers"]],
                   [list(p) for p in columns.get("propensities", empty)],
                   [list(v) for v in columns.get("values", empty)],
                   [list(c) for c in columns.get("costs", empty)],
                   [list(c) for c in columns.get("candidate", empty)],
                   list(columns.get("candidate_version", [""] * n)))


@dataclass
class Events:
    """Column arrays, one row per recorded feedback event."""

    customer_id: list[str]
    offer_id: list[str]
    event: list[str]
    ts: npt.NDArray[np.float64]
    decision_id: list[str]
    value: npt.NDArray[np.float64]  # NaN when the event carried none

    @classmethod
    def from_columns(cls, columns: Mapping[str, Sequence[Any]]) -> Events:
        values = [np.nan if v is None else v for v in columns.get("value",
                                                                    [None] * len(columns["ts"]))]
        return cls(list(columns["customer_id"]), list(columns["offer_id"]),
                   list(columns["event"]), np.asarray(columns["ts"], dtype=np.float64),
                   list(columns["decision_id"]), np.asarray(values, dtype=np.float64))


def _codes(values: Iterable[str]) -> tuple[npt.NDArray[np.int64], list[str]]:
    index: dict[str, int] = {}
    codes = [index.setdefault(v, len(index)) for v in values]
    return np.asarray(codes, dtype=np.int64), list(index)


def _flat(lists: list[list[float]], lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Per-offer numbers flattened; a decision logged without them counts as 0 (or 1: caller)."""
    out = np.zeros(int(lengths.sum()), dtype=np.float64)
    at = 0
    for values, n in zip(lists, lengths.tolist(), strict=True):
        if len(values) == n:
            out[at:at + n] = values
        at += n
    return out


@dataclass
class Joined:
    """Decisions exploded to shown offers, with their attributed outcomes, and per customer."""

    shown_decision: npt.NDArray[np.int64]
    shown_offer: npt.NDArray[np.int64]
    offer_names: list[str]
    accepted: npt.NDArray[np.bool_]
    redeemed: npt.NDArray[np.bool_]
    declined: npt.NDArray[np.bool_]
    net_value: npt.NDArray[np.float64]  # per shown offer: value - cost if accepted, else 0
    propensity: npt.NDArray[np.float64]
    customer_of_decision: npt.NDArray[np.int64]
    customers: list[str]
    customer_arm: list[str]
    customer_segment: list[str]
    retained: npt.NDArray[np.float64]  # per customer: 1, 0, or NaN without an outcome
    nps: list[list[float]]  # per customer: their NPS answers


def join(decisions: Decisions, events: Events, window_days: float = 30.0) -> Joined:
    window = window_days * DAY
    n = len(decisions.decision_id)
    row_of = {d: i for i, d in enumerate(decisions.decision_id)}
    lengths = np.fromiter((len(o) for o in decisions.offers), dtype=np.int64, count=n)
    shown_decision = np.repeat(np.arange(n, dtype=np.int64), lengths)
    offer_codes, offer_names = _codes(o for offers in decisions.offers for o in offers)
    width = max(len(offer_names), 1)
    shown_key = shown_decision * width + offer_codes

    event_row = np.fromiter((row_of.get(d, -1) for d in events.decision_id), dtype=np.int64,
                            count=len(events.decision_id))
    known = event_row >= 0
    delay = np.where(known, events.ts - decisions.ts[np.maximum(event_row, 0)], -1.0)
    attributed = known & (delay >= 0) & (delay <= window)
    offer_index = {name: i for i, name in enumerate(offer_names)}
    event_offer = np.fromiter((offer_index.get(o, -1) for o in events.offer_id), dtype=np.int64,
                              count=len(events.offer_id))
    kinds = np.asarray(events.event, dtype=object)

    def hit(kind: str) -> npt.NDArray[np.bool_]:
        mask = attributed & (event_offer >= 0) & (kinds == kind)
        return np.isin(shown_key, event_row[mask] * width + event_offer[mask])

    accepted, redeemed, declined = hit("accept"), hit("redeem"), hit("decline")
    accepted |= redeemed  # a redemption implies the acceptance
    values = _flat(decisions.values, lengths)
    costs = _flat(decisions.costs, lengths)
    propensity = _flat(decisions.propensities, lengths)
    logged_without = np.repeat(np.fromiter((len(p) != k for p, k in zip(
        decisions.propensities, lengths.tolist(), strict=True)), dtype=bool, count=n), lengths)
    propensity[logged_without] = 1.0  # no propensity logged: the policy was deterministic

    customer_codes, customers = _codes(decisions.customer_id)
    first = np.full(len(customers), np.inf)
    last = np.full(len(customers), -np.inf)
    np.minimum.at(first, customer_codes, decisions.ts)
    np.maximum.at(last, customer_codes, decisions.ts)
    order = np.lexsort((decisions.ts, customer_codes))
    first_row = order[np.r_[True, customer_codes[order][1:] != customer_codes[order][:-1]]]
    customer_arm = [decisions.arm[i] for i in first_row.tolist()]
    customer_segment = [decisions.segment[i] for i in first_row.tolist()]
    index = {c: i for i, c in enumerate(customers)}
    retained = np.full(len(customers), np.nan)
    latest = np.full(len(customers), -np.inf)
    nps: list[list[float]] = [[] for _ in customers]
    for customer, kind, ts, value in zip(events.customer_id, events.event, events.ts.tolist(),
                                         events.value.tolist(), strict=True):
        if kind not in ("churn", "renew", "nps"):
            continue
        c = index.get(customer)
        if c is None or not first[c] <= ts <= last[c] + window:
            continue
        if kind == "nps":
            if value == value:  # not NaN
                nps[c].append(value)
        elif ts >= latest[c]:
            latest[c] = ts
            retained[c] = 1.0 if kind == "renew" else 0.0
    return Joined(shown_decision, offer_codes, offer_names, accepted, redeemed, declined,
                  np.where(accepted, values - costs, 0.0), propensity, customer_codes,
                  customers, customer_arm, customer_segment, retained, nps)


def _group_metrics(joined: Joined, customers: npt.NDArray[np.bool_],
                   shown: npt.NDArray[np.bool_]) -> dict[str, Any]:
    """The scorecard of one group: customers selected by ``customers``, offers by ``shown``."""
    n_shown = int(shown.sum())
    per_customer_value = np.bincount(
        joined.customer_of_decision[joined.shown_decision[shown]],
        weights=joined.net_value[shown], minlength=len(joined.customers))[customers]
    accepted_any = np.bincount(
        joined.customer_of_decision[joined.shown_decision[shown & joined.accepted]],
        minlength=len(joined.customers))[customers] > 0
    outcomes = joined.retained[customers]
    known = outcomes[~np.isnan(outcomes)]
    answers = [v for c in np.flatnonzero(customers).tolist() for v in joined.nps[c]]
    return {
        "customers": int(customers.sum()),
        "offers_shown": n_shown,
        "acceptance_rate": stats.rate(int((joined.accepted & shown).sum()), n_shown).as_dict(),
        "redemption_rate": stats.rate(int((joined.redeemed & shown).sum()), n_shown).as_dict(),
        "decline_rate": stats.rate(int((joined.declined & shown).sum()), n_shown).as_dict(),
        "customers_accepting": stats.rate(int(accepted_any.sum()),
                                          int(customers.sum())).as_dict(),
        "retention_rate": stats.rate(int(known.sum()), len(known)).as_dict(),
        "nps": stats.nps(answers).as_dict(),
        "net_value_per_customer": stats.mean(per_customer_value).as_dict(),
        "net_value_total": float(per_customer_value.sum()),
        "_per_customer": (per_customer_value, accepted_any, known, answers),
    }


def _uplift(treated: dict[str, Any], control: dict[str, Any]) -> dict[str, Any]:
    t_value, t_acc, t_ret, t_nps = treated["_per_customer"]
    c_value, c_acc, c_ret, c_nps = control["_per_customer"]
    return {
        "retention_rate": stats.rate_uplift((int(t_ret.sum()), len(t_ret)),
                                            (int(c_ret.sum()), len(c_ret))).as_dict(),
        "retention_relative": stats.rate_relative_lift((int(t_ret.sum()), len(t_ret)),
                                                       (int(c_ret.sum()), len(c_ret))).as_dict(),
        "customers_accepting": stats.rate_uplift((int(t_acc.sum()), len(t_acc)),
                                                 (int(c_acc.sum()), len(c_acc))).as_dict(),
        "net_value_per_customer": stats.mean_uplift(t_value, c_value).as_dict(),
        "nps": stats.nps_uplift(t_nps, c_nps).as_dict(),
    }


def _public(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if not k.startswith("_")}


def scorecard(decisions: Decisions, events: Events, window_days: float = 30.0,
              clip: float = 100.0) -> dict[str, Any]:
    """Every number of the report, as plain JSON-ready values."""
    joined = join(decisions, events, window_days)
    arm_of_customer = np.asarray(joined.customer_arm, dtype=object)
    segment_of_customer = np.asarray(joined.customer_segment, dtype=object)
    decision_arm = np.asarray(decisions.arm, dtype=object)
    shown_arm = decision_arm[joined.shown_decision]
    everyone = np.ones(len(joined.customers), dtype=bool)
    result: dict[str, Any] = {
        "attribution": {"window_days": window_days, "method": __doc__.split("Attribution")[1]
                        .split("\n\n")[0].strip() if __doc__ else ""},
        "decisions": len(decisions.decision_id), "customers": len(joined.customers),
        "overall": _public(_group_metrics(joined, everyone, np.ones_like(joined.accepted))),
        "arms": {}, "uplift": {}, "segments": {}, "offers": {}, "versions": {},
    }
    by_arm: dict[str, dict[str, Any]] = {}
    for arm in sorted(set(joined.customer_arm)):
        by_arm[arm] = _group_metrics(joined, arm_of_customer == arm, shown_arm == arm)
        result["arms"][arm] = _public(by_arm[arm])
    if CONTROL in by_arm:
        for arm, metrics in by_arm.items():
            if arm != CONTROL:
                result["uplift"][arm] = _uplift(metrics, by_arm[CONTROL])
    for segment in sorted(set(joined.customer_segment)):
        in_segment = segment_of_customer == segment
        shown_segment = np.asarray(decisions.segment, dtype=object)[joined.shown_decision]
        entry: dict[str, Any] = {}
        arms_here: dict[str, dict[str, Any]] = {}
        for arm in sorted(set(arm_of_customer[in_segment])):
            arms_here[arm] = _group_metrics(joined, in_segment & (arm_of_customer == arm),
                                            (shown_segment == segment) & (shown_arm == arm))
            entry[arm] = _public(arms_here[arm])
        if CONTROL in arms_here and TREATMENT in arms_here:
            entry["uplift"] = _uplift(arms_here[TREATMENT], arms_here[CONTROL])
        result["segments"][segment] = entry
    for code, name in enumerate(joined.offer_names):
        mine = joined.shown_offer == code
        n = int(mine.sum())
        result["offers"][name] = {
            "offers_shown": n,
            "acceptance_rate": stats.rate(int((joined.accepted & mine).sum()), n).as_dict(),
            "redemption_rate": stats.rate(int((joined.redeemed & mine).sum()), n).as_dict(),
            "net_value_total": float(joined.net_value[mine].sum()),
        }
    shown_version = np.asarray(decisions.version, dtype=object)[joined.shown_decision]
    for version in sorted(set(decisions.version)):
        mine = shown_version == version
        result["versions"][version] = {
            "decisions": int(sum(v == version for v in decisions.version)),
            "offers_shown": int(mine.sum()),
            "acceptance_rate": stats.rate(int((joined.accepted & mine).sum()),
                                          int(mine.sum())).as_dict(),
        }
    result["off_policy"] = off_policy(decisions, joined, clip)
    return result


def off_policy(decisions: Decisions, joined: Joined, clip: float) -> dict[str, Any]:
    """IPS and SNIPS of each shadow candidate: accepted offers per shown slot, had the candidate
    decided. A candidate showing an offer the logging policy showed with probability p weighs
    1/p (clipped); the estimate is unbiased only where the logging policy explored (p < 1)."""
    versions = sorted({v for v, c in zip(decisions.candidate_version, decisions.candidate,
                                         strict=True) if v and c})
    result: dict[str, Any] = {}
    for version in versions:
        rows = [i for i, v in enumerate(decisions.candidate_version) if v == version]
        wanted = {(i, o) for i in rows for o in decisions.candidate[i]}
        mine = np.isin(joined.shown_decision, rows)
        target = np.fromiter(((int(d), joined.offer_names[int(o)]) in wanted for d, o in zip(
            joined.shown_decision[mine], joined.shown_offer[mine], strict=True)),
            dtype=np.float64, count=int(mine.sum()))
        rewards = joined.accepted[mine].astype(np.float64)
        logging = joined.propensity[mine]
        result[version] = {
            "decisions": len(rows),
            "logging_policy_acceptance": stats.mean(rewards).as_dict(),
            "ips": stats.ips(rewards, target, logging, clip).as_dict(),
            "snips": stats.snips(rewards, target, logging, clip).as_dict(),
        }
    return result

