"""The scorecard joins decisions with feedback as documented, and finds a planted uplift."""

from __future__ import annotations

import numpy as np
import pytest

from recsvc.experiments.decision_log import Decision, as_columns
from recsvc.experiments.report_html import render
from recsvc.experiments.scorecard import DAY, Decisions, Events, scorecard

T0 = 1_790_000_000.0


def _decision(i: int, customer: str, arm: str, offers: tuple[str, ...], ts: float = T0,
              propensities: tuple[float, ...] | None = None,
              candidate: tuple[str, ...] = ()) -> Decision:
    k = len(offers)
    return Decision(f"d{i}", ts, customer, "at_risk", "v1", arm, "personalized", "email", offers,
                    np.ones(k, np.float32),
                    np.asarray(propensities or [1.0] * k, np.float32),
                    np.full(k, 0.2, np.float32), np.full(k, 50.0, np.float32),
                    np.full(k, 10.0, np.float32), "v2" if candidate else "", candidate)


def _events(rows: list[tuple[str, str, str, float, str, float | None]]) -> Events:
    return Events.from_columns({"customer_id": [r[0] for r in rows],
                                "offer_id": [r[1] for r in rows],
                                "event": [r[2] for r in rows], "ts": [r[3] for r in rows],
                                "decision_id": [r[4] for r in rows],
                                "value": [r[5] for r in rows]})


def test_attribution_by_decision_id_within_the_window_and_value_net_of_cost() -> None:
    decisions = [_decision(0, "a", "treatment", ("o1", "o2")),
                 _decision(1, "b", "treatment", ("o1",)),
                 _decision(2, "c", "control", ())]
    events = _events([
        ("a", "o1", "accept", T0 + 60, "d0", None),          # counts
        ("a", "o2", "accept", T0 + 40 * DAY, "d0", None),    # outside the 30-day window
        ("b", "o1", "redeem", T0 + 3600, "d1", None),        # a redemption is an acceptance
        ("b", "o2", "accept", T0 + 60, "d1", None),          # o2 was not shown in d1
        ("a", "", "renew", T0 + 5 * DAY, "", None),
        ("b", "", "churn", T0 + 2 * DAY, "", None),
        ("b", "", "renew", T0 + 3 * DAY, "", None),          # the last outcome wins
        ("c", "", "churn", T0 + 1 * DAY, "", None),
        ("c", "", "nps", T0 + 1 * DAY, "", 3.0),
        ("a", "", "nps", T0 - 1 * DAY, "", 10.0),            # before the first decision
    ])
    card = scorecard(Decisions.from_columns(as_columns(decisions)), events)
    treated = card["arms"]["treatment"]
    assert treated["offers_shown"] == 3
    assert treated["acceptance_rate"]["value"] == pytest.approx(2 / 3)
    assert treated["redemption_rate"]["value"] == pytest.approx(1 / 3)
    assert treated["retention_rate"]["value"] == 1.0
    assert treated["net_value_total"] == pytest.approx(2 * (50.0 - 10.0))
    assert card["arms"]["control"]["retention_rate"]["value"] == 0.0
    assert card["arms"]["control"]["nps"]["value"] == -100.0
    assert np.isnan(treated["nps"]["value"])  # a's answer came before their first decision
    assert card["offers"]["o1"]["acceptance_rate"]["value"] == 1.0


def test_a_planted_retention_uplift_is_found_with_an_interval_covering_it() -> None:
    rng = np.random.default_rng(11)
    decisions, rows = [], []
    for i in range(6000):
        arm = "control" if i % 3 == 0 else "treatment"
        customer = f"c{i}"
        offers = () if arm == "control" else ("o1",)
        decisions.append(_decision(i, customer, arm, offers, ts=T0 + i))
        retain_p = 0.60 if arm == "control" else 0.70  # true absolute uplift 0.10
        kind = "renew" if rng.random() < retain_p else "churn"
        rows.append((customer, "", kind, T0 + i + 10 * DAY, "", None))
        if arm == "treatment" and rng.random() < 0.3:
            rows.append((customer, "o1", "accept", T0 + i + 60, f"d{i}", None))
    card = scorecard(Decisions.from_columns(as_columns(decisions)), _events(rows))
    uplift = card["uplift"]["treatment"]["retention_rate"]
    assert uplift["low"] <= 0.10 <= uplift["high"]
    assert uplift["value"] == pytest.approx(0.10, abs=0.04)
    relative = card["uplift"]["treatment"]["retention_relative"]
    assert relative["low"] <= 0.70 / 0.60 - 1 <= relative["high"]
    assert card["segments"]["at_risk"]["uplift"]["retention_rate"]["value"] == uplift["value"]
    value = card["uplift"]["treatment"]["net_value_per_customer"]
    assert value["low"] <= 0.3 * 40.0 <= value["high"]


