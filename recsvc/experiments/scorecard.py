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
from recsvc.experiments.arms import CHALLENGER, CONTROL, TREATMENT

DAY = 86_400.0
# Event kinds the scorecard reads, by code (any other kind: -1).
KINDS = ("accept", "redeem", "decline", "churn", "renew", "nps")
ACCEPT, REDEEM, DECLINE, CHURN, RENEW, NPS = range(len(KINDS))

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass
class Decisions:
    """The decision log as coded columns: one row per decision, and its shown offers flattened
    (``lengths[i]`` offers of row i, in order). Strings are codes into the ``*_names`` lists, so
    10 million decisions are a few numpy arrays (``recsvc/experiments/parquet_log.py`` builds
    them from Parquet without a Python loop; ``from_columns`` from lists)."""

    ts: F64
    customer: I64  # code in 0 .. customer_count - 1
    customer_count: int
    segment: I64
    segment_names: list[str]
    version: I64
    version_names: list[str]
    arm: I64
    arm_names: list[str]
    lengths: I64
    offer: I64  # per shown offer: code into offer_names
    offer_names: list[str]
    propensity: F64  # per shown offer; 1 where none was logged (a deterministic policy)
    value: F64  # per shown offer; 0 where none was logged
    cost: F64
    candidate_version: I64  # per decision: code into candidate_names, -1 without a candidate
    candidate_names: list[str]
    candidate_row: I64  # a shadow challenger's offers: (decision row, offer code) pairs
    candidate_offer: I64  # -1: an offer never shown, so it never matches a shown one
    decision_id: Sequence[str] = ()  # for attributing list-form Events by id
    customer_names: Sequence[str] = ()  # (the Parquet path keeps an Arrow array of them)

    @property
    def n(self) -> int:
        return len(self.ts)

    @classmethod
    def from_columns(cls, columns: Mapping[str, Sequence[Any]]) -> Decisions:
        """From column lists (``decision_log.as_columns``: one row per decision)."""
        n = len(columns["decision_id"])
        offers = [list(o) for o in columns["offers"]]
        lengths = np.fromiter((len(o) for o in offers), dtype=np.int64, count=n)
        offer, offer_names = _codes(o for row in offers for o in row)
        empty: list[list[Any]] = [[] for _ in range(n)]
        propensity = _flat(columns.get("propensities", empty), lengths, 1.0)
        customer, customers = _codes(columns["customer_id"])
        segment, segments = _codes(columns["segment"])
        version, versions = _codes(columns["version"])
        arm, arms = _codes(columns["arm"])
        candidates = [list(c) for c in columns.get("candidate", empty)]
        wanted = [v if v and c else "" for v, c in zip(
            columns.get("candidate_version", [""] * n), candidates, strict=True)]
        candidate_names = sorted(set(wanted) - {""})
        code_of = {v: i for i, v in enumerate(candidate_names)}
        index_of = {o: i for i, o in enumerate(offer_names)}
        pairs = [(i, index_of.get(o, -1)) for i, v in enumerate(wanted) if v
                 for o in candidates[i]]
        return cls(np.asarray(columns["ts"], dtype=np.float64), customer, len(customers),
                   segment, segments, version, versions, arm, arms, lengths, offer, offer_names,
                   propensity, _flat(columns.get("values", empty), lengths, 0.0),
                   _flat(columns.get("costs", empty), lengths, 0.0),
                   np.asarray([code_of.get(v, -1) for v in wanted], dtype=np.int64),
                   candidate_names, np.asarray([p[0] for p in pairs], dtype=np.int64),
                   np.asarray([p[1] for p in pairs], dtype=np.int64),
                   list(columns["decision_id"]), customers)


@dataclass
class Outcomes:
    """Feedback events as coded columns, already placed against the decisions."""

    decision_row: I64  # the decision the event names, -1 when unknown
    offer: I64  # code into the decisions' offer_names, -1 when never shown
    kind: I64  # code into KINDS, -1 for other kinds
    ts: F64
    customer: I64  # code into the decisions' customers, -1 when never decided for
    value: F64  # NaN when the event carried none


@dataclass
class Events:
    """Column lists, one row per recorded feedback event (the Redis path; small)."""

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

    def coded(self, decisions: Decisions) -> Outcomes:
        def lookup(values: list[str], names: Sequence[str]) -> I64:
            index = {name: i for i, name in enumerate(names)}
            return np.fromiter((index.get(v, -1) for v in values), dtype=np.int64,
                               count=len(values))

        return Outcomes(lookup(self.decision_id, decisions.decision_id),
                        lookup(self.offer_id, decisions.offer_names), lookup(self.event, KINDS),
                        self.ts, lookup(self.customer_id, decisions.customer_names), self.value)


def _codes(values: Iterable[str]) -> tuple[npt.NDArray[np.int64], list[str]]:
    index: dict[str, int] = {}
    codes = [index.setdefault(v, len(index)) for v in values]
    return np.asarray(codes, dtype=np.int64), list(index)


