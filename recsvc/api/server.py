"""Builds and runs the gRPC server: servicer, health, reflection, limits, graceful shutdown.

The server is grpc.aio on an event loop of its own thread, so requests never wait for each other
on the GIL in the middle of a call (threads handing the GIL back and forth around every numpy
call and socket read cost more than the calls themselves; see docs/PERFORMANCE.md). The model
watcher keeps its own thread and blocking redis-py: loading a version must not stall the loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from recsvc.api import auth, tls
from recsvc.api.feedback import FeedbackDesk
from recsvc.api.guard import CallLimiter
from recsvc.api.handlers import SERVICE_NAME, add_servicer
from recsvc.api.http import app as http_face
from recsvc.api.service import RetentionOfferServicer
from recsvc.api.workers import RestartPolicy, check_can_listen, is_worker, run_workers
from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.core.errors import ListenError, SettingError
from recsvc.experiments.holdout import Holdout
from recsvc.ops import endpoint, metrics
from recsvc.serving.holder import ModelHolder
from recsvc.serving.recommender import Recommender
from recsvc.serving.watcher import ModelWatcher
from recsvc.store.events import EventLog
from recsvc.store.reader import RecordReader, RedisStore, connect
from recsvc.store.registry import eviction_risk

log = logging.getLogger(__name__)


def holdout_of(settings: Settings) -> Holdout:
    """The control group the settings describe (validated at start: one clear line)."""
    try:
        return Holdout.parse(settings.holdout_share, settings.holdout_segments,
                             settings.holdout_salt, settings.holdout_baseline)
    except ValueError as exc:
        raise SettingError(f"RECSVC_HOLDOUT_*: {exc}") from exc

# grpcio-health-checking's asyncio servicer (health.aio, which its type stubs do not declare).
AioHealthServicer: Any = health.aio.HealthServicer  # type: ignore[attr-defined]



class LoopThread:
    """An event loop running in a daemon thread; blocking code submits coroutines to it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Any, timeout: float | None = None) -> Any:
        """Run ``coroutine`` on the loop and wait for its result from this thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: Any  # AioHealthServicer
    watcher: ModelWatcher
    limiter: CallLimiter
    records: RecordReader
    loop: LoopThread
    recommender: Recommender  # its ``failures.counts`` say how many records were corrupt
    events: EventLog | None = None
    http: http_face.HttpFace | None = None  # the HTTP/JSON face, when RECSVC_HTTP_PORT is set

    _stopping: threading.Lock = field(default_factory=threading.Lock)

    def stop(self, grace: float) -> None:
        """Health goes NOT_SERVING, new calls are refused, in-flight calls get ``grace`` seconds.

        Safe to call more than once and from any thread other than the loop's.
        """
        with self._stopping:
            if self.loop.loop.is_closed():
                return
            self.watcher.stop()
            self.loop.run(self._stop(grace))
            self.loop.close()

    async def _stop(self, grace: float) -> None:
        await self.health.enter_graceful_shutdown()
        if self.http is not None:
            await self.http.stop()
        await self.server.stop(grace)
        await self.records.close()
        if self.events is not None:
            await self.events.close()


def make_grpc_server(settings: Settings, reuse_port: bool = False) -> grpc.aio.Server:
    """The server model and options every recsvc server uses (the benchmark's echo too).

    Call it on the loop that will run the server.
    """
    return grpc.aio.server(options=[
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ])


def build_server(settings: Settings, store: RedisStore, reuse_port: bool = False
                 ) -> RunningServer:
    """Create, bind and start a server on a loop thread; returns it with the bound port."""
    loop = LoopThread("grpc-loop")
    try:
        running: RunningServer = loop.run(_start(settings, store, reuse_port, loop), timeout=60)
    except BaseException:
        loop.close()
        raise
    return running


async def _start(settings: Settings, store: RedisStore, reuse_port: bool,
                 loop: LoopThread) -> RunningServer:
    holder = ModelHolder()
    records = RecordReader(store.keys, settings, store.breaker)
    recommender = Recommender(holder, records, settings.max_batch_ids, settings.batch_chunk,
                              holdout_of(settings), settings.decision_log,
                              settings.explore_share)
    limiter = CallLimiter(settings.max_concurrent_rpcs, auth.from_settings(settings.tokens_file))
    server = make_grpc_server(settings, reuse_port)
    events = EventLog(store.keys, settings)  # its own pipelined connection (longer timeout)
    servicer = RetentionOfferServicer(
        recommender, holder, settings.default_deadline_ms / 1000.0, limiter,
        batch_seconds_per_id=settings.batch_deadline_per_id_ms / 1000.0,
        feedback=FeedbackDesk.build(holder, events, settings))
    add_servicer(server, servicer)
    health_servicer = AioHealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection:
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    async def set_health(model_loaded: bool, redis_ok: bool, model_in_redis: bool) -> None:
        # "" answers "can this instance answer?": yes once a model is in memory, even while
        # Redis is away or the model vanished from it (it then serves popularity). The service
        # name also needs Redis, holding the model in memory.
        serving, not_serving = (health_pb2.HealthCheckResponse.SERVING,
                                health_pb2.HealthCheckResponse.NOT_SERVING)
        await health_servicer.set("", serving if model_loaded else not_serving)
        await health_servicer.set(
            SERVICE_NAME,
            serving if model_loaded and redis_ok and model_in_redis else not_serving)

    def on_health(model_loaded: bool, redis_ok: bool, model_in_redis: bool) -> None:
        # called from the watcher thread
        asyncio.run_coroutine_threadsafe(set_health(model_loaded, redis_ok, model_in_redis),
                                         loop.loop)

    watcher = ModelWatcher(store, holder, settings.model_poll_ms / 1000.0, on_health,
                           objective=settings.objective)
    # Start with the active model when there is one (blocking reads: off the loop).
    await asyncio.to_thread(watcher.check_once)
    watcher.start()
    try:
        port = tls.add_port(server, f"{settings.host}:{settings.port}", settings)
    except (RuntimeError, OSError) as exc:  # grpcio: "Failed to bind to address ..."
        raise ListenError(f"--port / RECSVC_PORT: cannot listen on {settings.host}:"
                          f"{settings.port} ({exc})") from None
    await server.start()
    face = None if settings.http_port < 0 else await http_face.start(  # the same servicer and loop
        servicer, limiter, settings, lambda: holder.current is not None, reuse_port)
    return RunningServer(server, port, health_servicer, watcher, limiter, records, loop,
                         recommender, events, http=face)


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
    store = RedisStore(connect(settings), schema.Keys(settings.key_prefix), settings)
    running = build_server(settings, store, reuse_port=reuse_port)
    log.info("recsvc listening on %s:%d (pid %d)", settings.host, running.port, os.getpid())
    stopped = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: graceful shutdown (grace %.1f s)", signum, settings.grace_seconds)
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stopped.wait()
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