def test_off_policy_estimate_of_a_shadow_candidate_under_exploration() -> None:
    """Uniform exploration over 4 offers (p = 0.25), acceptance 0.1..0.4; the candidate always
    picks o4: true acceptance per decision 0.4."""
    rng = np.random.default_rng(12)
    accept = {"o1": 0.1, "o2": 0.2, "o3": 0.3, "o4": 0.4}
    decisions, rows = [], []
    for i in range(8000):
        shown = ("o1", "o2", "o3", "o4")[rng.integers(4)]
        decisions.append(_decision(i, f"c{i}", "treatment", (shown,), propensities=(0.25,),
                                   candidate=("o4",)))
        if rng.random() < accept[shown]:
            rows.append((f"c{i}", shown, "accept", T0 + 5, f"d{i}", None))
    card = scorecard(Decisions.from_columns(as_columns(decisions)), _events(rows))
    estimate = card["off_policy"]["v2"]
    for method in ("ips", "snips"):
        assert estimate[method]["low"] <= 0.4 <= estimate[method]["high"], method
    assert estimate["logging_policy_acceptance"]["value"] == pytest.approx(0.25, abs=0.02)


def test_decision_log_entries_round_trip_through_stream_fields() -> None:
    decision = _decision(7, "c7", "challenger", ("o1", "o2"), candidate=("o3",))
    raw = {(k.encode() if isinstance(k, str) else k): (v.encode() if isinstance(v, str) else v)
           for k, v in zip(decision.fields()[::2], decision.fields()[1::2], strict=True)}
    again = Decision.from_fields(raw)
    assert again.offers == ("o1", "o2") and again.candidate == ("o3",)
    assert again.values.tolist() == [50.0, 50.0] and again.ts == T0
    raw[b"sc"] = b"\x00"
    with pytest.raises(ValueError, match="field 'sc'"):
        Decision.from_fields(raw)


def test_challenger_vs_champion_finds_a_planted_difference_with_an_interval_covering_it() -> None:
    """Split mode: the challenger arm against the champion's (treatment); control excluded."""
    rng = np.random.default_rng(23)
    decisions, rows = [], []
    for i in range(8000):
        arm = ("control", "treatment", "treatment", "challenger")[i % 4]
        customer = f"c{i}"
        decisions.append(_decision(i, customer, arm, () if arm == "control" else ("o1",),
                                   ts=T0 + i))
        retain_p = {"control": 0.50, "treatment": 0.60, "challenger": 0.68}[arm]
        kind = "renew" if rng.random() < retain_p else "churn"
        rows.append((customer, "", kind, T0 + i + 10 * DAY, "", None))
    card = scorecard(Decisions.from_columns(as_columns(decisions)), _events(rows))
    versus = card["challenger_vs_champion"]["retention_rate"]
    assert versus["low"] <= 0.08 <= versus["high"]
    assert versus["value"] == pytest.approx(0.08, abs=0.04)
    relative = card["challenger_vs_champion"]["retention_relative"]
    assert relative["low"] <= 0.68 / 0.60 - 1 <= relative["high"]
    assert card["uplift"]["challenger"]["retention_rate"]["value"] == pytest.approx(
        0.18, abs=0.04)  # and each against control, as before
    page = render(card)
    assert "<h2>Challenger vs champion</h2>" in page
    without = scorecard(Decisions.from_columns(as_columns(decisions[:2])), _events(rows[:2]))
    assert without["challenger_vs_champion"] == {}
    assert "Challenger vs champion" not in render(without)
