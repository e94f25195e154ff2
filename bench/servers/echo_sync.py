"""The sync yardstick: RetentionOfferService on grpcio's synchronous ``grpc.server`` with a
ThreadPoolExecutor(8), the project's ``guarded_sync`` wrapper and raw-bytes registration
(``handlers.add_servicer``), answering the same ten-offer response as bench/serving/echo.py.

    python -m bench.servers.echo_sync --port 50098 [--workers 2] [--threads 8] [--redis-read]

With ``--redis-read`` each Recommend first makes the round trip Recommend makes (the customer's
record and live hash of the active version, one pipeline on the thread's own hiredis connection:
``ThreadPipelines``, ``state_commands``) and drops what it read: the floor of any server that
keeps the contract's one Redis round trip per call, without deciding anything.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc

from bench.serving.echo import echo_response
from recsvc.api.guard import CallLimiter, guarded_sync
from recsvc.api.handlers import add_servicer
from recsvc.api.workers import is_worker, pin_worker_cpu, run_workers
from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.core.stopping import SignalStop
from recsvc.store.reads.reader import connect, state_commands
from recsvc.store.transport.blocking_pipeline import ThreadPipelines
from recsvc.v1 import offers_pb2 as pb
from recsvc.v1 import offers_pb2_grpc as pb_grpc


class RoundTrip:
    """The Redis read of a Recommend, made and dropped (``--redis-read``)."""

    def __init__(self, settings: Settings) -> None:
        self.keys = schema.keys_for(settings)
        client = connect(settings)
        version = client.get(self.keys.active)
        client.close()
        if not version:
            raise SystemExit(f"--redis-read: no active model under {self.keys.active!r}")
        self.version = version.decode() if isinstance(version, bytes) else str(version)
        self.pipelines = ThreadPipelines(settings.redis_url)
        self.timeout = settings.redis_timeout_ms / 1000.0

    def read(self, customer_id: str) -> None:
        self.pipelines.execute_many(state_commands(self.keys, self.version, customer_id),
                                    self.timeout)


class SyncEchoServicer(pb_grpc.RetentionOfferServiceServicer):
    def __init__(self, limiter: CallLimiter, round_trip: RoundTrip | None = None) -> None:
        self.limiter = limiter
        self.round_trip = round_trip

    @guarded_sync(pb.RecommendRequest)
    def Recommend(self, request: pb.RecommendRequest,
                  context: grpc.ServicerContext) -> pb.RecommendResponse:
        if self.round_trip is not None:
            self.round_trip.read(request.customer_id)
        return echo_response(request.customer_id)

    @guarded_sync(pb.RecommendBatchRequest)
    def RecommendBatch(self, request: pb.RecommendBatchRequest,
                       context: grpc.ServicerContext) -> Iterator[pb.RecommendResponse]:
        for customer_id in request.customer_ids:
            yield echo_response(customer_id)


def serve(port: int, threads: int, reuse_port: bool, redis_read: bool = False) -> None:
    settings = Settings.from_env()
    round_trip = RoundTrip(settings) if redis_read else None
    server = grpc.server(ThreadPoolExecutor(max_workers=threads), options=[
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ])
    add_servicer(server, SyncEchoServicer(CallLimiter(settings.max_concurrent_rpcs), round_trip))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    SignalStop().install().wait()
    server.stop(1).wait()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.servers.echo_sync")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8, help="the thread pool's size")
    parser.add_argument("--redis-read", action="store_true",
                        help="make Recommend's one Redis round trip before answering")
    args = parser.parse_args()
    if args.workers > 1:
        return run_workers([sys.executable, "-m", "bench.servers.echo_sync", "--port",
                            str(args.port), "--threads", str(args.threads),
                            *(["--redis-read"] if args.redis_read else [])],
                           dict(os.environ), args.workers)
    pin_worker_cpu()
    serve(args.port, args.threads, reuse_port=is_worker(), redis_read=args.redis_read)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