def _flat(lists: Sequence[Sequence[float]], lengths: I64, missing: float) -> F64:
    """Per-offer numbers flattened; a decision logged without them gets ``missing``."""
    out = np.full(int(lengths.sum()), missing, dtype=np.float64)
    at = 0
    for values, n in zip(lists, lengths.tolist(), strict=True):
        if len(values) == n:
            out[at:at + n] = values
        at += n
    return out


@dataclass
class Joined:
    """Decisions exploded to shown offers, with their attributed outcomes, and per customer."""

    shown_decision: I64
    shown_customer: I64  # per shown offer: the customer (code) it was shown to
    accepted: npt.NDArray[np.bool_]
    redeemed: npt.NDArray[np.bool_]
    declined: npt.NDArray[np.bool_]
    net_value: F64  # per shown offer: value - cost if accepted, else 0
    customer_arm: I64  # per customer: the arm (code) of their first decision
    customer_segment: I64
    retained: F64  # per customer: 1, 0, or NaN without an outcome
    nps_customer: I64  # NPS answers: whose, and the score
    nps_value: F64


def _hit(d: Decisions, starts: I64, rows: I64, offers: I64) -> npt.NDArray[np.bool_]:
    """Shown offers named by (decision row, offer code) pairs: each pair looks at its row's few
    offers, one vectorised pass per position (answers hold at most ``limit`` offers)."""
    out = np.zeros(len(d.offer), dtype=bool)
    start, length = starts[rows], d.lengths[rows]
    for j in range(int(length.max()) if len(length) else 0):
        ok = j < length
        pos = start[ok] + j
        out[pos[d.offer[pos] == offers[ok]]] = True
    return out


def join(d: Decisions, e: Outcomes, window_days: float = 30.0) -> Joined:
    window = window_days * DAY
    starts = np.cumsum(d.lengths) - d.lengths
    shown_decision = np.repeat(np.arange(d.n, dtype=np.int64), d.lengths)
    known = e.decision_row >= 0
    delay = np.where(known, e.ts - d.ts[np.maximum(e.decision_row, 0)], -1.0)
    attributed = known & (delay >= 0) & (delay <= window) & (e.offer >= 0)

    def hit(kind: int) -> npt.NDArray[np.bool_]:
        mask = attributed & (e.kind == kind)
        return _hit(d, starts, e.decision_row[mask], e.offer[mask])

    accepted, redeemed, declined = hit(ACCEPT), hit(REDEEM), hit(DECLINE)
    accepted |= redeemed  # a redemption implies the acceptance

    customers = d.customer_count
    first = np.full(customers, np.inf)
    last = np.full(customers, -np.inf)
    np.minimum.at(first, d.customer, d.ts)
    np.maximum.at(last, d.customer, d.ts)
    # A customer's first decision: the earliest, the first logged among equal times.
    earliest = d.ts == first[d.customer]
    first_row = np.full(customers, d.n, dtype=np.int64)
    np.minimum.at(first_row, d.customer[earliest], np.flatnonzero(earliest))

    c = np.maximum(e.customer, 0)
    in_window = (e.customer >= 0) & (first[c] <= e.ts) & (e.ts <= last[c] + window)
    answered = in_window & (e.kind == NPS) & ~np.isnan(e.value)
    said = in_window & ((e.kind == CHURN) | (e.kind == RENEW))
    retained = np.full(customers, np.nan)
    who, when, kind = e.customer[said], e.ts[said], e.kind[said]
    order = np.lexsort((when, who))  # stable: among equal times, the later event wins
    last_said = order[np.r_[who[order][1:] != who[order][:-1], True]] if len(order) else order
    retained[who[last_said]] = (kind[last_said] == RENEW).astype(np.float64)
    return Joined(shown_decision, d.customer[shown_decision], accepted, redeemed, declined,
                  np.where(accepted, d.value - d.cost, 0.0), d.arm[first_row],
                  d.segment[first_row], retained, e.customer[answered], e.value[answered])


def _group_metrics(d: Decisions, joined: Joined, customers: npt.NDArray[np.bool_],
                   shown: npt.NDArray[np.bool_]) -> dict[str, Any]:
    """The scorecard of one group: customers selected by ``customers``, offers by ``shown``."""
    n_shown = int(shown.sum())
    owner = joined.shown_customer
    per_customer_value = np.bincount(owner[shown], weights=joined.net_value[shown],
                                     minlength=d.customer_count)[customers]
    accepted_any = np.bincount(owner[shown & joined.accepted],
                               minlength=d.customer_count)[customers] > 0
    outcomes = joined.retained[customers]
    known = outcomes[~np.isnan(outcomes)]
    answers = joined.nps_value[customers[joined.nps_customer]]
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


