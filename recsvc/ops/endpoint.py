"""The metrics HTTP endpoint (``RECSVC_METRICS_PORT``; 0 = no endpoint).

One process: prometheus-client's default registry, served from a daemon thread. ``--workers N``:
the parent creates a fresh directory for this run, hands it to the workers as
``PROMETHEUS_MULTIPROC_DIR``, serves the sum of their files from its own endpoint, and removes
the directory when the workers are gone (a stale directory would add a previous run's counts).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from recsvc.core.config import Settings
from recsvc.core.errors import RecsvcError

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def serving(settings: Settings, multiproc_dir: str | None = None) -> Iterator[int]:
    """Serve /metrics on ``settings.metrics_port`` while the block runs; yields the bound port
    (0 when metrics are off)."""
    if not settings.metrics_port:
        yield 0
        return
    registry = REGISTRY
    if multiproc_dir is not None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=multiproc_dir)  # type: ignore[no-untyped-call]
    host = settings.metrics_host or settings.host
    try:
        server, thread = start_http_server(settings.metrics_port, host, registry)
    except OSError as exc:
        raise RecsvcError(f"cannot serve metrics on {host}:{settings.metrics_port} "
                          f"(RECSVC_METRICS_PORT): {exc.strerror or exc}") from exc
    try:
        yield int(server.server_address[1])
    finally:
        _shutdown(server, thread)


@contextmanager
def multiprocess_dir() -> Iterator[str]:
    """A per-run directory for the workers' metric files, removed afterwards."""
    path = tempfile.mkdtemp(prefix="recsvc-metrics-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _shutdown(server: WSGIServer, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join(timeout=2)
