"""The plan of `python -m bench.servers`: which servers, in which order, on which CPUs.

Every server process (all its threads: ``taskset`` before exec) runs on CPU 0; h2load and Redis
on CPU 1. The same Recommend request bytes for all (a real customer of the bench data), at 1
(1 connection x 1 stream), 32 (2 x 16) and 256 (16 x 16) in flight, in alternating rounds
(each round starts every server afresh, in a rotated order). Then ``recsvc serve --workers 2``
on both CPUs against 1 worker, with CPU accounting in place of a separate core for the client
(docs/PERFORMANCE.md, "Server models under h2load", says why and how).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import procs
from bench.servers import h2load, report, runs
from recsvc.core.config import Settings
from recsvc.v1 import offers_pb2 as pb
from training import localredis

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "servers.json"
SERVER_CPUS, CLIENT_CPUS, BOTH_CPUS = "0", "1", "0,1"
# Above the 256 in flight of the largest shape: a capped call answers RESOURCE_EXHAUSTED at
# once, which h2load would count as a fast success.
MAX_CONCURRENT_RPCS = "1024"
NO_LOG = "_without_log"  # suffix of a Recommend target run with RECSVC_DECISION_LOG=0
CEILING = "ceiling_sync"  # the sync server with its decision replayed (`--ceiling`)


@dataclass(frozen=True)
class Target:
    key: str
    command: list[str]  # after `python -m`; the port is appended by ``start``
    env: dict[str, str]

    def args(self, port: int) -> tuple[list[str], dict[str, str]]:
        if self.command[0] == "recsvc":
            return self.command, dict(self.env, RECSVC_PORT=str(port))
        return [*self.command, "--port", str(port)], self.env


def server_models() -> tuple[str, ...]:
    """The server models `recsvc serve` knows: ``RECSVC_SERVER_MODEL`` exists or not yet."""
    known = {f.name for f in dataclasses.fields(Settings)}
    return ("aio", "sync") if "server_model" in known else ("aio",)


def targets(env: dict[str, str], sync_threads: int | None,
            models: tuple[str, ...] | None = None, log_cost: bool = False,
            ceiling: bool = False) -> tuple[list[Target], dict[str, str]]:
    """The servers to measure, and the ones skipped with the reason; ``models``: the server
    models recsvc knows (default: asked of its Settings); ``ceiling``: also the sync server
    with its decision replayed (bench/servers/ceiling.py)."""
    models = server_models() if models is None else models
    found = [Target("echo_sync", ["bench.servers.echo_sync"], env),
             Target("echo_aio", ["bench.serving.echo"], env),
             Target("echo_sync_redis", ["bench.servers.echo_sync", "--redis-read"], env)]
    skipped = {}
    for model in ("aio", "sync"):  # as str: Settings may not know them yet
        if model not in models:
            skipped[f"recommend_{model}"] = ("recsvc serve has no RECSVC_SERVER_MODEL setting "
                                             "yet (only grpc.aio on this commit)")
            continue
        extra: dict[str, str] = {"RECSVC_SERVER_MODEL": model} if len(models) > 1 else {}
        if model == "sync" and sync_threads:
            extra["RECSVC_SYNC_THREADS"] = str(sync_threads)
        found.append(Target(f"recommend_{model}", ["recsvc", "serve"], dict(env, **extra)))
        if log_cost:  # the same server without the decision log: what logging costs
            found.append(Target(f"recommend_{model}{NO_LOG}", ["recsvc", "serve"],
                                dict(env, RECSVC_DECISION_LOG="0", **extra)))
    if ceiling:
        threads = {"RECSVC_SYNC_THREADS": str(sync_threads)} if sync_threads else {}
        found.append(Target(CEILING, ["bench.servers.ceiling"], dict(env, **threads)))
        if log_cost:
            found.append(Target(CEILING + NO_LOG, ["bench.servers.ceiling"],
                                dict(env, RECSVC_DECISION_LOG="0", **threads)))
    return found, skipped


def customer_of(data: Path) -> str:
    """The first customer id of the bench data's customers.csv: a real, published one."""
    with (data / "customers.csv").open(newline="") as f:
        return next(csv.DictReader(f))["customer_id"]


def _answer(port: int, message: bytes, timeout: float = 30) -> dict[str, Any]:
    # Recommend answers once the model version has loaded, a moment after the port opens.
    deadline = time.monotonic() + timeout
    while True:
        try:
            return runs.check_answer(port, message)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


