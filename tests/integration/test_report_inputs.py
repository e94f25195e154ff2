"""Bad inputs of `recsvc decisions export` and `recsvc report --decisions/--events`: one clear
line naming the file, the column or the flag, exit 1 (the real CLI; no Redis is needed)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsvc.core.config import Settings
from tests.integration.helpers import cli
from training.synth import decisionlog

pytestmark = pytest.mark.integration


def _last_line(settings: Settings, *args: str) -> tuple[int, str]:
    result = cli(list(args), settings.redis_url, settings.key_prefix)
    return result.returncode, (result.stderr.strip().splitlines() or [""])[-1]


def test_bad_report_and_export_inputs_are_one_line_naming_what(
        tmp_path: Path, settings: Settings) -> None:
    written = decisionlog.generate(tmp_path / "w", 2_000)
    html = str(tmp_path / "r.html")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, line = _last_line(settings, "report", "--out", html, "--decisions", str(empty),
                            "--events", str(written.events))
    assert code == 1 and "no exported decisions" in line and str(empty) in line
    pq.write_table(pa.table({"customer_id": ["c1"], "ts": [1.0]}), tmp_path / "bad.parquet")
    code, line = _last_line(settings, "report", "--out", html, "--decisions",
                            str(written.decisions), "--events", str(tmp_path / "bad.parquet"))
    assert code == 1 and "events need the columns offer_id, event, decision_id, value" in line
    (written.decisions / "_export.json").write_text("{not json")
    code, line = _last_line(settings, "decisions", "export", "--out", str(written.decisions))
    assert code == 1 and "_export.json: not a decision-log export commit" in line
    code, line = _last_line(settings, "decisions", "export", "--out", str(tmp_path / "x"),
                            "--page", "0")
    assert code == 1 and "--page must be at least 1" in line


def test_the_report_over_generated_parquet_needs_no_redis(tmp_path: Path) -> None:
    written = decisionlog.generate(tmp_path / "w", 5_000)
    result = cli(["report", "--out", str(tmp_path / "r.html"), "--decisions",
                  str(written.decisions), "--events", str(written.events)],
                 "redis://127.0.0.1:1/0", "nowhere")  # nothing listens there
    assert result.returncode == 0, result.stderr
    assert "5,000 decisions" in result.stdout and "<svg" in (tmp_path / "r.html").read_text()
