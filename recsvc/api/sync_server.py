"""The thread-pool server model: grpc's synchronous server, a Redis connection per thread.

Each call runs on one thread of the pool from parse to response, at most ``sync_threads`` calls
at once (the others the cap admitted wait for a turn on their thread); its Redis reads block
that thread only (``BlockingRecordReader``: a connection per thread that worked). The
concurrency cap, token check, metrics and status table are ``guarded_sync``'s; health is grpc's
synchronous health servicer, updated by the model watcher's thread. The HTTP/JSON face (when
``RECSVC_HTTP_PORT`` is set) keeps aiohttp on an event loop of its own thread with the grpc.aio
servicer, sharing this server's model and breaker (and a cap of the same size of its own).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
import redis
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from redis.cluster import RedisCluster

from recsvc.api import auth, tls
from recsvc.api.aio_server import AioStack
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
from recsvc.api.sync_service import BlockingServicer
from recsvc.core.config import Settings
from recsvc.core.errors import ListenError
from recsvc.serving.blocking import BlockingRecommender
from recsvc.serving.holder import ModelHolder
from recsvc.serving.watcher import ModelWatcher
from recsvc.store.feedback.events import EventLog
from recsvc.store.reads.blocking_reader import BlockingRecordReader
from recsvc.store.reads.cluster_reader import blocking_record_reader
from recsvc.store.reads.reader import RedisStore, connect

log = logging.getLogger(__name__)

SPARE_THREADS = 4  # beyond the cap: refusing calls, health checks, reflection


@dataclass
class HttpSide:
    """The HTTP face on its own loop thread, with the grpc.aio servicer it calls."""

    loop: LoopThread
    stack: AioStack
    face: http_face.HttpFace

    def stop(self) -> None:
        self.loop.run(self.face.stop())
        self.loop.run(self.stack.close())
        self.loop.close()


@dataclass
class SyncRunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    watcher: ModelWatcher
    limiter: CallLimiter
    records: BlockingRecordReader
    recommender: BlockingRecommender  # its ``failures.counts`` say how many records were corrupt
    servicer: BlockingServicer  # what grpc calls (the bench times it in process)
    feedback_client: redis.Redis  # RecordFeedback's (redis-py)
    pool: ThreadPoolExecutor  # grpc.server's; grpc never shuts it down
    http_side: HttpSide | None = None

    _stopping: threading.Lock = field(default_factory=threading.Lock)
    _stopped: bool = False

    @property
    def http(self) -> http_face.HttpFace | None:
        """The HTTP/JSON face, when RECSVC_HTTP_PORT is set."""
        return None if self.http_side is None else self.http_side.face

    def stop(self, grace: float) -> None:
        """Health goes NOT_SERVING, new calls are refused, in-flight calls get ``grace`` seconds.
        Safe to call more than once and from any thread but the pool's (it waits for them)."""
        with self._stopping:
            if self._stopped:
                return
            self._stopped = True
            self.watcher.stop()
            self.health.enter_graceful_shutdown()
            if self.http_side is not None:
                self.http_side.stop()
            self.server.stop(grace).wait()
            # The threads end (calls past the grace are cancelled, their Redis calls bounded)
            # before their connections are closed.
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.records.close()
            if isinstance(self.feedback_client, RedisCluster):  # no one pool: one per node
                self.feedback_client.close()
            else:
                self.feedback_client.connection_pool.disconnect()


def build_sync_server(settings: Settings, store: RedisStore, reuse_port: bool = False
                      ) -> SyncRunningServer:
    """Create, bind and start a thread-pool server; returns it with the bound port."""
    holder = ModelHolder()
    limiter = CallLimiter(settings.max_concurrent_rpcs, auth.from_settings(settings.tokens_file),
                          working=settings.sync_threads)
    records = blocking_record_reader(store.keys, settings, store.breaker)
    recommender = BlockingRecommender(holder, records, settings.max_batch_ids,
                                      settings.batch_chunk, holdout_of(settings),
                                      decision_log_share(settings), settings.explore_share)
    events = EventLog(store.keys, settings)  # its keys and bounds; written with redis-py here
    feedback_client = connect(settings, timeout_ms=settings.feedback_timeout_ms)
    servicer = BlockingServicer(
        recommender, holder, settings.default_deadline_ms / 1000.0, limiter,
        settings.batch_deadline_per_id_ms / 1000.0, FeedbackDesk.build(holder, events, settings),
        feedback_client)
    # The cap is checked on a thread: a call waiting in the pool's queue is not counted, so
    # with fewer threads than the cap, calls beyond it queued without bound and health waited
    # behind them. Every call the cap admits gets a thread (at most sync_threads of them work
    # at once, the limiter's turns), plus spares for refusals, health and reflection (the pool
    # starts a thread only when none is idle).
    threads = max(settings.sync_threads, settings.max_concurrent_rpcs) + SPARE_THREADS
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc")
    server = grpc.server(pool, options=grpc_options(settings, reuse_port))
    add_servicer(server, servicer)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection:
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    def on_health(model_loaded: bool, redis_ok: bool, model_in_redis: bool) -> None:
        for service, status in health_statuses(model_loaded, redis_ok, model_in_redis):
            health_servicer.set(service, status)

    watcher = ModelWatcher(store, holder, settings.model_poll_ms / 1000.0, on_health,
                           objective=settings.objective)
    watcher.check_once()  # start with the active model when there is one
    watcher.start()
    try:
        port = tls.add_port(server, f"{settings.host}:{settings.port}", settings)
    except (RuntimeError, OSError) as exc:  # grpcio: "Failed to bind to address ..."
        watcher.stop()
        raise ListenError(f"--port / RECSVC_PORT: cannot listen on {settings.host}:"
                          f"{settings.port} ({exc})") from None
    server.start()
    running = SyncRunningServer(server, port, health_servicer, watcher, limiter, records,
                                recommender, servicer, feedback_client, pool)
    if settings.http_port >= 0:
        running.http_side = _http_side(settings, store, holder, reuse_port)
    return running


def _http_side(settings: Settings, store: RedisStore, holder: ModelHolder,
               reuse_port: bool) -> HttpSide:
    # A cap of its own: the aio guard counts on its loop without a lock, the threads with one.
    limiter = CallLimiter(settings.max_concurrent_rpcs, auth.from_settings(settings.tokens_file))
    loop = LoopThread("http-loop")
    stack = AioStack.build(settings, store, holder, limiter)
    face = loop.run(http_face.start(stack.servicer, limiter, settings,
                                    lambda: holder.current is not None, reuse_port), timeout=60)
    return HttpSide(loop, stack, face)
