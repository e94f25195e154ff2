"""Settings from ``RECSVC_*`` environment variables, built once in main and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from recsvc.core.errors import RecsvcError


@dataclass(frozen=True)
class Settings:
    """Every setting, its environment variable (``RECSVC_`` + upper-case name) and default."""

    redis_url: str = "redis://localhost:6379/0"
    key_prefix: str = "recsvc"  # all keys live under this prefix
    host: str = "0.0.0.0"
    port: int = 50051
    workers: int = 1  # server processes sharing the port (SO_REUSEPORT)
    max_concurrent_rpcs: int = 64  # per process; health checks are never counted
    max_message_bytes: int = 4 * 1024 * 1024
    default_deadline_ms: int = 250  # applies when the caller sets no deadline
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
    pushgateway_url: str = ""  # `recsvc train` pushes its metrics here when set
    tokens_file: str = ""  # sha256 hashes of API tokens with their scopes; empty: no auth
    tls_cert_file: str = ""  # server certificate chain (PEM); with tls_key_file turns TLS on
    tls_key_file: str = ""
    tls_client_ca_file: str = ""  # CA of client certificates: set = mutual TLS required

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


# Settings that existed once, with what replaced them.
_RETIRED = {
    "RECSVC_THREADS": "the server has no thread pool any more (one event loop per process); "
                      "use RECSVC_WORKERS for more processes",
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
        raise RecsvcError(
            f"RECSVC_{name.upper()}={raw!r} is not a valid {type_name}"
        ) from None
    return raw
