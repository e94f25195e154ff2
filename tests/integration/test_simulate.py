"""`recsvc simulate` runs the whole loop through the real API on a world with known truth, and
the scorecard it writes finds the retention uplift the simulation planted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.integration.helpers import cli

pytestmark = pytest.mark.integration


def test_simulation_closes_the_loop_and_the_report_covers_the_planted_uplift(
        tmp_path: Path) -> None:
    out = tmp_path / "sim"
    result = cli(["simulate", "--customers", "3000", "--offers", "40", "--segments", "2",
                  "--days", "2", "--per-day", "800", "--holdout", "0.3", "--seed", "3",
                  "--out", str(out)], "redis://unused:1/0", "unused")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "simulation.json").read_text())
    card = json.loads((out / "report.json").read_text())
    assert card["decisions"] == 2 * 800  # every answer is in the decision log
    assert summary["events"] > 1000
    assert 0.2 < summary["share_of_oracle"] <= 1.0
    uplift = card["uplift"]["treatment"]["retention_rate"]
    assert uplift["low"] <= summary["planted_retention_uplift"] <= uplift["high"]
    assert card["arms"]["control"]["offers_shown"] == 0  # the baseline is no offer
    assert (out / "report.html").read_text().count("<svg") >= 3
    assert "retention uplift over control" in result.stdout
    # The feedback went through the fold-in, whichever model each segment chose (the exposure
    # model's segments wrote no record before they had a solve of their own).
    folded = re.search(r"fold-in: \d+ entries, (\d+) records written", result.stdout)
    assert folded is not None and int(folded.group(1)) > 0, result.stdout
