"""The fold-in consumer's Prometheus metrics (``recsvc feedback consume --metrics-port``).

A registry of its own: the consumer imports the store, which imports the serving metrics
(``metrics.py``), and serving's ``recsvc_redis_up`` and friends at their initial zero would be
read as a server whose Redis is down. Served by ``endpoint.serving_registry``.

The backlog (lag, stream length, pending entries) is read from Redis when Prometheus scrapes,
not by the consumer's loop: a consumer stuck in a batch or in Redis retries must show its lag
growing, and a gauge the stuck loop stopped setting would freeze at its last, healthy value.

**The lag operators alert on** is ``recsvc_feedback_lag_seconds``: the age of the oldest event
accepted but not yet folded in (pending in the group or never delivered), on Redis's clock. It
grows when the consumer is slow, stuck, crashed or not deployed. The time from acceptance to
fold-in of each event (``recsvc_foldin_delay_seconds``, for the "folded within a second" target)
is only observed when events get folded, so it goes quiet exactly when nothing is folded at all:
a dashboard figure, not an alert.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from recsvc.core.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

REGISTRY: Final = CollectorRegistry()
OUTCOMES: Final = ("folded", "duplicate", "no_effect")
FAILURE_KINDS: Final = ("redis", "corrupt", "contention")

EVENTS = Counter("recsvc_foldin_events", "Feedback events the fold-in handled, by outcome: "
                 "folded (changed the customer's vector), duplicate (already folded: a "
                 "redelivery or takeover), no_effect (an outcome event, an offer or segment "
                 "without a personal model, no active version). A replay after a model switch "
                 "handles events again, into the new version", ["outcome"], registry=REGISTRY)
FAILURES = Counter("recsvc_foldin_failures", "Fold-in batches that failed and will be retried, "
                   "by kind: redis (unreachable, timeout), corrupt (a stored record does not "
                   "decode: retried forever until fixed), contention (kept losing the "
                   "compare-and-set)", ["kind"], registry=REGISTRY)
DELAY = Histogram("recsvc_foldin_delay_seconds", "Time from an event's acceptance (its stream "
                  "id) to its acknowledgement by the fold-in, for events read by the group or "
                  "taken over (replays not included); the consumer host's clock",
                  buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                           300.0), registry=REGISTRY)
for _outcome in OUTCOMES:  # every series exists from the start: rate() sees the first event
    EVENTS.labels(_outcome)
for _kind in FAILURE_KINDS:
    FAILURES.labels(_kind)


class Backlog(Protocol):
    """What ``recsvc.store.feedback.backlog.read_backlog`` returns (ops never imports the store)."""

    @property
    def length(self) -> int: ...

    @property
    def pending(self) -> int: ...

    @property
    def lag_seconds(self) -> float: ...


class BacklogCollector(Collector):
    """Reads the backlog at each scrape. When Redis does not answer, ``recsvc_redis_up`` is 0
    and the backlog series are absent (unknown, not zero: a zero lag would look healthy)."""

    def __init__(self, read: Callable[[], Backlog]) -> None:
        self.read = read
        self.failures = RateLimitedLog(log)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("recsvc_redis_up",
                               "1 when this process's last read of Redis succeeded")
        try:
            backlog = self.read()
        except Exception as exc:  # a scrape must answer whatever Redis does
            self.failures.log(logging.WARNING, "backlog",
                              f"fold-in metrics: cannot read the backlog from Redis: {exc}")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily(
            "recsvc_feedback_lag_seconds", "Age of the oldest accepted feedback event not yet "
            "folded in (pending or never delivered to the group foldin); 0 when none",
            value=backlog.lag_seconds)
        length = GaugeMetricFamily("recsvc_stream_length", "Entries in a Redis stream, over "
                                   "its 64 shards", labels=["stream"])
        length.add_metric(["events"], backlog.length)
        yield length
        yield GaugeMetricFamily(
            "recsvc_foldin_pending_entries", "Events delivered to the group foldin and not yet "
            "acknowledged (a consumer holds them, or died holding them)",
            value=backlog.pending)


def watch_backlog(read: Callable[[], Backlog]) -> BacklogCollector:
    """Register the scrape-time backlog reader (once per process)."""
    collector = BacklogCollector(read)
    REGISTRY.register(collector)
    return collector


def events_handled(outcome: str, count: int) -> None:
    if count:
        EVENTS.labels(outcome).inc(count)


def acknowledged(now: float, accepted_ms: list[int]) -> None:
    """Entries the group acknowledged at ``now`` (Unix seconds), by acceptance time (ms)."""
    for ms in accepted_ms:
        DELAY.observe(max(0.0, now - ms / 1000.0))


def failure(kind: str) -> None:
    FAILURES.labels(kind).inc()
