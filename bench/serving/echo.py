"""The yardstick: RetentionOfferService built exactly like the real server (same grpc.aio server
model and options, the same ``guarded`` wrapper) whose Recommend builds a response of the same
size (ten offers with ids, titles and scores) without reading Redis or scoring anything.

    python -m bench.serving.echo --port 50099 [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from recsvc.api.aio_server import make_grpc_server
from recsvc.api.guard import CallLimiter, guarded
from recsvc.api.handlers import add_servicer
from recsvc.api.workers import is_worker, pin_worker_cpu, run_workers
from recsvc.core.config import Settings
from recsvc.v1 import offers_pb2 as pb
from recsvc.v1 import offers_pb2_grpc as pb_grpc

IDS = [f"OFF{i:05d}" for i in range(10)]
TITLES = [f"Loyalty points #{i}" for i in range(10)]
SCORES = [2.0 - 0.1 * i for i in range(10)]


def echo_response(customer_id: str) -> pb.RecommendResponse:
    return pb.RecommendResponse(
        customer_id=customer_id, segment="at_risk", model_version="echo",
        strategy=pb.STRATEGY_PERSONALIZED,
        offers=[pb.RankedOffer(offer_id=i, title=t, score=s, rank=r)
                for r, (i, t, s) in enumerate(zip(IDS, TITLES, SCORES, strict=True), start=1)])


class EchoServicer(pb_grpc.RetentionOfferServiceServicer):
    def __init__(self, limiter: CallLimiter) -> None:
        self.limiter = limiter

    @guarded(pb.RecommendRequest)
    async def Recommend(self, request: pb.RecommendRequest, context: Any) -> pb.RecommendResponse:
        return echo_response(request.customer_id)

    @guarded(pb.RecommendBatchRequest)
    async def RecommendBatch(self, request: pb.RecommendBatchRequest, context: Any) -> None:
        for customer_id in request.customer_ids:
            await context.write(echo_response(customer_id))


async def run(port: int, reuse_port: bool) -> None:
    settings = Settings.from_env()
    server = make_grpc_server(settings, reuse_port=reuse_port)
    add_servicer(server, EchoServicer(CallLimiter(settings.max_concurrent_rpcs)))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    await stopped.wait()
    await server.stop(1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.workers > 1:
        return run_workers([sys.executable, "-m", "bench.serving.echo", "--port", str(args.port)],
                           dict(os.environ), args.workers)
    pin_worker_cpu()
    asyncio.run(run(args.port, reuse_port=is_worker()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
