"""The one-line metric calls land in the right series (read back from prometheus-client)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from recsvc.ops import endpoint, metrics


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_rpc_and_answer_calls_count_per_label() -> None:
    before = value("recsvc_rpc_total", method="T1", code="OK")
    metrics.rpc("T1", "OK", 0.002)
    metrics.rpc("T1", "OK", 0.2)
    metrics.rpc("T1", "UNAVAILABLE", 0.01)
    assert value("recsvc_rpc_total", method="T1", code="OK") == before + 2
    assert value("recsvc_rpc_duration_seconds_bucket", method="T1", le="0.0025") >= 1
    assert value("recsvc_rpc_duration_seconds_count", method="T1") == before + 3
    metrics.answer("degraded_global_popular", "", 3)
    assert value("recsvc_answers_total", strategy="degraded_global_popular", arm="none") >= 3


def test_model_loaded_moves_the_version_and_counts_a_switch() -> None:
    switches = value("recsvc_model_switches_total")
    metrics.model_loaded("v-old", "2026-01-02T03:04:05Z", 1_000.0, switched=False)
    metrics.model_loaded("v-new", "not a time", 2_000.0, switched=True)
    assert value("recsvc_model_info", version="v-old") == 0
    assert value("recsvc_model_info", version="v-new") == 1
    assert value("recsvc_model_switches_total") == switches + 1
    assert value("recsvc_model_trained_timestamp_seconds") == 1767323045.0  # the readable one
    assert value("recsvc_model_loaded_timestamp_seconds") == 2_000.0


def test_the_api_for_feedback_and_decisioning() -> None:
    metrics.streams({"events": (42, 3), "decisions": (7, 1)}, events_limit=4)
    metrics.budgets_exhausted(3)
    hits = value("recsvc_contact_cap_hits_total", channel="email")
    metrics.contact_cap_hit("email")
    metrics.contact_cap_hit("")
    assert value("recsvc_stream_length", stream="events") == 42
    assert value("recsvc_stream_length", stream="decisions") == 7
    assert value("recsvc_events_log_fill_ratio") == 0.75  # the longest shard: 3 of 4
    assert value("recsvc_budgets_exhausted_offers") == 3
    assert value("recsvc_contact_cap_hits_total", channel="email") == hits + 1
    assert value("recsvc_contact_cap_hits_total", channel="any") >= 1


def test_a_file_a_starting_worker_is_creating_does_not_fail_the_scrape(tmp_path: Path) -> None:
    """prometheus-client fails the whole scrape on an empty file (struct.error); a worker's new
    file is empty between its creation and its first write."""
    done = MmapedDict(str(tmp_path / "counter_101.db"))
    done.write_value(mmap_key("recsvc_rpc", "recsvc_rpc_total", ["method", "code"],
                              ["Recommend", "OK"], "RPCs"), 5.0, 0.0)
    done.close()
    (tmp_path / "counter_102.db").touch()  # worker 102 is starting
    registry = CollectorRegistry()
    endpoint.WorkerFiles(registry, str(tmp_path))
    assert registry.get_sample_value("recsvc_rpc_total",
                                     {"method": "Recommend", "code": "OK"}) == 5.0
