"""Runs a recsvc server process: the server model the settings choose, signals, workers.

``build_server`` starts the model ``RECSVC_SERVER_MODEL`` names (``runtime.chosen_model`` for
"auto"): ``aio_server`` (grpc.aio, one event loop) or ``sync_server`` (grpc's thread pool, a
Redis connection per thread); both serve
the same servicer behaviour, health, limits and HTTP face. docs/PERFORMANCE.md ("Server model")
has the measurements that chose the default.
"""

from __future__ import annotations

import logging
import os
import sys

from recsvc.api.aio_server import RunningServer as AioRunningServer
from recsvc.api.aio_server import build_aio_server
from recsvc.api.runtime import chosen_model
from recsvc.api.sync_server import SyncRunningServer, build_sync_server
from recsvc.api.workers import RestartPolicy, check_can_listen, is_worker, run_workers
from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.core.stopping import SignalStop
from recsvc.ops import endpoint, metrics
from recsvc.store.control.registry import eviction_risk
from recsvc.store.reads.reader import RedisStore, connect

log = logging.getLogger(__name__)

RunningServer = AioRunningServer | SyncRunningServer


def build_server(settings: Settings, store: RedisStore, reuse_port: bool = False
                 ) -> RunningServer:
    """Create, bind and start a server of the configured model; returns it with its port."""
    model = chosen_model(settings.server_model)
    log.info("server model %s (RECSVC_SERVER_MODEL=%s)", model, settings.server_model)
    if model == "sync":
        return build_sync_server(settings, store, reuse_port)
    return build_aio_server(settings, store, reuse_port)


def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; with ``workers`` > 1, run that many processes on one port."""
    risk = eviction_risk(connect(settings, timeout_ms=1000))
    metrics.eviction_risk(risk is not None)  # alert on it: recsvc_redis_eviction_risk
    if risk:  # an allkeys-* policy can drop part of a live version (docs/DESIGN.md, 2)
        log.warning("%s", risk)
    if settings.workers > 1:
        return _serve_workers(settings)
    return _serve_one(settings, reuse_port=is_worker())


def _serve_one(settings: Settings, reuse_port: bool) -> int:
    if not reuse_port:
        check_can_listen(settings.host, settings.port)
    if is_worker():  # the parent serves the workers' metrics
        return _run_one(settings, reuse_port)
    with endpoint.serving(settings) as metrics_port:
        if metrics_port:
            log.info("metrics on port %d", metrics_port)
        return _run_one(settings, reuse_port)


def _run_one(settings: Settings, reuse_port: bool) -> int:
    store = RedisStore(connect(settings), schema.keys_for(settings), settings)
    running = build_server(settings, store, reuse_port=reuse_port)
    log.info("recsvc listening on %s:%d (pid %d)", settings.host, running.port, os.getpid())
    stopped = SignalStop().install()
    stopped.wait()
    log.info("%s: graceful shutdown (grace %.1f s)", stopped.signal_name, settings.grace_seconds)
    running.stop(settings.grace_seconds)
    return 0


def _serve_workers(settings: Settings) -> int:
    """N copies of this server sharing the port with SO_REUSEPORT.

    The kernel balances connections (not requests) across processes: clients need several
    connections, or a balancer in front, to use every worker.
    """
    check_can_listen(settings.host, settings.port)
    env = dict(os.environ, RECSVC_WORKERS="1", RECSVC_PORT=str(settings.port),
               RECSVC_HOST=settings.host)
    command = [sys.executable, "-m", "recsvc", "serve"]
    policy = RestartPolicy(max_deaths=settings.worker_max_deaths,
                           grace=settings.grace_seconds + 5.0)
    if not settings.metrics_port:
        return run_workers(command, env, settings.workers, policy)
    # Metrics of N processes: each writes files in a directory of this run, we serve the sum.
    with endpoint.multiprocess_dir() as directory, \
            endpoint.serving(settings, directory) as metrics_port:
        log.info("metrics of %d workers on port %d", settings.workers, metrics_port)
        env[endpoint.MULTIPROC_ENV] = directory
        return run_workers(command, env, settings.workers, policy)
