"""The metrics HTTP endpoint (``RECSVC_METRICS_PORT``; 0 = no endpoint), and the fold-in
consumer's (``RECSVC_FOLDIN_METRICS_PORT``, its own registry: ``serving_registry``).

One process: prometheus-client's default registry, served from a daemon thread. ``--workers N``:
the parent creates a fresh directory for this run, hands it to the workers as
``PROMETHEUS_MULTIPROC_DIR``, serves the sum of their files from its own endpoint, and removes
the directory when the workers are gone (a stale directory would add a previous run's counts).
A worker that died has its gauge files removed (``forget_process``) when the parent notices,
before its replacement starts: its last values would otherwise stay in the sum forever. A file
a starting worker has just created is still empty for a moment; prometheus-client would fail
the whole scrape on it (``struct.error``), so ``WorkerFiles`` leaves such files out.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from recsvc.core.config import Settings
from recsvc.core.errors import RecsvcError

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
HEADER_BYTES = 4  # a metrics file starts with how much of it is used


class WorkerFiles(MultiProcessCollector):
    """The sum of the workers' metric files, without the files a worker is creating now."""

    def __init__(self, registry: CollectorRegistry, path: str) -> None:
        super().__init__(registry, path=path)  # type: ignore[no-untyped-call]
        self.directory = path

    def collect(self) -> Iterable[Metric]:
        files = [f for f in glob.glob(os.path.join(self.directory, "*.db")) if _ready(f)]
        return self.merge(files, accumulate=True)  # type: ignore[no-untyped-call,no-any-return]


def _ready(path: str) -> bool:
    """Past its header (files only grow); a file removed meanwhile is not ready either."""
    try:
        return os.path.getsize(path) >= HEADER_BYTES
    except OSError:
        return False


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
        WorkerFiles(registry, multiproc_dir)
    with serving_registry(registry, settings.metrics_host or settings.host,
                          settings.metrics_port, "RECSVC_METRICS_PORT") as port:
        yield port


@contextmanager
def serving_registry(registry: CollectorRegistry, host: str, port: int,
                     setting: str) -> Iterator[int]:
    """Serve ``registry`` on ``host:port`` while the block runs; yields the bound port. A port
    that cannot be bound is one line naming ``setting``."""
    try:
        server, thread = start_http_server(port, host, registry)
    except OSError as exc:
        raise RecsvcError(f"cannot serve metrics on {host}:{port} ({setting}): "
                          f"{exc.strerror or exc}") from exc
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


def forget_process(pid: int, multiproc_dir: str) -> None:
    """Drop a dead worker's ``live*`` gauge files (its counters stay: they counted real work)."""
    mark_process_dead(pid, multiproc_dir)  # type: ignore[no-untyped-call]


def _shutdown(server: WSGIServer, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join(timeout=2)
