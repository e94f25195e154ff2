"""The scorecard report opens in a real headless browser, and its plots render."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsvc.experiments.decision_log import as_columns
from recsvc.experiments.report_html import render
from recsvc.experiments.scorecard import Decisions, scorecard
from tests.browser.chromium import browser_page
from tests.unit.test_scorecard import DAY, T0, _decision, _events


def _card() -> dict[str, object]:
    rng = np.random.default_rng(21)
    decisions, rows = [], []
    for i in range(1500):
        arm = "control" if i % 3 == 0 else "treatment"
        offers = () if arm == "control" else (f"o{i % 5}",)
        decisions.append(_decision(i, f"c{i}", arm, offers, ts=T0 + i, candidate=("o1",)))
        kind = "renew" if rng.random() < (0.6 if arm == "control" else 0.7) else "churn"
        rows.append((f"c{i}", "", kind, T0 + i + 10 * DAY, "", None))
        rows.append((f"c{i}", "", "nps", T0 + i + 9 * DAY, "", float(rng.integers(0, 11))))
        if offers and rng.random() < 0.3:
            rows.append((f"c{i}", offers[0], "accept", T0 + i + 60, f"d{i}", None))
    return scorecard(Decisions.from_columns(as_columns(decisions)), _events(rows))


def test_report_renders_its_plots_in_a_real_browser(tmp_path: Path) -> None:
    page_file = tmp_path / "report.html"
    page_file.write_text(render(_card()))
    with browser_page() as page:
        page.goto(page_file.as_uri())
        for figure in ("#plot-arms", "#plot-uplift", "#plot-offers"):
            box = page.locator(f"{figure} svg").bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 100, figure
            assert page.locator(f"{figure} svg path").count() > 10, figure
        assert "Retention uplift, treatment vs control" in page.inner_text("main")
        assert page.locator("table").count() >= 4
        assert page.console_errors == []
