"""Where a Recommend call's server CPU goes: py-spy samples a running `recsvc serve` under h2load.

`python -m bench.serving.where [--model aio|sync | --ceiling | --floor] [--seconds 10]
[--customers 20000]`

One `recsvc serve` (decision log on, as shipped) with all its threads on CPU 0, h2load on CPU 1
sending the same Recommend at 32 in flight (2 connections x 16 streams) while py-spy samples
the server without pausing it, keeping only the samples of the thread holding the GIL
(``--gil``): that is the Python CPU time, the part our code and grpc's Python layer spend. Each
sample is charged to the first stage its stack reaches, innermost frame first (a Redis read
inside the decision core is the Redis read). The server's whole CPU (from /proc) minus the
GIL-held time is what ran outside the GIL: grpc's C core, the kernel's network stack. Prints
one JSON object: microseconds of server CPU per call, by stage. ``--ceiling`` samples
bench/servers/ceiling.py (the sync server with its decision replayed) instead, ``--floor`` the
sync echo making Recommend's Redis read (bench/servers/echo_sync.py --redis-read).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.__main__ import PREFIX, bench_train, dataset
from bench.common import procs
from bench.servers.plan import customer_of
from bench.serving.http import PATH, h2load
from recsvc.v1 import offers_pb2 as pb
from training import localredis

# (stage, substrings of a frame "function (file)") in the order a frame is tested.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("redis read/write", ("blocking_pipeline.py", "redis_pipeline.py", "blocking_reader.py",
                          "reader.py")),
    ("request parse", ("guard.py:parse", "parse (recsvc/api/guard.py",
                       "FromString")),
    ("validation", ("questions.py",)),
    ("record decode", ("decode (recsvc/serving/deciding.py", "schema.py", "foldin.py")),
    ("scoring", ("ranking.py",)),
    ("rules, objective, top-k", ("decisioning/",)),
    ("holdout, log entry", ("experiments/",)),
    ("response building", ("to_response", "SerializeToString")),
    ("metrics, logs", ("recsvc/ops/", "prometheus_client", "structlog")),
    ("decision core (other)", ("serving/",)),
    ("servicer and guard (other)", ("recsvc/api/",)),
    ("grpc (server loop, HTTP/2, threads)", ("grpc", "cygrpc", "_server.py", "concurrent/futures",
                                             "asyncio", "threading.py")),
]
RATE = 200  # samples per second
IDLE = ("epoll_wait", "select (", "wait (threading.py", "_worker (concurrent",
        "poll_events", "_run_once")


def stage_of(stack: str) -> str:
    frames = stack.split(";")[::-1]  # innermost first
    for frame in frames:
        for stage, needles in STAGES:
            if any(n in frame for n in needles):
                return stage
    return "other (interpreter, libc)"


def is_idle(stack: str) -> bool:
    innermost = stack.split(";")[-1:]
    return any(n in f for f in innermost for n in IDLE) and "recsvc" not in stack


def breakdown(raw: str) -> dict[str, Any]:
    counts: collections.Counter[str] = collections.Counter()
    idle = 0
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        if is_idle(stack):
            idle += int(n)
            continue
        counts[stage_of(stack)] += int(n)
    busy = sum(counts.values())
    return {"busy_samples": busy, "idle_samples": idle,
            "share": {k: round(v / busy, 3) for k, v in counts.most_common()}}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["aio", "sync"], default="aio")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--keep", type=Path, help="also write the raw stacks here")
    other = parser.add_mutually_exclusive_group()
    other.add_argument("--ceiling", action="store_true",
                       help="sample the sync server with its decision replayed instead "
                            "(bench/servers/ceiling.py)")
    other.add_argument("--floor", action="store_true",
                       help="sample the floor instead (the sync echo making Recommend's Redis "
                            "read: bench/servers/echo_sync.py --redis-read)")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists() or shutil.which("h2load") is None:
        raise SystemExit("needs py-spy (pip install py-spy) and h2load (make h2load-bin)")
    server = localredis.start()
    try:
        bench_train(server.url, args.customers)
        port = localredis.free_port()
        env = dict(os.environ, RECSVC_REDIS_URL=server.url, RECSVC_KEY_PREFIX=PREFIX,
                   RECSVC_LOG_LEVEL="WARNING", RECSVC_HOST="127.0.0.1", RECSVC_PORT=str(port),
                   RECSVC_SERVER_MODEL=args.model)
        command = (["bench.servers.ceiling", "--port", str(port)] if args.ceiling else
                   ["bench.servers.echo_sync", "--redis-read", "--port", str(port)]
                   if args.floor else ["recsvc", "serve"])
        with procs.server(command, env, port) as srv, \
                tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["taskset", "-apc", "0", str(srv.pid)], check=True,
                           capture_output=True)
            # A published customer (ids are C0000000...): an unknown id would profile the
            # global-popularity fallback instead of a personal decision.
            customer = customer_of(dataset(args.customers))
            message = pb.RecommendRequest(customer_id=customer, limit=10).SerializeToString()
            frame = Path(tmp, "req.bin")
            frame.write_bytes(b"\0" + len(message).to_bytes(4, "big") + message)
            target = ["-H", "content-type: application/grpc", "-H", "te: trailers", "-d",
                      str(frame), f"http://127.0.0.1:{port}{PATH}"]
            h2load(["-n", "3000", "-c", "2", "-m", "16", "-t", "1", *target])  # warm up
            out = Path(tmp, "stacks.txt")
            spy_run = subprocess.Popen(
                ["taskset", "-c", "1", spy, "record", "--pid", str(srv.pid), "--gil",
                 "--nonblocking", "--rate", str(RATE), "--duration", str(args.seconds),
                 "--format", "raw", "--output", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            cpu_before = procs.cpu_seconds(srv.pid)
            load = h2load(["-D", str(max(args.seconds - 1, 1)), "-c", "2", "-m", "16",
                           "-t", "1", *target])
            cpu = procs.cpu_seconds(srv.pid) - cpu_before
            spy_run.wait(timeout=args.seconds + 60)
            if args.keep:
                shutil.copy(out, args.keep)
            result = breakdown(out.read_text())
    finally:
        server.stop()
    calls = load["requests_per_second"] * max(args.seconds - 1, 1)
    gil_seconds = result["busy_samples"] / RATE
    per_call = {stage: round(share * gil_seconds / calls * 1e6, 1)
                for stage, share in result.pop("share").items()}
    print(json.dumps({
        "model": "ceiling (sync)" if args.ceiling else "floor (sync echo + read)"
        if args.floor else args.model,
        "calls_per_second": load["requests_per_second"],
        "server_cpu_us_per_call": round(cpu / calls * 1e6, 1),
        "gil_held_us_per_call": round(gil_seconds / calls * 1e6, 1),
        "outside_gil_us_per_call": round((cpu - gil_seconds) / calls * 1e6, 1),
        "gil_us_per_call_by_stage": per_call, **result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
