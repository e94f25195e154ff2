"""The service's Prometheus metrics and the one-line calls that record them.

Every metric is defined here, so the dashboard (deploy/grafana/recsvc.json) and the alert rules
(deploy/prometheus/alerts.yml) have one place to read names from. Callers never touch the
prometheus-client objects: they call the functions below, which cache label children so that a
call costs a dictionary lookup and an increment (hot path: ``rpc``, ``answer``, ``redis_call``).

With ``--workers N`` each worker writes its values to memory-mapped files in the directory named
by ``PROMETHEUS_MULTIPROC_DIR`` (the parent creates it per run, see ``endpoint``); that variable
must be set before prometheus-client is imported, which is why workers get it in their
environment. Gauges say how values of several workers combine (``multiprocess_mode``); dead
workers' gauges are dropped (the ``live*`` modes: the supervisor removes a dead pid's files).
The fold-in consumer's metrics (feedback lag, pending entries, events folded) are in
``foldin_metrics``: another process, another registry.

API for other rooms (feedback, decisioning), all cheap and safe to call from any thread:
    streams(lengths, events_limit)   entries per Redis stream kind (the watcher, every few s)
    budgets_exhausted(offers)        how many offers are out of budget now (the watcher sets it)
    contact_cap_hit(channel)         a decision found the customer at a contact cap
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                           1.0, 2.5, 5.0)
_REDIS_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                         0.1, 0.25)

RPC_SECONDS = Histogram("recsvc_rpc_duration_seconds", "RPC handling time (server side)",
                        ["method"], buckets=_LATENCY_BUCKETS)
RPC_TOTAL = Counter("recsvc_rpc", "RPCs answered, by method and gRPC status code",
                    ["method", "code"])
ANSWERS = Counter("recsvc_answers", "Recommendations answered, by strategy and experiment arm "
                  "(degraded_* strategies: served from memory while Redis failed)",
                  ["strategy", "arm"])
REDIS_SECONDS = Histogram("recsvc_redis_duration_seconds", "Redis round trips of the hot path",
                          ["command"], buckets=_REDIS_BUCKETS)
REDIS_ERRORS = Counter("recsvc_redis_errors", "Failed Redis calls, by kind",
                       ["kind"])  # timeout | connection | reply | breaker_open
REDIS_UP = Gauge("recsvc_redis_up", "1 when the model watcher's last read of Redis succeeded",
                 multiprocess_mode="livemin")
BREAKER_OPEN = Gauge("recsvc_redis_breaker_open",
                     "1 while requests skip Redis after a failure (the breaker is open)",
                     multiprocess_mode="livemax")
MODEL_INFO = Gauge("recsvc_model_info", "1 for the model version in memory", ["version"],
                   multiprocess_mode="livemax")
MODEL_TRAINED = Gauge("recsvc_model_trained_timestamp_seconds",
                      "When the model in memory was trained (Unix time; oldest over workers)",
                      multiprocess_mode="livemin")
MODEL_LOADED = Gauge("recsvc_model_loaded_timestamp_seconds",
                     "When the model in memory was loaded (Unix time)",
                     multiprocess_mode="livemin")
MODEL_SWITCHES = Counter("recsvc_model_switches", "Model versions swapped into memory")
MODEL_LOAD_FAILURES = Counter("recsvc_model_load_failures",
                              "Active versions that could not be loaded, by reason",
                              ["reason"])  # corrupt | store
STREAM_LENGTH = Gauge("recsvc_stream_length", "Entries in a Redis stream, over its 64 shards",
                      ["stream"], multiprocess_mode="livemax")
EVENTS_LOG_FILL = Gauge("recsvc_events_log_fill_ratio",
                        "The fullest event shard over RECSVC_EVENTS_MAX_PER_SHARD (at 1 new "
                        "feedback is rejected: event log full)", multiprocess_mode="livemax")
WORKER_STARTED = Gauge("recsvc_worker_started_timestamp_seconds",
                       "When each live worker of `recsvc serve --workers N` started (a series "
                       "per pid)", multiprocess_mode="liveall")
BUDGETS_EXHAUSTED = Gauge("recsvc_budgets_exhausted_offers",
                          "Offers whose budget is used up now (in every or in some segments)",
                          multiprocess_mode="livemax")
EVICTION_RISK = Gauge("recsvc_redis_eviction_risk",
                      "1 when Redis's maxmemory-policy can evict model keys (allkeys-*)",
                      multiprocess_mode="livemax")
CORRUPT_RECORDS = Counter("recsvc_corrupt_records",
                          "Customer records that did not decode (answered from popularity)")
CONTACT_CAP_HITS = Counter("recsvc_contact_cap_hits",
                           "Contacts refused because the customer reached a cap", ["channel"])

_rpc_children: dict[str, tuple[Histogram, dict[str, Counter]]] = {}
_answer_children: dict[tuple[str, str], Counter] = {}
_redis_children: dict[str, Histogram] = {}
_last_version: list[str] = []


def rpc(method: str, code: str, seconds: float) -> None:
    """One finished RPC: its latency and its status code name (``OK``, ``UNAVAILABLE``, ...)."""
    entry = _rpc_children.get(method)
    if entry is None:
        entry = _rpc_children[method] = (RPC_SECONDS.labels(method), {})
    histogram, codes = entry
    counter = codes.get(code)
    if counter is None:
        counter = codes[code] = RPC_TOTAL.labels(method, code)
    histogram.observe(seconds)
    counter.inc()


def answer(strategy: str, arm: str = "", count: int = 1) -> None:
    """``count`` answers served by ``strategy`` in experiment ``arm`` ("" = no experiment)."""
    key = (strategy, arm)
    child = _answer_children.get(key)
    if child is None:
        child = _answer_children[key] = ANSWERS.labels(strategy, arm or "none")
    child.inc(count)


def redis_call(command: str, seconds: float) -> None:
    """One hot-path Redis round trip that got an answer."""
    child = _redis_children.get(command)
    if child is None:
        child = _redis_children[command] = REDIS_SECONDS.labels(command)
    child.observe(seconds)


def redis_error(kind: str) -> None:
    """A failed Redis call: ``timeout``, ``connection``, ``reply`` or ``breaker_open``."""
    REDIS_ERRORS.labels(kind).inc()


def eviction_risk(risky: bool) -> None:
    EVICTION_RISK.set(1 if risky else 0)


def corrupt_record() -> None:
    CORRUPT_RECORDS.inc()


def redis_up(up: bool) -> None:
    REDIS_UP.set(1 if up else 0)


def breaker(is_open: bool) -> None:
    BREAKER_OPEN.set(1 if is_open else 0)


def model_loaded(version: str, trained_at: str, loaded_at: float, switched: bool) -> None:
    """The version now in memory; ``switched`` when it replaced another one."""
    if _last_version and _last_version[0] != version:
        MODEL_INFO.labels(_last_version[0]).set(0)
    _last_version[:] = [version]
    MODEL_INFO.labels(version).set(1)
    trained = parse_time(trained_at)
    if trained is not None:
        MODEL_TRAINED.set(trained)
    MODEL_LOADED.set(loaded_at)
    if switched:
        MODEL_SWITCHES.inc()


def model_load_failed(reason: str) -> None:
    """The active version could not be loaded: ``corrupt`` (skipped) or ``store`` (retried)."""
    MODEL_LOAD_FAILURES.labels(reason).inc()


def streams(lengths: dict[str, tuple[int, int]], events_limit: int) -> None:
    """Per stream kind (events, decisions): (entries over all shards, in the longest shard)."""
    for stream, (total, _) in lengths.items():
        STREAM_LENGTH.labels(stream).set(total)
    if "events" in lengths and events_limit > 0:
        EVENTS_LOG_FILL.set(lengths["events"][1] / events_limit)


def worker_started(when: float) -> None:
    WORKER_STARTED.set(when)


def budgets_exhausted(offers: int) -> None:
    BUDGETS_EXHAUSTED.set(offers)


def contact_cap_hit(channel: str, count: int = 1) -> None:
    CONTACT_CAP_HITS.labels(channel or "any").inc(count)


def parse_time(value: str) -> float | None:
    """ISO-8601 (``2026-01-02T03:04:05Z``) to Unix seconds; None when empty or unreadable."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
