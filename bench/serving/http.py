"""`python -m bench.serving.http [--customers N] [--requests R]`: Recommend over HTTP/JSON vs
gRPC, one server process, both driven by h2load (Debian's nghttp2-client).

One `recsvc serve` with RECSVC_HTTP_PORT, pinned to CPU 0 (all its threads); h2load on CPU 1.
gRPC: HTTP/2, 2 connections x 16 streams; HTTP/JSON: HTTP/1.1 (`--h1`), 32 connections;
then both at one request in flight for the latency. Every request asks for the same customer
(h2load sends one body). Prints one JSON line; alternate runs: this host's noise is +-20%.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.__main__ import PREFIX, bench_train, dataset
from bench.common import procs
from bench.servers import h2load as servers_h2load
from bench.servers.plan import customer_of
from recsvc.v1 import offers_pb2 as pb
from training import localredis

PATH = "/recsvc.v1.RetentionOfferService/Recommend"


def h2load(args: list[str], percentiles: bool = False) -> dict[str, float]:
    """One h2load run on CPU 1; with ``percentiles`` also p50/p99 from its per-request log."""
    binary = servers_h2load.find()
    if binary is None:
        raise SystemExit("h2load missing: make h2load-bin")
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp, "requests.tsv")
        logging = ["--log-file", str(log)] if percentiles else []
        out = subprocess.run(["taskset", "-c", "1", binary, *logging, *args],
                             capture_output=True, text=True, check=True).stdout
        summary = servers_h2load.parse(out)
        result = {k: summary[k] for k in ("requests_per_second", "succeeded", "mean_ms")}
        if percentiles:
            latencies = servers_h2load.log_latencies(log.read_text())
            result["p50_ms"] = round(servers_h2load.percentile(latencies, 0.50), 3)
            result["p99_ms"] = round(servers_h2load.percentile(latencies, 0.99), 3)
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if servers_h2load.find() is None:
        raise SystemExit("h2load missing: make h2load-bin")
    server = localredis.start()
    try:
        bench_train(server.url, args.customers)
        port, http_port = localredis.free_port(), localredis.free_port()
        env = dict(os.environ, RECSVC_REDIS_URL=server.url, RECSVC_KEY_PREFIX=PREFIX,
                   RECSVC_LOG_LEVEL="WARNING", RECSVC_HOST="127.0.0.1",
                   RECSVC_PORT=str(port), RECSVC_HTTP_PORT=str(http_port),
                   RECSVC_DECISION_LOG="0")
        with procs.server(["recsvc", "serve"], env, port) as srv, \
                tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["taskset", "-apc", "0", str(srv.pid)], check=True,
                           capture_output=True)
            time.sleep(1.0)
            customer = customer_of(dataset(args.customers))  # a real one (ids are C0000000...)
            message = pb.RecommendRequest(customer_id=customer, limit=10).SerializeToString()
            frame = Path(tmp, "req.bin")
            frame.write_bytes(b"\0" + len(message).to_bytes(4, "big") + message)
            body = Path(tmp, "req.json")
            body.write_text(json.dumps({"customerId": customer, "limit": 10}))
            grpc_args = ["-H", "content-type: application/grpc", "-H", "te: trailers",
                         "-d", str(frame), f"http://127.0.0.1:{port}{PATH}"]
            http_args = ["--h1", "-H", "content-type: application/json", "-d", str(body),
                         f"http://127.0.0.1:{http_port}{PATH}"]
            rounds: list[dict[str, Any]] = []
            for _ in range(args.rounds):  # alternate: the host's noise hits both alike
                rounds.append({
                    "grpc": h2load(["-n", str(args.requests), "-c", "2", "-m", "16", "-t", "1",
                                    *grpc_args]),
                    "http_json": h2load(["-n", str(args.requests), "-c", "32", "-t", "1",
                                         *http_args]),
                    "grpc_1_in_flight": h2load(["-n", "2000", "-c", "1", "-m", "1",
                                                *grpc_args], percentiles=True),
                    "http_json_1_in_flight": h2load(["-n", "2000", "-c", "1", *http_args],
                                                    percentiles=True),
                })
    finally:
        server.stop()
    ratio = [r["http_json"]["requests_per_second"] / r["grpc"]["requests_per_second"]
             for r in rounds]
    print(json.dumps({"rounds": rounds, "http_over_grpc": [round(x, 2) for x in ratio]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
