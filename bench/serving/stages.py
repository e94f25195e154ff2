"""What one sync Recommend costs in process, stage by stage, against the echo and the floor.

`python -m bench.serving.stages [--customers 20000] [--calls 5000]`

No gRPC and no load: one thread calls the thread-pool servicer's ``Recommend`` with the request
bytes and a stand-in context, against a throwaway redis-server holding the bench data (moved to
the other CPU when there is one). Each stage is timed alone in a loop of ``--calls`` calls, five
times (the median is printed), in CPU time of the calling thread (``time.thread_time_ns``: time
blocked on Redis is not counted, the syscalls are). Beside them: the bare echo's response
(``bench.serving.echo.echo_response``, serialized) and the floor's body (the same plus
Recommend's Redis round trip, ``echo_sync --redis-read``). Under h2load every part costs more
(caches shared with grpc, the kernel and the other threads; docs/PERFORMANCE.md, "What 70% of
the echo leaves for deciding"); this is the price of each part when nothing else runs. The
settle loop's log writes are sent without their replies being read (serving reads each before
the thread's next read), so that stage is a little below its price in serving.
Prints one JSON object: microseconds of CPU per call.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any, cast

import grpc

from bench.__main__ import PREFIX, bench_train, dataset
from bench.servers.echo_sync import RoundTrip
from bench.servers.plan import customer_of
from bench.serving.echo import echo_response
from recsvc.api.guard import _SyncCall, parse
from recsvc.api.service import question_of, to_response
from recsvc.api.sync_server import SyncRunningServer, build_sync_server
from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.store.reads.reader import RedisStore, connect
from recsvc.v1 import offers_pb2 as pb
from training import localredis


class Context:
    """What the servicer asks of grpc's context: no metadata, no deadline."""

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def time_remaining(self) -> None:
        return None

    def abort(self, code: Any, message: str) -> None:
        raise RuntimeError(f"{code}: {message}")


def cpu_us(call: Callable[[], object], calls: int) -> float:
    """Median over five loops of ``calls`` calls: CPU µs per call of this thread."""
    for _ in range(max(1, calls // 10)):
        call()
    loops = []
    for _ in range(5):
        started = time.thread_time_ns()
        for _ in range(calls):
            call()
        loops.append((time.thread_time_ns() - started) / calls / 1000)
    return round(statistics.median(loops), 1)


def measure(url: str, prefix: str, customer: str, calls: int) -> dict[str, Any]:
    """Every part's CPU µs per call, for ``customer`` of the model published under ``prefix``:
    the parts of the sync server ``recsvc serve`` builds (its grpc port stays idle)."""
    settings = Settings(redis_url=url, key_prefix=prefix, host="127.0.0.1", port=0,
                        server_model="sync")
    running = build_sync_server(settings, RedisStore(connect(settings),
                                                     schema.keys_for(settings), settings))
    try:
        # Nothing else runs while the stages are timed: no grpc poller, no watcher polls.
        running.server.stop(0).wait()
        running.watcher.stop()
        return _measure(running, settings, customer, calls)
    finally:
        running.stop(0)


def _measure(running: SyncRunningServer, settings: Settings, customer: str,
             calls: int) -> dict[str, Any]:
    servicer, recommender = running.servicer, running.recommender
    limiter, records = running.limiter, running.records
    context = cast(grpc.ServicerContext, Context())
    serialize = pb.RecommendResponse.SerializeToString
    raw = pb.RecommendRequest(customer_id=customer, limit=10).SerializeToString()
    request = parse(pb.RecommendRequest, raw)
    question = question_of(request)
    d, ask, challenger = recommender.begin(question)
    far = time.monotonic() + 1e6
    state = records.customer_state(d.version, customer, far, "")
    _, answer = recommender.decided(d, ask, question.segment, state, challenger)
    response = to_response(answer)
    floor = RoundTrip(settings)

    def floor_body() -> bytes:
        floor.read(customer)
        return serialize(echo_response(customer))

    tables = d.tables_named(answer.segment) if answer.segment else None
    return {
        "customer": customer, "strategy": answer.strategy,
        "offers_in_segment": None if tables is None else len(tables.model.offers),
        "answer_bytes": len(serialize(response)),
        "echo_response": cpu_us(lambda: serialize(echo_response(customer)), calls),
        "floor_body": cpu_us(floor_body, calls),
        "recommend_handler": cpu_us(lambda: serialize(servicer.Recommend(raw, context)), calls),
        "stages": {
            "guard (token, cap, metrics, request id)":
                cpu_us(lambda: _SyncCall(limiter, context, "Recommend").finish(), calls),
            "parse and question": cpu_us(lambda: question_of(parse(pb.RecommendRequest, raw)),
                                         calls),
            "begin (validate, lineup)": cpu_us(lambda: recommender.begin(question), calls),
            "Redis round trip": cpu_us(
                lambda: records.customer_state(d.version, customer, far, ""), calls),
            "decide (decode, live, score, rules, top-k)": cpu_us(
                lambda: recommender.decided(d, ask, question.segment, state, challenger), calls),
            "settle (decision-log entry and its send)": cpu_us(
                lambda: recommender.settled(d, ask, answer, None, set()), calls),
            "response (build and serialize)": cpu_us(lambda: serialize(to_response(answer)),
                                                     calls),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serving.stages")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=5000, help="calls per timed loop")
    args = parser.parse_args()
    server = localredis.start()
    try:
        bench_train(server.url, args.customers)
        if (os.cpu_count() or 1) > 1:  # Redis on CPU 1, this process on CPU 0
            subprocess.run(["taskset", "-apc", "1", str(server.process.pid)],
                           capture_output=True, check=False)
            os.sched_setaffinity(0, {0})
        result = measure(server.url, PREFIX, customer_of(dataset(args.customers)),
                         args.calls)
    finally:
        server.stop()
    result["command"] = "python -m bench.serving.stages " + " ".join(
        f"--{k} {v}" for k, v in vars(args).items())
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
