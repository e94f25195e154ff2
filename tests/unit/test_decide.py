"""One decision, pure: rules, objective, live policy, budgets, overrides and explanations."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np
import pytest

from recsvc.core import schema
from recsvc.core.meta import ModelMeta
from recsvc.core.model import ModelVersion
from recsvc.decisioning.budgets import BudgetSpec, budget_state
from recsvc.decisioning.decide import Ask, decide, finish
from recsvc.decisioning.decider import build_decider
from recsvc.decisioning.objective import Calibration, prior_p_accept
from recsvc.decisioning.policy import NOTHING_LIVE, read_live

NOW = time.time()
DAY = 86_400.0
# Personal scores of the test customer (vector [1, 0]) for o0..o4: o4 best, then o3, ...
SCORES = np.array([0.1, 0.5, 0.3, 0.7, 0.9], dtype=np.float32)


def offers() -> list[dict[str, Any]]:
    base: list[dict[str, Any]] = [
        {"offer_id": f"o{i}", "title": f"Offer {i}", "segments": ["main"], "channels": [],
         "valid_from": None, "valid_to": None, "cost": 0.0, "value": 0.0} for i in range(6)]
    base[1]["rule"] = "plan == 'premium'"
    base[2]["valid_to"] = NOW - DAY  # expired
    base[3]["channels"] = ["sms"]
    base[5]["segments"] = ["other"]
    base[0]["type"] = "transactional"
    for i, (value, cost) in enumerate([(10, 1), (100, 5), (50, 0), (20, 2), (5, 0), (0, 0)]):
        base[i]["value"], base[i]["cost"] = float(value), float(cost)
    return base


def model(decisioning: dict[str, Any] | None = None,
          calibration: dict[str, Any] | None = None) -> ModelVersion:
    seg_meta = {"name": "main", "strategy": "personalized", "factors": 2, "blend_weight": 1.0,
                "base_accept_rate": 0.1, "mean_clv": 100.0, "mean_churn_risk": 0.2}
    if calibration:
        seg_meta["calibration"] = calibration
    meta = {"version": "v1", "trained_at": "2026-11-24T10:15:00Z", "segments": [seg_meta],
            "attributes": [{"name": "churn_risk", "kind": "number"},
                           {"name": "clv", "kind": "number"},
                           {"name": "plan", "kind": "category"}],
            "attribute_values": {"plan": ["basic", "premium"]},
            "decisioning": decisioning or {}}
    factors = np.stack([SCORES, np.zeros(5, dtype=np.float32)], axis=1)
    seg = {b"offers": schema.encode_u32(range(5)),
           b"popularity": schema.encode_f32([5, 4, 3, 2, 1]),
           b"factors": schema.encode_f32(factors.ravel())}
    glob = {b"offers": schema.encode_u32([]), b"popularity": schema.encode_f32([])}
    return ModelVersion.from_blobs("v1", ModelMeta.from_dict(meta),
                                   json.dumps(offers()).encode(), [seg], glob)


def attrs(churn: float = 0.8, clv: float = 1000.0, plan: int = 1) -> np.ndarray[Any, Any]:
    numbers = np.array([churn, clv], dtype=np.float32).view(np.uint32)
    return np.concatenate([numbers, np.array([plan], dtype=np.uint32)])


def ask(**kw: Any) -> Ask:
    return Ask(kw.pop("customer_id", "c1"), kw.pop("limit", 10), kw.pop("now", NOW), **kw)


def ids(decider: Any, decision: Any) -> list[str]:
    return [decider.model.catalogue.offer_ids[i] for i in decision.offers]


def test_relevance_ranks_as_the_model_scores_with_a_prior_p_accept() -> None:
    d = build_decider(model())
    decision = decide(d, d.segments[0], SCORES, None, attrs(), NOTHING_LIVE, ask())
    assert ids(d, decision) == ["o4", "o3", "o1", "o0"]  # o2 expired, o5 other segment
    expected = prior_p_accept(SCORES, 0.1)
    assert decision.p_accept == pytest.approx([expected[4], expected[3], expected[1],
                                               expected[0]])
    assert decision.objective == decision.p_accept
    assert all(r[0] == "personal_affinity" for r in decision.reasons)
    # The prior keeps the base rate at the mean score: logit(p) = logit(0.1) + z
    z = (SCORES - SCORES.mean()) / SCORES.std()
    assert expected == pytest.approx(1 / (1 + np.exp(-(z + math.log(0.1 / 0.9)))), rel=1e-5)


def test_expected_value_ranks_by_p_times_value_minus_cost() -> None:
    d = build_decider(model({"objective": "expected_value"}))
    decision = decide(d, d.segments[0], SCORES, None, attrs(), NOTHING_LIVE, ask())
    p = prior_p_accept(SCORES, 0.1)
    values = np.array([10, 100, 50, 20, 5.0]) * p - np.array([1, 5, 0, 2, 0.0])
    order = [f"o{i}" for i in np.argsort(-values, kind="stable") if i != 2]
    assert ids(d, decision) == order
    assert decision.objective == pytest.approx(sorted(values[[0, 1, 3, 4]], reverse=True))


def test_retention_weights_by_churn_risk_times_clv_and_says_so() -> None:
    d = build_decider(model({"objective": "retention"}))
    decision = decide(d, d.segments[0], SCORES, None, attrs(churn=0.8, clv=1000.0),
                      NOTHING_LIVE, ask())
    p = prior_p_accept(SCORES, 0.1)
    expected = p * 0.8 * 1000.0 - np.array([1, 5, 0, 2, 0.0])
    assert decision.objective[0] == pytest.approx(max(expected[[0, 1, 3, 4]]), rel=1e-5)
    assert all("retention_priority" in r for r in decision.reasons)
    # A customer without churn risk gets the segment's mean (0.2): no retention_priority
    missing = decide(d, d.segments[0], SCORES, None, attrs(churn=math.nan), NOTHING_LIVE,
                     ask())
    assert not any("retention_priority" in r for r in missing.reasons)


def test_a_lever_promotes_an_offer_and_a_segment_lever_scales_the_objective() -> None:
    d = build_decider(model({"segment_levers": {"main": 2.0}}),
                      overrides={"o0": {"lever": 20.0}})
    decision = decide(d, d.segments[0], SCORES, None, attrs(), NOTHING_LIVE, ask())
    assert ids(d, decision)[0] == "o0"
    assert "business_priority" in decision.reasons[0]
    assert decision.objective[1] == pytest.approx(2 * decision.p_accept[1])


def test_a_published_calibration_maps_scores_to_p_accept() -> None:
    d = build_decider(model(calibration={"method": "isotonic", "score": [0.0, 1.0],
                                         "p_accept": [0.0, 0.5]}))
    decision = decide(d, d.segments[0], SCORES, None, attrs(), NOTHING_LIVE, ask())
    assert decision.p_accept == pytest.approx([0.45, 0.35, 0.25, 0.05])
    with pytest.raises(ValueError, match="segment 'main': calibration: score must be strictly"):
        Calibration.from_meta({"method": "x", "score": [1, 0], "p_accept": [0, 1]}, "main")
    # a constant (a segment without usable data): two knots with the same p
    constant = build_decider(model(calibration={"method": "base_rate", "score": [0.0, 1.0],
                                                "p_accept": [0.2, 0.2]}))
    decision = decide(constant, constant.segments[0], SCORES, None, attrs(), NOTHING_LIVE, ask())
    assert ids(constant, decision) == ["o4", "o3", "o1", "o0"]  # still the model's order
    assert decision.p_accept == pytest.approx([0.2] * 4)


def test_a_personal_segments_calibration_is_not_applied_to_its_popularity_fallback() -> None:
    d = build_decider(model(calibration={"method": "isotonic", "score": [0.0, 1.0],
                                         "p_accept": [0.0, 0.5]}))
    popular = decide(d, d.segments[0], None, None, None, NOTHING_LIVE, ask())
    assert popular.p_accept == pytest.approx(
        prior_p_accept(np.array([5, 4, 3, 2, 1.0]), 0.1)[[0, 3, 4]])  # o1: rule, no attributes


def test_a_customer_rule_removes_an_offer_and_explain_says_which_rule() -> None:
    d = build_decider(model())
    decision = decide(d, d.segments[0], SCORES, None, attrs(plan=0), NOTHING_LIVE,
                      ask(explain=True, channel="email", excluded=("o4",)))
    assert ids(d, decision) == ["o0"]
    assert [(o, r) for o, r, _ in decision.removed] == [
        ("o5", "segment"), ("o2", "validity"), ("o3", "channel"), ("o1", "customer_rule"),
        ("o4", "excluded_by_caller")]
    assert "plan == 'premium' is false" in decision.removed[3][2]


def test_live_state_suppresses_declined_drops_accepted_and_caps_contacts() -> None:
    d = build_decider(model({"contacts": {"max_per_window": 2, "window_days": 7},
                             "suppression": {"declines": 2, "ignored": 3, "days": 30}}))
    fields = {b"d:o4": f"2 {NOW - DAY:.0f}".encode(),  # 2 declines yesterday: suppressed
              b"d:o3": f"1 {NOW - DAY:.0f}".encode(),  # one decline: not yet
              b"n:o1": f"3 {NOW - 40 * DAY:.0f}".encode(),  # ignored, but 40 days ago
              b"a:o0": f"{NOW:.0f}".encode()}
    live = read_live(fields, NOW, "", d.policy)
    decision = decide(d, d.segments[0], SCORES, None, attrs(), live, ask(explain=True))
    assert ids(d, decision) == ["o3", "o1"]
    rules = {o: r for o, r, _ in decision.removed}
    assert rules["o4"] == "suppressed" and rules["o0"] == "already_accepted"
    capped = {b"c:email": f"{NOW - 8 * DAY:.0f} {NOW - DAY:.0f} {NOW - 60:.0f}".encode()}
    live = read_live(capped, NOW, "email", d.policy)
    assert live.contacts_in_window == 2
    decision = decide(d, d.segments[0], SCORES, None, attrs(), live,
                      ask(channel="email", explain=True))
    assert ids(d, decision) == ["o0"]  # transactional: exempt from the cap
    assert {r for _, r, _ in decision.removed} >= {"contact_cap"}


def test_do_not_contact_leaves_only_exempt_offers() -> None:
    d = build_decider(model(), dnc=frozenset({"c1"}))
    decision = decide(d, d.segments[0], SCORES, None, attrs(), NOTHING_LIVE, ask())
    assert ids(d, decision) == ["o0"]
    other = decide(d, d.segments[0], SCORES, None, attrs(), NOTHING_LIVE,
                   ask(customer_id="c2"))
    assert len(other.offers) == 4


def test_paused_and_new_offers_apply_without_touching_the_version() -> None:
    base = model()
    d = build_decider(base, overrides={
        "o4": {"paused": True},
        "n1": {"new": True, "title": "New", "segments": ["main"], "value": 1.0}})
    scores = np.concatenate([SCORES, [0.0]]).astype(np.float32)  # the new offer: zero factors
    decision = decide(d, d.segments[0], scores, None, attrs(), NOTHING_LIVE,
                      ask(explain=True))
    assert "o4" not in ids(d, decision) and "n1" in ids(d, decision)
    new_at = ids(d, decision).index("n1")
    assert decision.p_accept[new_at] == pytest.approx(0.1)  # the segment's base rate
    assert "new_offer_prior" in decision.reasons[new_at]
    assert ("o4", "paused") in {(o, r) for o, r, _ in decision.removed}
    assert len(base.catalogue.offer_ids) == 6 and len(base.segments[0].offers) == 5
    # p_accept of trained offers is unchanged by the appended offer.
    assert decision.p_accept[0] == pytest.approx(prior_p_accept(SCORES, 0.1)[3])


def test_exhausted_budgets_remove_offers_everywhere_or_in_one_segment() -> None:
    fields = {"o4": BudgetSpec(total=3).as_json(), "o4:used": "3",
              "o3": BudgetSpec(per_segment={"main": 1}).as_json(), "o3:used:s:main": "1",
              "o1": BudgetSpec(total=10).as_json(), "o1:used": "2"}
    d = build_decider(model(), budgets=budget_state(fields, NOW))
    decision = decide(d, d.segments[0], SCORES, None, attrs(), NOTHING_LIVE, ask(explain=True))
    assert ids(d, decision) == ["o1", "o0"]
    assert {o: r for o, r, _ in decision.removed}["o4"] == "budget"
    assert {o: r for o, r, _ in decision.removed}["o3"] == "budget"
    assert decision.pending  # o1 has an on-serve budget with units left
    done = finish(decision, {1}, set())
    assert ids(d, done) == ["o0"]
    assert ids(d, finish(decision, {1}, {1})) == ["o1", "o0"]


@pytest.mark.parametrize(("raw", "message"), [
    ({"total": -1}, "total must be a whole number >= 0"),
    ({"per_day": 1.5}, "per_day must be a whole number"),
    ({"count": "click", "total": 1}, "count must be"),
    ({}, "give total, per_day or per_segment"),
    ({"totl": 3}, "unknown key"),
])
def test_bad_budgets_get_clear_errors(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BudgetSpec.parse("o1", raw)


def test_exploration_shows_random_eligible_offers_and_logs_their_propensities() -> None:
    """Epsilon-greedy over the 4 eligible offers, 2 per answer: a greedy pick was shown with
    probability 1 - eps + eps * 2/4, any other eligible offer with eps * 2/4."""
    d = build_decider(model())
    eps = 0.4
    greedy = decide(d, d.segments[0], SCORES, None, attrs(), NOTHING_LIVE,
                    ask(limit=2, epsilon=eps))
    assert ids(d, greedy) == ["o4", "o3"] and not greedy.explored
    assert greedy.propensities == pytest.approx([1 - eps + eps / 2] * 2)
    seen: set[str] = set()
    for _ in range(200):
        explored = decide(d, d.segments[0], SCORES, None, attrs(), NOTHING_LIVE,
                          ask(limit=2, epsilon=eps, explore=True))
        assert explored.explored and len(explored.offers) == 2
        assert all(r[-1] == "exploration" for r in explored.reasons)
        for offer, p in zip(ids(d, explored), explored.propensities, strict=True):
            assert p == pytest.approx(1 - eps + eps / 2 if offer in ("o4", "o3") else eps / 2)
        seen.update(ids(d, explored))
    assert seen == {"o0", "o1", "o3", "o4"}  # every eligible offer, never o2 or o5
    plain = decide(d, d.segments[0], SCORES, None, attrs(), NOTHING_LIVE, ask(limit=2))
    assert plain.propensities == [1.0, 1.0]