def _session(target: Target, workers: int, cpus: str, client_cpus: str, ctx: dict[str, Any],
             shapes: tuple[runs.Shape, ...], seconds: float, warmup: float
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Start ``target`` on ``cpus``, check its answer, run every shape; stop it."""
    port = localredis.free_port()
    args, env = target.args(port)
    if workers > 1:
        args = [*args, "--workers", str(workers)]
    with procs.server(args, env, port, cpus=cpus) as server:
        info = _answer(port, ctx["message"])
        info["cpus_allowed"] = sorted(procs.cpus_allowed(server.pid))
        meter = runs.Meter(ctx["h2load"], port, server.pid, ctx["redis_pid"], ctx["frame"],
                           client_cpus, info["response_frame_bytes"])
        meter.warm_up(warmup)
        measured = []
        for shape in shapes:
            result = meter.measure(shape, seconds, latencies=shape.in_flight == 1)
            result.update(target=target.key, workers=workers)
            measured.append(result)
            print(f"   {target.key:15} w{workers} {shape.in_flight:>3} in flight: "
                  f"{result['requests_per_second']:>9,.0f} req/s, server "
                  f"{result['server_cpu_seconds']:.2f} s CPU, h2load "
                  f"{result['client_cpu_seconds']:.2f} s", flush=True)
    return info, measured


def base_env(url: str) -> dict[str, str]:
    return dict(os.environ, RECSVC_REDIS_URL=url, RECSVC_KEY_PREFIX="bench",
                RECSVC_LOG_LEVEL="WARNING", RECSVC_HOST="127.0.0.1",
                RECSVC_MAX_CONCURRENT_RPCS=MAX_CONCURRENT_RPCS)


def run(url: str, redis_pid: int, data: Path, seconds: float, rounds: int, warmup: float = 1.0,
        sync_threads: int | None = None, workers_check: bool = True,
        extra: list[Target] | None = None, log_cost: bool = False,
        ceiling: bool = False) -> dict[str, Any]:
    """Every target (and ``extra``: an earlier commit's) in ``rounds`` rotated rounds, then 2
    workers vs 1; the results dict."""
    binary = h2load.find()
    if binary is None:
        raise SystemExit("h2load missing: run `make h2load-bin` (installs nghttp2-client)")
    env = base_env(url)
    found, skipped = targets(env, sync_threads, log_cost=log_cost, ceiling=ceiling)
    found += extra or []
    customer = customer_of(data)
    message = pb.RecommendRequest(customer_id=customer, limit=10).SerializeToString()
    out: dict[str, Any] = {
        "seconds": seconds, "rounds": rounds, "warmup_seconds": warmup, "customer_id": customer,
        "request_frame_bytes": len(message) + 5, "server_cpus": SERVER_CPUS,
        "client_cpus": CLIENT_CPUS, "max_concurrent_rpcs": int(MAX_CONCURRENT_RPCS),
        "h2load": binary, "targets": {}, "skipped": skipped, "runs": [],
        "settings": {t.key: {k: v for k, v in t.env.items()
                             if k.startswith("RECSVC_") and k != "RECSVC_REDIS_URL"}
                     for t in found}}
    out["load_average_before"] = round(os.getloadavg()[0], 2)
    runs.pin(redis_pid, CLIENT_CPUS)
    with tempfile.TemporaryDirectory() as tmp:
        frame = Path(tmp, "request.bin")
        frame.write_bytes(h2load.grpc_frame(message))
        ctx = {"h2load": binary, "redis_pid": redis_pid, "frame": frame, "message": message}
        for number in range(rounds):
            order = found[number % len(found):] + found[:number % len(found)]
            print(f"-- round {number + 1} of {rounds}: {', '.join(t.key for t in order)}",
                  flush=True)
            for target in list(order):
                if target.key in skipped:
                    continue
                try:
                    info, measured = _session(target, 1, SERVER_CPUS, CLIENT_CPUS, ctx,
                                              runs.SHAPES, seconds, warmup)
                except RuntimeError as exc:
                    if target.key != "recommend_sync":
                        raise
                    skipped[target.key] = f"recsvc serve with RECSVC_SERVER_MODEL=sync: {exc}"
                    print(f"   skipped {target.key}: {exc}", flush=True)
                    continue
                out["targets"].setdefault(target.key, info)
                out["runs"] += [dict(r, round=number + 1) for r in measured]
            if workers_check:
                # 2 workers, one per CPU; h2load and Redis on both CPUs too (see the docs).
                runs.pin(redis_pid, BOTH_CPUS)
                try:
                    for target in found:
                        if target.key in ("recommend_aio", "recommend_sync") and \
                                target.key not in skipped:
                            _, measured = _session(target, 2, BOTH_CPUS, BOTH_CPUS, ctx,
                                                   (runs.SHAPES[-1],), seconds, warmup)
                            out["runs"] += [dict(r, round=number + 1) for r in measured]
                finally:
                    runs.pin(redis_pid, CLIENT_CPUS)
    out["load_average_after"] = round(os.getloadavg()[0], 2)
    return out


def publish(results: dict[str, Any], out: Path, docs: bool) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    if docs:
        report.write(results, ROOT / "docs" / "PERFORMANCE.md")
    print(report.tables(results))
