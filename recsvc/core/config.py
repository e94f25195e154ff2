"""Settings from ``RECSVC_*`` environment variables, built once in main and passed down.

``problems(settings)`` checks every value against what is allowed (pure): one line per bad
setting, naming its variable and flag, so a mistake is never run with a silent substitute (a
port beyond 65535 used to bind a random port, ``--workers 0`` to run one process).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from recsvc.core.errors import SettingError


@dataclass(frozen=True)
class Settings:
    """Every setting, its environment variable (``RECSVC_`` + upper-case name) and default."""

    redis_url: str = "redis://localhost:6379/0"
    # The URL names one node of a Redis Cluster (the others are discovered): the keys are then
    # named for the cluster (docs/DESIGN.md section 6, "Redis Cluster"). Off: a single Redis.
    redis_cluster: bool = False
    key_prefix: str = "recsvc"  # all keys live under this prefix
    host: str = "0.0.0.0"
    port: int = 50051
    workers: int = 1  # server processes sharing the port (SO_REUSEPORT)
    # How each process serves gRPC (docs/PERFORMANCE.md, "Server model"): "sync" (grpc's thread
    # pool, one Redis connection per thread), "aio" (grpc.aio, one event loop), or "auto": sync
    # when the process may run on one CPU only (each `--workers` process is pinned to one; a
    # cpuset of one), aio otherwise: measured, sync serves 1.34x aio on one CPU, and aio 1.45x
    # sync when the threads may spread over two (the GIL then travels between cores).
    server_model: str = "auto"
    sync_threads: int = 16
    worker_max_deaths: int = 5  # a worker dying this often in 60 s stops the server (exit 5)
    max_concurrent_rpcs: int = 64  # per process; health checks are never counted
    max_message_bytes: int = 4 * 1024 * 1024
    default_deadline_ms: int = 250  # applies when the caller sets no deadline
    # A RecommendBatch without a deadline gets default_deadline_ms + this per id (10,000 ids:
    # 20.25 s at the default). Measured: 10,000 ids in 2.3 s before per-customer decisioning,
    # 5-10 s with it on 2 cores at load average 22 (test_hostile_requests).
    batch_deadline_per_id_ms: float = 2.0
    redis_timeout_ms: int = 25  # connect and socket timeout of every Redis call
    redis_pool_size: int = 16  # blocking connections per process (the model watcher)
    redis_retry_after_failure_ms: int = 1000  # after a failure, skip Redis this long
    model_poll_ms: int = 500  # how often the active version pointer is checked
    grace_seconds: float = 5.0  # in-flight calls get this long on SIGTERM
    reflection: bool = False  # gRPC server reflection (grpcurl without .proto files): opt in
    max_batch_ids: int = 10_000
    batch_chunk: int = 500  # ids fetched per Redis round trip in RecommendBatch
    log_level: str = "INFO"
    log_format: str = "json"  # json (one object per line) | text (key=value, for a terminal)
    log_salt: str = ""  # key of the customer-id hashes in logs; empty: random per process
    metrics_port: int = 0  # Prometheus /metrics on this port; 0 = off (the image sets 9464)
    metrics_host: str = ""  # empty: the same as host
    foldin_metrics_port: int = 0  # `recsvc feedback consume`'s /metrics (--metrics-port); 0 = off
    pushgateway_url: str = ""  # `recsvc train` pushes its metrics here when set
    # The HTTP/JSON face and the agent panel (README "For the CRM"): -1 (or empty) = off,
    # 0 = any free port (tests), else that port; same loop, servicer and tokens as gRPC.
    http_port: int = -1
    http_host: str = ""  # empty: the same as host
    http_cors_origins: str = ""  # comma-separated origins browsers may call from; * = any
    http_max_body_bytes: int = 1024 * 1024  # a larger request body: 413
    tokens_file: str = ""  # sha256 hashes of API tokens with their scopes; empty: no auth
    tls_cert_file: str = ""  # server certificate chain (PEM); with tls_key_file turns TLS on
    tls_key_file: str = ""
    tls_client_ca_file: str = ""  # CA of client certificates: set = mutual TLS required
    token: str = ""  # the API token `recsvc recommend` / `health` send (--token overrides)
    # Feedback (docs/DESIGN.md section 6; bounds and what they cost in the README)
    max_feedback_events: int = 1000  # events per RecordFeedback call; more: INVALID_ARGUMENT
    feedback_future_seconds: int = 300  # an event time further ahead than this is rejected
    feedback_timeout_ms: int = 2000  # the batch's Redis write (aio: also the caller's deadline)
    events_max_per_shard: int = 100_000  # stream entries per shard (64); full: "event log full"
    dedup_window_hours: float = 24.0  # a repeated event_id within this is a duplicate
    dedup_max_per_shard: int = 250_000  # at most this many remembered ids per shard
    live_ttl_days: float = 90.0  # a customer's live hash expires this long after its last write
    contacts_kept: int = 32  # contact times kept per customer and channel (>= any contact cap)
    objective: str = ""  # overrides the version's [decisioning] objective when set
    # Experiments (recsvc/experiments/holdout.py): a control group, and the decision log
    holdout_share: float = 0.0  # share of each segment held out as control
    holdout_segments: str = ""  # per-segment shares: "at_risk=0.2,loyal=0.05"
    holdout_salt: str = "holdout-1"  # a new salt draws a new control group
    holdout_baseline: str = "none"  # what control gets: "none", "popular" or "random"
    explore_share: float = 0.0  # share of answers showing random eligible offers (epsilon)
    decision_log: bool = True  # every answer appended to the decision log (docs/DESIGN.md, 6)
    # Share of customers (a salted hash: in or out for good) whose answers are logged; below 1
    # the scorecard covers that random subset (wider intervals) for less logging cost
    # (PERFORMANCE.md: the full log costs Recommend 15-17% of its throughput).
    decision_log_share: float = 1.0
    decision_log_max_per_shard: int = 200_000  # entries kept per shard (64 shards)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``RECSVC_*`` variables; keyword overrides (from flags) win when not None."""
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = source.get(f"RECSVC_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, str(f.type), raw)
        settings = cls(**values)
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(settings, **given) if given else settings


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
REDIS_SCHEMES = ("redis", "rediss", "unix")
MAX_WORKERS = 256
SERVER_MODELS = ("auto", "aio", "sync")
# Flags that set a setting (the command line names them in its messages).
FLAGS = {"redis_url": "--redis-url", "host": "--host", "port": "--port", "workers": "--workers",
         "log_level": "--log-level", "foldin_metrics_port": "--metrics-port"}


def setting_name(name: str) -> str:
    """How a user sets ``name``: its variable, and its flag when there is one."""
    flag = FLAGS.get(name)
    variable = f"RECSVC_{name.upper()}"
    return f"{flag} / {variable}" if flag else variable


def _between(low: float, high: float | None = None) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if low <= value and (high is None or value <= high):
            return None
        return f"{low:g} to {high:g}" if high is not None else f"{low:g} or more"
    return check


def _redis_url(value: str) -> str | None:
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if scheme in REDIS_SCHEMES:
        return None
    return ("a URL starting redis://, rediss:// (TLS) or unix:// "
            "(e.g. redis://localhost:6379/0)")


def _log_level(value: str) -> str | None:
    return None if value.upper() in LOG_LEVELS else "one of " + ", ".join(LOG_LEVELS)


def _key_prefix(value: str) -> str | None:
    # No braces: a brace pair in a key is a Redis Cluster hash tag, and the layout sets its own.
    if re.fullmatch(r"[!-z|~]{1,64}", value):
        return None
    return "1 to 64 printable ASCII characters without spaces or braces (e.g. recsvc)"


def _host(value: str) -> str | None:
    return None if value and not any(c.isspace() for c in value) else \
        "an address or host name without spaces (e.g. 0.0.0.0, 127.0.0.1, [::])"


# What each setting allows; a check returns None when the value is fine, else what is allowed.
_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "redis_url": _redis_url,
    "key_prefix": _key_prefix,
    "host": _host,
    "port": _between(0, 65535),  # 0: any free port (tests)
    "workers": _between(1, MAX_WORKERS),
    "server_model": lambda v: None if v in SERVER_MODELS else " or ".join(SERVER_MODELS),
    "sync_threads": _between(1, 1024),
    "worker_max_deaths": _between(1),
    "max_concurrent_rpcs": _between(1),
    "max_message_bytes": _between(1024, 2**31 - 1),
    "default_deadline_ms": _between(1),
    "batch_deadline_per_id_ms": _between(0),
    "redis_timeout_ms": _between(1),
    "redis_pool_size": _between(1),
    "redis_retry_after_failure_ms": _between(0),
    "model_poll_ms": _between(1),
    "grace_seconds": _between(0),
    "max_batch_ids": _between(1),
    "batch_chunk": _between(1),
    "log_level": _log_level,
    "holdout_share": _between(0, 1),
    "explore_share": _between(0, 1),
    "holdout_baseline": lambda v: None if v in ("none", "popular", "random")
    else "none, popular or random",
    "decision_log_max_per_shard": _between(1),
    "decision_log_share": lambda v: None if 0 < v <= 1 else "more than 0, at most 1",
    "log_format": lambda v: None if v in ("json", "text") else "json or text",
    "metrics_port": _between(0, 65535),  # 0: no metrics endpoint
    "foldin_metrics_port": _between(0, 65535),
    "http_port": _between(-1, 65535),  # -1: no HTTP face; 0: any free port
    "http_max_body_bytes": _between(1024, 2**31 - 1),
}


