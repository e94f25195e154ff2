"""The training job's metrics, for a scheduler's monitoring: phase times and the outcome.

A batch job is gone before Prometheus could scrape it, so its metrics are left where Prometheus
finds them: a node-exporter textfile (``recsvc train --metrics-file /var/lib/node_exporter/
textfile/recsvc_train.prom``, written atomically) and/or a Pushgateway
(``RECSVC_PUSHGATEWAY_URL``). ``recsvc_train_last_success_timestamp_seconds`` survives failed
runs (read back from the previous file), so "no successful training for 2 days" is one alert.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

JOB = "recsvc_train"
OUTCOMES = ("ok", "gate_refused", "failed")
LAST_SUCCESS = "recsvc_train_last_success_timestamp_seconds"


def registry_for(report: dict[str, Any], outcome: str, finished_at: float,
                 last_success: float | None) -> CollectorRegistry:
    """The run's metrics; ``outcome`` is one of OUTCOMES."""
    registry = CollectorRegistry()

    def gauge(name: str, help_text: str, value: float | None) -> None:
        if value is not None:
            Gauge(name, help_text, registry=registry).set(value)

    phases = Gauge("recsvc_train_phase_seconds", "Time spent per phase of the last run",
                   ["phase"], registry=registry)
    for phase, seconds in report.get("phases", {}).items():
        phases.labels(phase).set(seconds)
    result = Gauge("recsvc_train_outcome", "1 for the outcome of the last run", ["outcome"],
                   registry=registry)
    for name in OUTCOMES:
        result.labels(name).set(1 if name == outcome else 0)
    gauge("recsvc_train_duration_seconds", "Wall time of the last run",
          report.get("seconds_total"))
    gauge("recsvc_train_last_run_timestamp_seconds", "When the last run finished", finished_at)
    if outcome == "ok":
        last_success = finished_at
    gauge(LAST_SUCCESS, "When a run last published a version", last_success)
    bad = report.get("bad_rows", {})
    gauge("recsvc_train_bad_rows", "Bad input rows of the last run",
          bad.get("total") if isinstance(bad, dict) else None)
    gauge("recsvc_train_overall_ndcg_at_10", "Held-out ndcg@10 of the last run",
          report.get("overall_ndcg_at_10"))
    return registry


def previous_success(path: str) -> float | None:
    """The last-success time kept in an earlier metrics file, if any."""
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError:
        return None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS:
                    return float(sample.value)
    except ValueError:
        return None
    return None


def record(report: dict[str, Any], outcome: str, finished_at: float, metrics_file: str | None,
           pushgateway_url: str | None) -> list[str]:
    """Write and/or push the run's metrics; returns one message per destination that failed
    (the run's own exit code does not change: monitoring trouble is reported, not fatal)."""
    problems: list[str] = []
    last = previous_success(metrics_file) if metrics_file else None
    registry = registry_for(report, outcome, finished_at, last)
    if metrics_file:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(metrics_file)), exist_ok=True)
            write_to_textfile(metrics_file, registry)
        except OSError as exc:
            problems.append(f"cannot write --metrics-file {metrics_file}: {exc.strerror}")
    if pushgateway_url:
        try:
            push_to_gateway(pushgateway_url, job=JOB, registry=registry, timeout=10)
        except OSError as exc:
            problems.append(f"cannot push metrics to {pushgateway_url}: {exc}")
    for problem in problems:
        print(f"recsvc train: {problem}", file=sys.stderr)
    return problems
