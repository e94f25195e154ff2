"""The Grafana dashboard and the Prometheus alert rules only name metrics recsvc exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from recsvc.ops import foldin_metrics, jobmetrics
from recsvc.ops import metrics as _metrics  # noqa: F401  (registers the serving metrics)

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "recsvc.json"
NAME = re.compile(r"\brecsvc_[a-z0-9_]+")


class Backlog:
    length, pending, lag_seconds = 7, 2, 3.5


def foldin_families() -> list[str]:
    """The fold-in consumer's metrics: its counters and what its backlog collector reads."""
    collector = foldin_metrics.BacklogCollector(Backlog)
    return [f.name for f in [*foldin_metrics.REGISTRY.collect(), *collector.collect()]]


def exported_names() -> set[str]:
    """Every sample name recsvc can expose (serving, the fold-in consumer, the training job)."""
    names: set[str] = set()
    families = [f.name for f in REGISTRY.collect()] + foldin_families()
    for base in families:
        if base.startswith("recsvc_"):
            names |= {base, f"{base}_total", f"{base}_bucket", f"{base}_count", f"{base}_sum"}
    job = jobmetrics.registry_for({"phases": {"read": 1.0}, "seconds_total": 1.0,
                                   "bad_rows": {"total": 0}, "overall_ndcg_at_10": 0.5},
                                  "ok", 1.0, None)
    names |= {s.name for family in job.collect() for s in family.samples}
    return names


def test_alert_rules_are_well_formed_and_cover_the_issue() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    (group,) = rules["groups"]
    alerts = {rule["alert"]: rule for rule in group["rules"]}
    assert {"RecsvcModelTooOld", "RecsvcDegradedShareHigh", "RecsvcRedisDown"} <= set(alerts)
    for rule in alerts.values():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
        assert rule["expr"].strip() and rule["annotations"]["summary"]
        assert rule["labels"]["severity"] in ("warning", "critical")


def test_alerts_and_dashboard_name_only_exported_metrics() -> None:
    known = exported_names()
    texts = [rule["expr"] for rule in yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    texts += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for text in texts for name in NAME.findall(text)}
    assert used and used <= known, used - known
    # Every serving and fold-in metric is on the dashboard.
    families = {name for name in [f.name for f in REGISTRY.collect()] + foldin_families()
                if name.startswith("recsvc_")}
    shown = {n.removesuffix("_total").removesuffix("_bucket") for n in used}
    assert families <= shown, families - shown


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (apt-get install prometheus)")
def test_promtool_accepts_the_alert_rules() -> None:
    result = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# (alert, input series, minutes at which it must not fire yet, minutes at which it fires, the
# labels it fires with)
FEEDBACK_ALERT_CASES = [
    ("RecsvcFeedbackLagHigh", [("recsvc_feedback_lag_seconds", "0+30x30")], 4, 10, {}),
    ("RecsvcFoldinMetricsAbsent", [("recsvc_redis_up", "1x30")], 5, 15, {}),
    ("RecsvcFoldinFailing", [('recsvc_foldin_failures_total{kind="corrupt"}', "0x5 1+1x30")],
     5, 20, {"kind": "corrupt"}),
    ("RecsvcEventLogFilling", [("recsvc_events_log_fill_ratio", "0.5x5 0.9x30")], 12, 25, {}),
]


def render(template: str, labels: dict[str, str]) -> str:
    """An annotation as Prometheus renders it (only ``{{ $labels.x }}`` is used here)."""
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (apt-get install prometheus)")
def test_the_feedback_alerts_fire_on_known_series_and_not_before(tmp_path: Path) -> None:
    """``promtool test rules``: each alert stays silent on its series until its threshold has
    held for its ``for``, then fires with its labels and annotations."""
    rules = {r["alert"]: r for r in yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]}
    tests = []
    for alert, series, silent, firing, labels in FEEDBACK_ALERT_CASES:
        rule = rules[alert]
        annotations = {k: render(v, labels) for k, v in rule["annotations"].items()}
        tests.append({
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in series],
            "alert_rule_test": [
                {"eval_time": f"{silent}m", "alertname": alert, "exp_alerts": []},
                {"eval_time": f"{firing}m", "alertname": alert, "exp_alerts": [
                    {"exp_labels": {**rule["labels"], **labels},
                     "exp_annotations": annotations}]},
            ]})
    spec = tmp_path / "alerts_test.yml"
    spec.write_text(yaml.safe_dump({"rule_files": [str(ALERTS)], "evaluation_interval": "1m",
                                    "tests": tests}))
    result = subprocess.run(["promtool", "test", "rules", str(spec)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