def problems(settings: Settings) -> list[str]:
    """One line per setting whose value is not allowed, naming it and what is allowed."""
    lines = []
    for f in fields(settings):
        check = _CHECKS.get(f.name)
        value = getattr(settings, f.name)
        allowed = check(value) if check is not None else None
        if allowed is not None:
            if f.name == "redis_url":  # never echo a URL: it may hold a password
                value = value.split("://", 1)[0] + "://..." if "://" in value else "(no scheme)"
            lines.append(f"{setting_name(f.name)}: {value!r} is not allowed (allowed: {allowed})")
    if settings.workers > 1 and settings.port == 0:
        lines.append(f"{setting_name('port')}: 0 (any free port) is not allowed with "
                     f"{setting_name('workers')} {settings.workers} (allowed: 1 to 65535, one "
                     "port the workers share)")
    if settings.workers > 1 and settings.http_port == 0:
        lines.append(f"RECSVC_HTTP_PORT: 0 (any free port) is not allowed with "
                     f"{setting_name('workers')} {settings.workers} (allowed: -1 for off, or "
                     "1 to 65535, one port the workers share)")
    return lines


# Settings that existed once, with what replaced them.
_RETIRED = {
    "RECSVC_THREADS": "the thread pool is RECSVC_SYNC_THREADS, used with "
                      "RECSVC_SERVER_MODEL=sync; RECSVC_WORKERS sets the processes",
}


def ignored_variables(env: Mapping[str, str] | None = None) -> list[str]:
    """One message per ``RECSVC_*`` variable that is not a setting: a typo or a retired name."""
    source = os.environ if env is None else env
    known = {f"RECSVC_{f.name.upper()}" for f in fields(Settings)}
    return [f"{name} is ignored: " + _RETIRED.get(name, "not a recsvc setting (see the README)")
            for name in sorted(source) if name.startswith("RECSVC_") and name not in known]


def _parse(name: str, type_name: str, raw: str) -> Any:
    try:
        if type_name == "bool":
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
    except ValueError:
        raise SettingError(
            f"RECSVC_{name.upper()}={raw!r} is not a valid {type_name}"
        ) from None
    return raw
