"""Load generator, run as its own process: grpc.aio with N calls in flight for a fixed time.

    python -m bench.serving.loadgen --target 127.0.0.1:50051 --concurrency 32 --seconds 10 \
        --customers 100000 [--batch 1000] [--channels 4]

Prints one JSON object: calls, errors (by status), throughput, latency percentiles (ms), the
client's own CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import time
from collections import Counter

import grpc
import grpc.aio

from recsvc.v1 import offers_pb2 as pb
from recsvc.v1 import offers_pb2_grpc as pb_grpc


def customer_id(i: int) -> str:
    return f"C{i:07d}"


async def run(args: argparse.Namespace) -> dict[str, object]:
    channels = [grpc.aio.insecure_channel(args.target,
                                          options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(args.channels)]
    stubs = [pb_grpc.RetentionOfferServiceStub(c) for c in channels]  # type: ignore[no-untyped-call]
    for channel in channels:
        await asyncio.wait_for(channel.channel_ready(), timeout=20)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    items = 0
    all_calls = 0  # warm-up included: what Redis saw
    rng = random.Random(1)
    warmup_end = time.perf_counter() + args.warmup
    end = warmup_end + args.seconds

    async def worker(n: int) -> None:
        nonlocal items, all_calls
        stub = stubs[n % len(stubs)]
        while True:
            now = time.perf_counter()
            if now >= end:
                return
            try:
                if args.batch:
                    ids = [customer_id(rng.randrange(args.customers)) for _ in range(args.batch)]
                    count = 0
                    async for _ in stub.RecommendBatch(
                            pb.RecommendBatchRequest(customer_ids=ids), timeout=30):
                        count += 1
                else:
                    await stub.Recommend(pb.RecommendRequest(
                        customer_id=customer_id(rng.randrange(args.customers))), timeout=5)
                    count = 1
                all_calls += 1
                if now >= warmup_end:
                    latencies.append(time.perf_counter() - now)
                    items += count
            except grpc.aio.AioRpcError as exc:
                if now >= warmup_end:
                    errors[exc.code().name] += 1

    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(*(worker(i) for i in range(args.concurrency)))
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    for channel in channels:
        await channel.close()
    latencies.sort()

    def pct(q: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 3) \
            if latencies else 0.0

    return {
        "calls": len(latencies), "calls_with_warmup": all_calls, "errors": dict(errors),
        "items": items,
        "calls_per_second": round(len(latencies) / args.seconds, 1),
        "items_per_second": round(items / args.seconds, 1),
        "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99),
        "client_cpu_seconds": round((cpu_after.ru_utime + cpu_after.ru_stime)
                                    - (cpu_before.ru_utime + cpu_before.ru_stime), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=0, help="ids per RecommendBatch call")
    parser.add_argument("--channels", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
