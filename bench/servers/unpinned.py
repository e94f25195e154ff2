"""`python -m bench.servers.unpinned [--customers N] [--rounds R] [--seconds S]`: Recommend on
each server model with nothing pinned, one process free to run on every CPU and h2load on every
CPU too: what a single `recsvc serve` on a multi-core host does. The pinned comparison
(`python -m bench.servers`) measures a process confined to one CPU, as each `--workers` process
is; this one shows the other case that `RECSVC_SERVER_MODEL=auto` decides by. Prints one JSON
object: per model and concurrency, req/s and server CPU µs per request for each round.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bench import procs
from bench.__main__ import PREFIX, bench_train, dataset
from bench.servers import h2load
from bench.servers.plan import MAX_CONCURRENT_RPCS, customer_of
from recsvc.v1 import offers_pb2 as pb
from training import localredis

EVERY_CPU = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
PATH = "/recsvc.v1.RetentionOfferService/Recommend"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.servers.unpinned")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    binary = h2load.find()
    if binary is None:
        raise SystemExit("h2load missing: make h2load-bin")
    server = localredis.start()
    out: dict[str, Any] = {"cpus": EVERY_CPU, "load_average_before": os.getloadavg()[0]}
    try:
        bench_train(server.url, args.customers)
        message = pb.RecommendRequest(customer_id=customer_of(dataset(args.customers)),
                                      limit=10).SerializeToString()
        with tempfile.TemporaryDirectory() as tmp:
            frame = Path(tmp, "request.bin")
            frame.write_bytes(h2load.grpc_frame(message))
            for _ in range(args.rounds):
                for model in ("aio", "sync"):
                    _measure(out, model, binary, frame, server.url, args.seconds)
    finally:
        server.stop()
    out["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(out))
    return 0


def _measure(out: dict[str, Any], model: str, binary: str, frame: Path, url: str,
             seconds: int) -> None:
    port = localredis.free_port()
    env = dict(os.environ, RECSVC_REDIS_URL=url, RECSVC_KEY_PREFIX=PREFIX,
               RECSVC_LOG_LEVEL="WARNING", RECSVC_HOST="127.0.0.1", RECSVC_PORT=str(port),
               RECSVC_SERVER_MODEL=model, RECSVC_MAX_CONCURRENT_RPCS=MAX_CONCURRENT_RPCS)
    with procs.server(["recsvc", "serve"], env, port) as srv:
        target = f"http://127.0.0.1:{port}{PATH}"
        h2load.run(binary, target, frame, 2, 16, 1, EVERY_CPU)  # warm up
        for connections, streams in ((2, 16), (16, 16)):
            before = procs.cpu_seconds(srv.pid)
            run = h2load.run(binary, target, frame, connections, streams, seconds, EVERY_CPU)
            cpu = procs.cpu_seconds(srv.pid) - before
            out.setdefault(f"{model}, {connections * streams} in flight", []).append(
                {"requests_per_second": round(run["requests_per_second"]),
                 "server_cpu_us_per_request": round(1e6 * cpu / max(1, run["done"]))})


if __name__ == "__main__":
    raise SystemExit(main())
