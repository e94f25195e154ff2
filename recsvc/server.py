"""Builds and runs the gRPC server: servicer, health, reflection, limits, graceful shutdown."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from concurrent import futures
from dataclasses import dataclass
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from recsvc import schema
from recsvc.config import Settings
from recsvc.interceptors import ConcurrencyLimitInterceptor, ErrorInterceptor
from recsvc.recommender import ModelHolder, Recommender
from recsvc.service import RetentionOfferServicer
from recsvc.store import RedisStore, Store, connect
from recsvc.v1 import offers_pb2 as pb
from recsvc.v1 import offers_pb2_grpc as pb_grpc
from recsvc.watcher import ModelWatcher

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RetentionOfferService"].full_name


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    watcher: ModelWatcher
    limiter: ConcurrencyLimitInterceptor

    def stop(self, grace: float) -> None:
        """Health goes NOT_SERVING, new calls are refused, in-flight calls get ``grace`` seconds."""
        self.health.enter_graceful_shutdown()
        self.watcher.stop()
        self.server.stop(grace).wait()


def make_grpc_server(settings: Settings, reuse_port: bool = False
                     ) -> tuple[grpc.Server, ConcurrencyLimitInterceptor]:
    """The server model and options every recsvc server uses (the benchmark's echo too)."""
    limiter = ConcurrencyLimitInterceptor(settings.max_concurrent_rpcs)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="rpc"),
        interceptors=[limiter, ErrorInterceptor()],
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ],
    )
    return server, limiter


def build_server(settings: Settings, store: Store, reuse_port: bool = False) -> RunningServer:
    """Create, bind and start a server; returns it with the bound port (0 picks a free one)."""
    holder = ModelHolder()
    recommender = Recommender(holder, store, settings.max_batch_ids, settings.batch_chunk)
    server, limiter = make_grpc_server(settings, reuse_port)
    pb_grpc.add_RetentionOfferServiceServicer_to_server(  # type: ignore[no-untyped-call]
        RetentionOfferServicer(recommender, holder, settings.default_deadline_ms / 1000.0), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection:
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    def on_health(model_loaded: bool, redis_ok: bool) -> None:
        # "" answers "can this instance answer?": yes once a model is in memory, even while
        # Redis is away (it then serves popularity). The service name also needs Redis.
        serving, not_serving = (health_pb2.HealthCheckResponse.SERVING,
                                health_pb2.HealthCheckResponse.NOT_SERVING)
        health_servicer.set("", serving if model_loaded else not_serving)
        health_servicer.set(SERVICE_NAME, serving if model_loaded and redis_ok else not_serving)

    watcher = ModelWatcher(store, holder, settings.model_poll_ms / 1000.0, on_health)
    watcher.check_once()  # start with the active model when there is one
    watcher.start()
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise OSError(f"cannot bind {settings.host}:{settings.port}")
    server.start()
    return RunningServer(server, port, health_servicer, watcher, limiter)


def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; with ``workers`` > 1, run that many processes on one port."""
    if settings.workers > 1:
        return _serve_workers(settings)
    return _serve_one(settings, reuse_port=os.environ.get("_RECSVC_WORKER") == "1")


def _serve_one(settings: Settings, reuse_port: bool) -> int:
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
    """N copies of this server sharing the port with SO_REUSEPORT; each pinned to a CPU if it can.

    The kernel balances connections (not requests) across processes: clients need several
    connections, or a balancer in front, to use every worker.
    """
    env = dict(os.environ, _RECSVC_WORKER="1", RECSVC_WORKERS="1",
               RECSVC_PORT=str(settings.port), RECSVC_HOST=settings.host)
    cpus = sorted(os.sched_getaffinity(0))
    children = []
    for i in range(settings.workers):
        child_env = dict(env, _RECSVC_CPU=str(cpus[i % len(cpus)]))
        children.append(subprocess.Popen([sys.executable, "-m", "recsvc", "serve"], env=child_env))

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return max(codes, default=0)


def pin_worker_cpu() -> None:
    """A worker started by ``_serve_workers`` runs on its own CPU (less cache and GIL churn)."""
    cpu = os.environ.get("_RECSVC_CPU")
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {int(cpu)})
        except OSError:
            log.warning("cannot pin worker to CPU %s", cpu)
