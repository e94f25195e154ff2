"""The report's Parquet path on a synthetic decision log with a KNOWN retention lift
(training/synth/decisionlog.py): the uplift and its 95% interval recover the planted truth, and
the intervals cover it at about their nominal rate."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsvc.experiments import parquet_log
from recsvc.experiments.scorecard import scorecard
from training.synth import decisionlog

LIFT, BASE = decisionlog.LIFT, decisionlog.P_RENEW_CONTROL


def _card(out: Path, decisions: int, seed: int) -> dict[str, object]:
    written = decisionlog.generate(out, decisions, seed)
    table, ids = parquet_log.read_decisions(written.decisions)
    events = parquet_log.place_events(parquet_log.read_events(written.events), table, ids)
    return scorecard(table, events)


def test_the_report_recovers_a_known_lift_from_200k_decisions(tmp_path: Path) -> None:
    card = _card(tmp_path, 200_000, 11)
    assert card["decisions"] == 200_000
    uplift = card["uplift"]["treatment"]["retention_rate"]  # type: ignore[index]
    se = (uplift["high"] - uplift["low"]) / (2 * 1.96)
    assert uplift["low"] <= LIFT <= uplift["high"]
    assert abs(uplift["value"] - LIFT) < 3 * se and se < 0.01
    relative = card["uplift"]["treatment"]["retention_relative"]  # type: ignore[index]
    assert relative["low"] <= LIFT / BASE <= relative["high"]
    control = card["arms"]["control"]  # type: ignore[index]
    assert control["retention_rate"]["value"] == pytest.approx(BASE, abs=0.03)
    assert control["offers_shown"] == 0  # baseline none
    treated = card["arms"]["treatment"]  # type: ignore[index]
    assert treated["acceptance_rate"]["value"] == pytest.approx(decisionlog.P_ACCEPT,
                                                                abs=0.003)


def test_the_uplift_interval_covers_the_known_lift_at_about_95_percent(
        tmp_path: Path) -> None:
    """40 independent worlds of 20k decisions: the 95% interval misses the truth in about 2;
    more than 6 misses (probability 0.3% for a correct interval; the seeds are fixed) fails."""
    missed = 0
    for seed in range(40):
        card = _card(tmp_path / str(seed), 20_000, 100 + seed)
        uplift = card["uplift"]["treatment"]["retention_rate"]  # type: ignore[index]
        missed += not uplift["low"] <= LIFT <= uplift["high"]
    assert missed <= 6
