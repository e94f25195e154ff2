"""The training job's metrics: textfile for node-exporter, Pushgateway, last success kept."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from recsvc.ops import jobmetrics

REPORT = {"phases": {"read": 1.5, "fit": 7.25}, "seconds_total": 9.0,
          "bad_rows": {"total": 3}, "overall_ndcg_at_10": 0.41}


def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(path.read_text()) for s in f.samples}


def test_a_successful_run_writes_phases_outcome_and_last_success(tmp_path: Path) -> None:
    path = tmp_path / "textfile" / "recsvc_train.prom"
    assert jobmetrics.record(REPORT, "ok", 1_000.0, str(path), None) == []
    got = samples(path)
    assert got[("recsvc_train_phase_seconds", (("phase", "fit"),))] == 7.25
    assert got[("recsvc_train_outcome", (("outcome", "ok"),))] == 1
    assert got[("recsvc_train_outcome", (("outcome", "failed"),))] == 0
    assert got[("recsvc_train_last_success_timestamp_seconds", ())] == 1_000.0
    assert got[("recsvc_train_bad_rows", ())] == 3


def test_a_failed_run_keeps_the_previous_last_success(tmp_path: Path) -> None:
    path = tmp_path / "recsvc_train.prom"
    jobmetrics.record(REPORT, "ok", 1_000.0, str(path), None)
    jobmetrics.record({"phases": {"read": 0.1}}, "gate_refused", 2_000.0, str(path), None)
    got = samples(path)
    assert got[("recsvc_train_outcome", (("outcome", "gate_refused"),))] == 1
    assert got[("recsvc_train_last_run_timestamp_seconds", ())] == 2_000.0
    assert got[("recsvc_train_last_success_timestamp_seconds", ())] == 1_000.0


def test_metrics_are_pushed_to_a_pushgateway_and_a_dead_one_is_reported(
        tmp_path: Path) -> None:
    received: list[tuple[str, bytes]] = []

    class Gateway(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            received.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Gateway)
    thread = threading.Thread(target=server.handle_request)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    assert jobmetrics.record(REPORT, "failed", 5.0, None, url) == []
    thread.join(timeout=10)
    server.server_close()
    (path, body), = received
    assert path == "/metrics/job/recsvc_train"
    assert b"recsvc_train_phase_seconds" in body
    problems = jobmetrics.record(REPORT, "failed", 5.0, str(tmp_path / "x.prom"), url)
    assert len(problems) == 1 and "cannot push metrics" in problems[0]
    assert (tmp_path / "x.prom").exists()  # the file is written even when the push fails