def scorecard(decisions: Decisions, events: Events | Outcomes, window_days: float = 30.0,
              clip: float = 100.0) -> dict[str, Any]:
    """Every number of the report, as plain JSON-ready values."""
    d = decisions
    outcomes = events.coded(d) if isinstance(events, Events) else events
    joined = join(d, outcomes, window_days)
    shown_arm = d.arm[joined.shown_decision]
    shown_segment = d.segment[joined.shown_decision]
    everyone = np.ones(d.customer_count, dtype=bool)
    result: dict[str, Any] = {
        "attribution": {"window_days": window_days, "method": __doc__.split("Attribution")[1]
                        .split("\n\n")[0].strip() if __doc__ else ""},
        "decisions": d.n, "customers": d.customer_count,
        "overall": _public(_group_metrics(d, joined, everyone, np.ones_like(joined.accepted))),
        "arms": {}, "uplift": {}, "segments": {}, "offers": {}, "versions": {},
        "challenger_vs_champion": {},
    }
    by_arm: dict[str, dict[str, Any]] = {}
    arm_codes = {name: code for code, name in enumerate(d.arm_names)}
    for arm in sorted({d.arm_names[c] for c in np.unique(joined.customer_arm).tolist()}):
        code = arm_codes[arm]
        by_arm[arm] = _group_metrics(d, joined, joined.customer_arm == code, shown_arm == code)
        result["arms"][arm] = _public(by_arm[arm])
    if CONTROL in by_arm:
        for arm, metrics in by_arm.items():
            if arm != CONTROL:
                result["uplift"][arm] = _uplift(metrics, by_arm[CONTROL])
    if CHALLENGER in by_arm and TREATMENT in by_arm:
        # Champion / challenger (split mode): the challenger's customers against the champion's
        # (treatment), with the same estimators and 95% intervals as uplift over control.
        result["challenger_vs_champion"] = _uplift(by_arm[CHALLENGER], by_arm[TREATMENT])
    for segment in sorted({d.segment_names[c] for c in np.unique(joined.customer_segment)
                           .tolist()}):
        seg = d.segment_names.index(segment)
        in_segment = joined.customer_segment == seg
        entry: dict[str, Any] = {}
        arms_here: dict[str, dict[str, Any]] = {}
        for arm in sorted({d.arm_names[c] for c in np.unique(joined.customer_arm[in_segment])
                           .tolist()}):
            code = arm_codes[arm]
            arms_here[arm] = _group_metrics(d, joined, in_segment & (joined.customer_arm == code),
                                            (shown_segment == seg) & (shown_arm == code))
            entry[arm] = _public(arms_here[arm])
        if CONTROL in arms_here and TREATMENT in arms_here:
            entry["uplift"] = _uplift(arms_here[TREATMENT], arms_here[CONTROL])
        result["segments"][segment] = entry
    width = len(d.offer_names)
    shown_n = np.bincount(d.offer, minlength=width).tolist()
    accepted_n = np.bincount(d.offer[joined.accepted], minlength=width).tolist()
    redeemed_n = np.bincount(d.offer[joined.redeemed], minlength=width).tolist()
    net = np.bincount(d.offer, weights=joined.net_value, minlength=width).tolist()
    for code, name in enumerate(d.offer_names):
        result["offers"][name] = {
            "offers_shown": shown_n[code],
            "acceptance_rate": stats.rate(accepted_n[code], shown_n[code]).as_dict(),
            "redemption_rate": stats.rate(redeemed_n[code], shown_n[code]).as_dict(),
            "net_value_total": float(net[code]),
        }
    versions = len(d.version_names)
    decided_n = np.bincount(d.version, minlength=versions).tolist()
    shown_version = d.version[joined.shown_decision]
    shown_v = np.bincount(shown_version, minlength=versions).tolist()
    accepted_v = np.bincount(shown_version[joined.accepted], minlength=versions).tolist()
    for code, version in sorted(enumerate(d.version_names), key=lambda cv: cv[1]):
        if decided_n[code]:
            result["versions"][version] = {
                "decisions": decided_n[code], "offers_shown": shown_v[code],
                "acceptance_rate": stats.rate(accepted_v[code], shown_v[code]).as_dict(),
            }
    result["off_policy"] = off_policy(d, joined, clip)
    return result


def off_policy(d: Decisions, joined: Joined, clip: float) -> dict[str, Any]:
    """IPS and SNIPS of each shadow candidate: accepted offers per shown slot, had the candidate
    decided. A candidate showing an offer the logging policy showed with probability p weighs
    1/p (clipped); the estimate is unbiased only where the logging policy explored (p < 1)."""
    result: dict[str, Any] = {}
    width = max(len(d.offer_names), 1)
    for code, version in enumerate(d.candidate_names):
        rows = d.candidate_version == code
        mine = rows[joined.shown_decision]
        pairs = np.isin(d.candidate_row, np.flatnonzero(rows)) & (d.candidate_offer >= 0)
        wanted = d.candidate_row[pairs] * width + d.candidate_offer[pairs]
        target = np.isin(joined.shown_decision[mine] * width + d.offer[mine],
                         wanted).astype(np.float64)
        rewards = joined.accepted[mine].astype(np.float64)
        logging = d.propensity[mine]
        result[version] = {
            "decisions": int(rows.sum()),
            "logging_policy_acceptance": stats.mean(rewards).as_dict(),
            "ips": stats.ips(rewards, target, logging, clip).as_dict(),
            "snips": stats.snips(rewards, target, logging, clip).as_dict(),
        }
    return result
