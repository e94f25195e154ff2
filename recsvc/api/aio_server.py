"""The grpc.aio server model: servicer, health, reflection, limits, graceful shutdown.

The server is grpc.aio on an event loop of its own thread, so requests never wait for each other
on the GIL in the middle of a call. The model watcher keeps its own thread and blocking
redis-py: loading a version must not stall the loop. The HTTP/JSON face shares the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import grpc.aio
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from recsvc.api import auth, tls
from recsvc.api.feedback import FeedbackDesk
from recsvc.api.guard import CallLimiter
from recsvc.api.handlers import SERVICE_NAME, add_servicer
from recsvc.api.http import app as http_face
from recsvc.api.runtime import (
    LoopThread,
    decision_log_share,
    grpc_options,
    health_statuses,
    holdout_of,
)
from recsvc.api.service import RetentionOfferServicer
from recsvc.core.config import Settings
from recsvc.core.errors import ListenError
from recsvc.serving.holder import ModelHolder
from recsvc.serving.recommender import Recommender
from recsvc.serving.watcher import ModelWatcher
from recsvc.store.feedback.events import EventLog
from recsvc.store.reads.cluster_reader import record_reader
from recsvc.store.reads.reader import RecordReader, RedisStore

log = logging.getLogger(__name__)


# grpcio-health-checking's asyncio servicer (health.aio, which its type stubs do not declare).
AioHealthServicer: Any = health.aio.HealthServicer  # type: ignore[attr-defined]



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


@dataclass
class AioStack:
    """The grpc.aio servicer and what it reads and writes with: the gRPC server's in the aio
    model, the HTTP face's in both."""

    records: RecordReader
    recommender: Recommender
    events: EventLog
    servicer: RetentionOfferServicer

    @classmethod
    def build(cls, settings: Settings, store: RedisStore, holder: ModelHolder,
              limiter: CallLimiter) -> AioStack:
        records = record_reader(store.keys, settings, store.breaker)
        recommender = Recommender(holder, records, settings.max_batch_ids, settings.batch_chunk,
                                  holdout_of(settings), decision_log_share(settings),
                                  settings.explore_share)
        events = EventLog(store.keys, settings)  # its own pipelined connection (longer timeout)
        servicer = RetentionOfferServicer(
            recommender, holder, settings.default_deadline_ms / 1000.0, limiter,
            batch_seconds_per_id=settings.batch_deadline_per_id_ms / 1000.0,
            feedback=FeedbackDesk.build(holder, events, settings))
        return cls(records, recommender, events, servicer)

    async def close(self) -> None:
        await self.records.close()
        await self.events.close()


def make_grpc_server(settings: Settings, reuse_port: bool = False) -> grpc.aio.Server:
    """The server model and options every recsvc server uses (the benchmark's echo too).

    Call it on the loop that will run the server.
    """
    return grpc.aio.server(options=grpc_options(settings, reuse_port))


def build_aio_server(settings: Settings, store: RedisStore, reuse_port: bool = False
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
    limiter = CallLimiter(settings.max_concurrent_rpcs, auth.from_settings(settings.tokens_file))
    stack = AioStack.build(settings, store, holder, limiter)
    server = make_grpc_server(settings, reuse_port)
    add_servicer(server, stack.servicer)
    health_servicer = AioHealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection:
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    async def set_health(model_loaded: bool, redis_ok: bool, model_in_redis: bool) -> None:
        for service, status in health_statuses(model_loaded, redis_ok, model_in_redis):
            await health_servicer.set(service, status)

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
        stack.servicer, limiter, settings, lambda: holder.current is not None, reuse_port)
    return RunningServer(server, port, health_servicer, watcher, limiter, stack.records, loop,
                         stack.recommender, stack.events, http=face)
