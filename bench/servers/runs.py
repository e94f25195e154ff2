"""One server under h2load: the check that it answers the request right, then timed runs with
the CPU seconds of server, client (h2load) and Redis.

Each run is one h2load process with ``-D seconds`` and no warm-up of its own (a warm-up run
comes first), so the server's and Redis's CPU deltas span the same window h2load counts its
requests in, give or take the connection setup (milliseconds).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bench.common import procs
from bench.servers import h2load
from recsvc.v1 import offers_pb2 as pb

PATH = "/recsvc.v1.RetentionOfferService/Recommend"


@dataclass(frozen=True)
class Shape:
    """Calls in flight as h2load makes them: connections x concurrent streams each."""

    connections: int
    streams: int

    @property
    def in_flight(self) -> int:
        return self.connections * self.streams


# 1, 32 and 256 in flight, as issue 17 measures them.
SHAPES = (Shape(1, 1), Shape(2, 16), Shape(16, 16))


def check_answer(port: int, message: bytes) -> dict[str, Any]:
    """One Recommend with ``message`` through grpcio: OK, and the size of the answer (h2load
    sees only HTTP statuses: a gRPC error is a 200 with an error trailer)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(PATH, request_serializer=None, response_deserializer=None)
        try:
            raw: bytes = call(message, timeout=10)
        except grpc.RpcError as exc:
            raise RuntimeError(f"Recommend on port {port} failed: {exc.code()} "
                               f"{exc.details()}") from None
    answer = pb.RecommendResponse.FromString(raw)
    return {"response_bytes": len(raw), "response_frame_bytes": len(raw) + 5,
            "offers": len(answer.offers), "strategy": pb.Strategy.Name(answer.strategy)}


class Meter:
    """Drives one running server: warm-up and timed h2load runs, CPU seconds per run."""

    def __init__(self, binary: str, port: int, server_pid: int, redis_pid: int, frame: Path,
                 client_cpus: str, expected_frame_bytes: int) -> None:
        self.binary, self.port, self.frame = binary, port, frame
        self.server_pid, self.redis_pid = server_pid, redis_pid
        self.client_cpus = client_cpus
        self.expected = expected_frame_bytes
        self.url = f"http://127.0.0.1:{port}{PATH}"

    def warm_up(self, seconds: float) -> None:
        if seconds > 0:
            h2load.run(self.binary, self.url, self.frame, 2, 16, seconds, self.client_cpus)

    def measure(self, shape: Shape, seconds: float, latencies: bool) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp, "requests.tsv") if latencies else None
            server0, redis0 = procs.cpu_seconds(self.server_pid), procs.cpu_seconds(self.redis_pid)
            switches0 = procs.context_switches(self.server_pid)
            started = time.perf_counter()
            result = h2load.run(self.binary, self.url, self.frame, shape.connections,
                                shape.streams, seconds, self.client_cpus, log)
            wall = time.perf_counter() - started
            server = procs.cpu_seconds(self.server_pid) - server0
            redis_cpu = procs.cpu_seconds(self.redis_pid) - redis0
            switches = [b - a for a, b in zip(switches0, procs.context_switches(self.server_pid),
                                              strict=True)]
        done = max(1, result["done"])
        result.update({
            "in_flight": shape.in_flight, "connections": shape.connections,
            "streams": shape.streams, "wall_seconds": round(wall, 3),
            "server_cpu_seconds": round(server, 3), "redis_cpu_seconds": round(redis_cpu, 3),
            "server_cpu_share": round(server / wall, 3),  # of one CPU (2 workers: up to 2)
            # Requests per CPU second over the process's whole life: h2load's own rate is over
            # its -D window, a hair shorter than ``wall``.
            "requests_per_server_cpu_second": round(done / server, 1) if server > 0 else None,
            "server_cpu_us_per_request": round(1e6 * server / done, 1),
            "client_cpu_us_per_request": round(1e6 * result["client_cpu_seconds"] / done, 1),
            # Blocking (sockets, locks, the GIL) and preemption: threads taking turns on a core.
            "server_voluntary_switches_per_request": round(switches[0] / done, 2),
            "server_involuntary_switches_per_request": round(switches[1] / done, 2),
        })
        # A gRPC error (say RESOURCE_EXHAUSTED past the concurrency cap) is an HTTP 200 without
        # the answer's DATA: fewer data bytes per request than the checked answer betrays it.
        per_request = result.get("data_bytes", 0) / max(1, result["succeeded"])
        result["short_answers"] = per_request < 0.99 * self.expected
        return result


def pin(pid: int, cpus: str) -> None:
    """Every thread of a running process onto ``cpus`` (Redis's background threads too)."""
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True,
                   capture_output=True)
