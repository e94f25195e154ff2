"""Load for the chaos scenarios: N calls in flight on a few channels, every outcome counted.

Runs on its own event loop in a thread (``Load.start``/``join``) so a scenario can inject a fault
while it runs. A call is *late* when it took longer than its deadline plus 50 ms; health is
probed alongside, and any health answer other than SERVING/NOT_SERVING is counted as rejected.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsvc.v1 import offers_pb2 as pb
from recsvc.v1 import offers_pb2_grpc as pb_grpc

LATE_MARGIN = 0.05


@dataclass
class Outcome:
    codes: Counter[str] = field(default_factory=Counter)
    strategies: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    late: int = 0
    health: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    mismatched: int = 0  # answers the check callback refused

    @property
    def calls(self) -> int:
        return sum(self.codes.values())

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies) or [0.0]

        def pct(q: float) -> float:
            return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

        return {"calls": self.calls, "codes": dict(self.codes), "late": self.late,
                "ok_per_second": round(self.codes.get("OK", 0) / max(self.seconds, 1e-9), 1),
                "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": round(1000 * ordered[-1], 1),
                "degraded": sum(v for k, v in self.strategies.items() if "DEGRADED" in k),
                "health": dict(self.health), "mismatched": self.mismatched,
                "internal_or_unknown": self.codes.get("INTERNAL", 0)
                + self.codes.get("UNKNOWN", 0)}


Request = Callable[[random.Random], pb.RecommendRequest]
Check = Callable[[pb.RecommendRequest, pb.RecommendResponse], bool]


class Load:
    def __init__(self, port: int, seconds: float, concurrency: int, request: Request,
                 deadline: float = 0.25, channels: int = 4, check: Check | None = None,
                 health_every: float = 0.1) -> None:
        self.port, self.seconds, self.concurrency = port, seconds, concurrency
        self.request, self.deadline, self.channels = request, deadline, channels
        self.check, self.health_every = check, health_every
        self.outcome = Outcome()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def join(self) -> Outcome:
        self._thread.join()
        return self.outcome

    async def _run(self) -> None:
        target = f"127.0.0.1:{self.port}"
        channels = [grpc.aio.insecure_channel(target,
                                              options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(self.channels)]
        stubs = [pb_grpc.RetentionOfferServiceStub(c) for c in channels]  # type: ignore[no-untyped-call]
        health = health_pb2_grpc.HealthStub(channels[0])
        out = self.outcome
        started = time.perf_counter()
        end = started + self.seconds

        async def worker(n: int) -> None:
            rng = random.Random(n)
            stub = stubs[n % len(stubs)]
            while time.perf_counter() < end:
                request = self.request(rng)
                t0 = time.perf_counter()
                try:
                    response = await stub.Recommend(request, timeout=self.deadline)
                    code = "OK"
                    out.strategies[pb.Strategy.Name(response.strategy)] += 1
                    if self.check is not None and not self.check(request, response):
                        out.mismatched += 1
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().name
                took = time.perf_counter() - t0
                out.codes[code] += 1
                out.latencies.append(took)
                if took > self.deadline + LATE_MARGIN:
                    out.late += 1

        async def prober() -> None:
            while time.perf_counter() < end:
                try:
                    answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    out.health[health_pb2.HealthCheckResponse.ServingStatus.Name(
                        answer.status)] += 1
                except grpc.aio.AioRpcError as exc:
                    out.health[f"rejected:{exc.code().name}"] += 1
                await asyncio.sleep(self.health_every)

        await asyncio.gather(prober(), *(worker(n) for n in range(self.concurrency)))
        out.seconds = time.perf_counter() - started
        for channel in channels:
            await channel.close()


def known_request(customers: int, unknown_share: float = 0.1) -> Request:
    def make(rng: random.Random) -> pb.RecommendRequest:
        if rng.random() < unknown_share:
            return pb.RecommendRequest(customer_id=f"new-{rng.randrange(10**9)}", limit=5)
        return pb.RecommendRequest(customer_id=f"C{rng.randrange(customers):07d}",
                                   limit=rng.choice((3, 5, 10)))
    return make
