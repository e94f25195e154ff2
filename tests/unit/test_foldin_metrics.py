"""The fold-in's backlog figures (known answers) and its scrape-time collector."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest

from recsvc.core.errors import CorruptRecordError, StoreError
from recsvc.foldin.consumer import ContentionError, failure_kind
from recsvc.ops import foldin_metrics
from recsvc.store.feedback.backlog import Backlog, ShardBacklog


def test_the_lag_is_the_age_of_the_oldest_unfolded_entry_on_redis_clock() -> None:
    backlog = Backlog(10_000, (ShardBacklog(5, 0, None), ShardBacklog(3, 1, "7500-0"),
                               ShardBacklog(2, 0, "9000-3")))
    assert backlog.lag_seconds == 2.5  # 10,000 ms - 7,500 ms: the oldest over the shards
    assert backlog.length == 10 and backlog.pending == 1


def test_nothing_unfolded_is_no_lag_and_a_clock_behind_an_id_is_never_negative() -> None:
    assert Backlog(10_000, (ShardBacklog(4, 0, None),)).lag_seconds == 0.0
    assert Backlog(10_000, (ShardBacklog(1, 0, "10500-0"),)).lag_seconds == 0.0


@dataclass
class Figures:
    length: int
    pending: int
    lag_seconds: float


def scrape(read: object) -> str:
    registry = CollectorRegistry()
    registry.register(foldin_metrics.BacklogCollector(read))  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def test_the_collector_reads_the_backlog_at_each_scrape() -> None:
    reads = iter([Figures(7, 2, 3.5), Figures(9, 0, 0.0)])
    registry = CollectorRegistry()
    registry.register(foldin_metrics.BacklogCollector(lambda: next(reads)))
    first = generate_latest(registry).decode()
    assert "recsvc_feedback_lag_seconds 3.5" in first
    assert 'recsvc_stream_length{stream="events"} 7.0' in first
    assert "recsvc_foldin_pending_entries 2.0" in first
    assert "recsvc_redis_up 1.0" in first
    second = generate_latest(registry).decode()
    assert "recsvc_feedback_lag_seconds 0.0" in second and "pending_entries 0.0" in second


def test_a_backlog_redis_cannot_give_is_absent_not_zero_and_redis_up_says_so() -> None:
    def broken() -> Figures:
        raise ConnectionError("Redis went away")

    text = scrape(broken)
    assert "recsvc_redis_up 0.0" in text
    assert "recsvc_feedback_lag_seconds" not in text  # a 0 would look healthy
    assert "recsvc_stream_length" not in text


def test_failures_are_counted_by_kind() -> None:
    assert failure_kind(CorruptRecordError("bad record")) == "corrupt"
    assert failure_kind(ContentionError("lost")) == "contention"
    assert failure_kind(StoreError("timeout")) == "redis"
    assert failure_kind(ConnectionError("reset")) == "redis"
    text = generate_latest(foldin_metrics.REGISTRY).decode()
    for kind in foldin_metrics.FAILURE_KINDS:  # every series exists before the first failure
        assert f'recsvc_foldin_failures_total{{kind="{kind}"}}' in text
    for outcome in foldin_metrics.OUTCOMES:
        assert f'recsvc_foldin_events_total{{outcome="{outcome}"}}' in text


def test_the_delay_is_acceptance_to_acknowledgement_and_never_negative() -> None:
    def count(le: str) -> float:
        value = foldin_metrics.REGISTRY.get_sample_value(
            "recsvc_foldin_delay_seconds_bucket", {"le": le})
        return value or 0.0

    fast, total = count("0.25"), count("+Inf")
    foldin_metrics.acknowledged(1000.0, [999_900, 1_000_500, 997_000])  # 0.1 s, -0.5 s, 3 s
    assert count("0.25") == fast + 2  # the clock behind an id counts as 0, not negative
    assert count("+Inf") == total + 3
