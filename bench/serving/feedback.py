"""The feedback loop's numbers:
``python -m bench.serving.feedback [--seconds 8] [--customers 20000]``.

Starts its own redis-server (append-only file, ``--fsync everysec`` by default: the setting
the README recommends; ``always`` and ``off`` for comparison), generates and
trains a data set (cached in bench/data/), runs ``recsvc serve`` and ``recsvc feedback consume``
as processes and measures:
- RecordFeedback events/s per server process, batches of 100, N calls in flight (the load
  generator is ``python -m bench.serving.feedback load``, its own process, with its requests built
  before the clock starts; its CPU is reported too: on 2 cores it competes with what it
  measures); ``python -m bench.serving.feedback record`` runs only this part, without the consumer;
- event-to-next-answer latency, through the real API: from the RecordFeedback acknowledgement
  of an accept of a customer's top offer to (a) the first Recommend without that offer (live
  state) and (b) the first Recommend scored with the folded-in vector (fold-in consumer), idle
  and under a concurrent feedback stream of 2,000 events/s;
- fold-in cost: the consumer's CPU seconds per event folded;
- Recommend (32 in flight) alone and with a concurrent feedback stream of 10% of its rate.
Prints one JSON object and writes bench/results/feedback.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import redis

from bench.common import procs
from recsvc.core import schema
from recsvc.v1 import offers_pb2 as pb
from recsvc.v1 import offers_pb2_grpc as pb_grpc
from training import localredis

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "fbench"
OFFERS = 200
EVENTS = ("impression",) * 6 + ("click",) * 2 + ("accept", "decline")
# implicit's ALS only: the fold-in re-solves implicit vectors (an exposure model's are served
# as trained, so with it chosen no answer would ever show a folded-in vector).
CONFIG = ("seed = 7\n[tuning]\nfactors = [16]\nalpha = [5.0]\nblend_weights = [1.0]\n"
          "[exposure]\nmodel = \"implicit\"\n")


def customer_id(i: int) -> str:
    return f"C{i:07d}"


def offer_id(i: int) -> str:
    return f"OFF{i:05d}"


def batch(rng: random.Random, size: int, customers: int, run: str, start: int) -> list[Any]:
    return [pb.FeedbackEvent(event_id=f"{run}-{start + i}",
                             customer_id=customer_id(rng.randrange(customers)),
                             offer_id=offer_id(rng.randrange(OFFERS)),
                             event=rng.choice(EVENTS), channel="email")
            for i in range(size)]


RECORD_FEEDBACK = "/recsvc.v1.RetentionOfferService/RecordFeedback"


def requests(rng: random.Random, args: argparse.Namespace, run: str, count: int,
             start: int = 0) -> list[bytes]:
    """``count`` serialized requests of ``args.batch`` events with ids never used before."""
    return [pb.RecordFeedbackRequest(
        events=batch(rng, args.batch, args.customers, run, start + i * args.batch)
    ).SerializeToString() for i in range(count)]


async def load(args: argparse.Namespace) -> dict[str, Any]:
    """N calls in flight for ``seconds`` (after 1 s of warm-up); events per call = ``batch``.

    The requests are built and serialized before the clock starts (enough for ``max_rate``
    events/s; more are built on the fly only if the server outruns that, counted in
    ``requests_built_during_run``), so the client's CPU goes to calls, not to protobuf objects:
    on a 2-core machine it competes with the server and Redis it measures. Its CPU seconds
    during the run are reported (``client_cpu_seconds``, ``client_cpu_us_per_event``)."""
    channels = [grpc.aio.insecure_channel(args.target) for _ in range(2)]
    # Raw bytes in and out: no serializer per call; the replies are parsed for their statuses.
    calls = [c.unary_unary(RECORD_FEEDBACK) for c in channels]
    rng = random.Random(args.seed)
    run = uuid.uuid4().hex[:8]
    expected = 1 + int(args.max_rate * (args.seconds + 1.0) / args.batch)
    if args.rate:
        expected = min(expected, 1 + int(args.rate * (args.seconds + 1.0) / args.batch))
    pool = requests(rng, args, run, expected)
    print("ready", flush=True)  # the requests are built: a background load starts now
    built_late = 0
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    pause = args.concurrency * args.batch / args.rate if args.rate else 0.0
    warm = time.perf_counter() + 1.0
    end = warm + args.seconds
    measured_cpu: list[resource.struct_rusage] = []  # the client's CPU when the clock starts
    asyncio.get_running_loop().call_later(
        1.0, lambda: measured_cpu.append(resource.getrusage(resource.RUSAGE_SELF)))

    async def worker(n: int) -> None:
        nonlocal built_late
        call = calls[n % 2]
        while (now := time.perf_counter()) < end:
            if pool:
                request = pool.pop()
            else:
                built_late += 1
                request = requests(rng, args, run, 1, (expected + built_late) * args.batch)[0]
            try:
                raw = await call(request, timeout=10)
                if now >= warm:
                    latencies.append(time.perf_counter() - now)
                    reply = pb.RecordFeedbackResponse.FromString(raw)
                    statuses.update(pb.FeedbackStatus.Name(r.status) for r in reply.results)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
            if pause:
                await asyncio.sleep(max(0.0, pause - (time.perf_counter() - now)))

    await asyncio.gather(*(worker(i) for i in range(args.concurrency)))
    after = resource.getrusage(resource.RUSAGE_SELF)
    for channel in channels:
        await channel.close()
    latencies.sort()

    def pct(q: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2) \
            if latencies else 0.0

    events = len(latencies) * args.batch
    client_cpu = (after.ru_utime + after.ru_stime - measured_cpu[0].ru_utime
                  - measured_cpu[0].ru_stime)
    return {"calls": len(latencies), "events": events,
            "events_per_second": round(events / args.seconds),
            "call_p50_ms": pct(0.5), "call_p99_ms": pct(0.99), "statuses": dict(statuses),
            "errors": dict(errors), "client_cpu_seconds": round(client_cpu, 2),
            "client_cpu_us_per_event": round(1e6 * client_cpu / max(1, events), 1),
            "requests_built_during_run": built_late}


async def in_process(args: argparse.Namespace, url: str, redis_pid: int) -> dict[str, Any]:
    """RecordFeedback's server-side Python without gRPC, ``concurrency`` calls in flight on one
    loop: parse the request bytes, validate (offers checked against a set, as against a model),
    plan the calls, one round trip, answer, serialize. CPU of this process and of Redis per
    event; ``--profile`` prints where this process's time went (stderr)."""
    from dataclasses import replace

    from recsvc.api.feedback import raw_events, respond
    from recsvc.core.config import Settings
    from recsvc.feedback.events import Event, Limits, validate
    from recsvc.store.feedback.events import EventLog

    rng = random.Random(args.seed)
    pool = requests(rng, args, uuid.uuid4().hex[:8], args.calls + 20)
    offers = {offer_id(i) for i in range(OFFERS)}
    limits = Limits(max_events=max(1000, args.batch))
    log = EventLog(schema.Keys(PREFIX), replace(Settings(), redis_url=url, key_prefix=PREFIX))

    async def call(raw: bytes) -> bytes:
        request = pb.RecordFeedbackRequest.FromString(raw)
        verdicts = validate(raw_events(request), time.time(), limits, offers.__contains__,
                            None)
        valid = [v for v in verdicts if isinstance(v, Event)]
        outcomes = await log.record(valid, time.monotonic() + 10)
        return respond(verdicts, outcomes).SerializeToString()

    async def worker(todo: list[bytes]) -> None:
        for raw in todo:
            await call(raw)

    for raw in pool[:20]:  # warm-up: connection, script loaded
        await call(raw)
    pool = pool[20:]
    profile = None
    if args.profile:
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    cpu, redis_cpu, start = time.process_time(), procs.cpu_seconds(redis_pid), time.perf_counter()
    await asyncio.gather(*(worker(pool[k::args.concurrency]) for k in range(args.concurrency)))
    wall = time.perf_counter() - start
    cpu, redis_cpu = time.process_time() - cpu, procs.cpu_seconds(redis_pid) - redis_cpu
    if profile is not None:
        import pstats

        profile.disable()
        pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(15)
    await log.close()
    events = len(pool) * args.batch
    return {"events": events, "batch": args.batch, "concurrency": args.concurrency,
            "events_per_second": round(events / wall),
            "python_cpu_us_per_event": round(1e6 * cpu / events, 1),
            "redis_cpu_us_per_event": round(1e6 * redis_cpu / events, 1),
            "profiled": bool(args.profile)}


def prepare(url: str, customers: int) -> str:
    data = ROOT / "bench" / "data" / f"fb-c{customers}-o{OFFERS}"
    if not (data / "interactions.csv").exists():
        subprocess.run([sys.executable, "-m", "recsvc", "datagen", "--out", str(data),
                        "--customers", str(customers), "--offers", str(OFFERS),
                        "--segments", "4", "--seed", "7"], check=True)
    (data / "config.toml").write_text(CONFIG)
    env = dict(os.environ, RECSVC_REDIS_URL=url, RECSVC_KEY_PREFIX=PREFIX)
    result = subprocess.run(
        [sys.executable, "-m", "recsvc", "train", "--customers", str(data / "customers.csv"),
         "--offers", str(data / "offers.csv"), "--interactions", str(data / "interactions.csv"),
         "--config", str(data / "config.toml"), "--force"], env=env, capture_output=True,
        text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return result.stdout.strip().splitlines()[-1]


def caught_up(client: redis.Redis, timeout: float = 120) -> None:
    """Wait until the fold-in group has read and acked everything."""
    deadline = time.monotonic() + timeout
    keys = schema.Keys(PREFIX)
    while time.monotonic() < deadline:
        behind = 0
        for shard in range(schema.SHARDS):
            for group in client.xinfo_groups(keys.events(shard)):
                behind += int(group.get("lag") or 0) + int(group["pending"])
        if not behind:
            return
        time.sleep(0.2)
    raise RuntimeError("the fold-in consumer did not catch up")


def latency(stub: Any, customers: int, samples: int, seed: int) -> dict[str, Any]:
    """Through the real API, per single accept of a customer's top offer: ack -> the next
    Recommend no longer offers it (live state), and ack -> the next Recommend's scores come
    from the folded-in vector (only personally served customers count)."""
    rng = random.Random(seed)
    live_ms: list[float] = []
    fold_ms: list[float] = []
    misses = 0
    personal = (pb.STRATEGY_PERSONALIZED, pb.STRATEGY_BLENDED)
    while len(live_ms) < samples:
        ask = pb.RecommendRequest(customer_id=customer_id(rng.randrange(customers)), limit=10)
        first = stub.Recommend(ask, timeout=5)
        if first.strategy not in personal or len(first.offers) < 3:
            continue
        top = first.offers[0].offer_id
        event = pb.FeedbackEvent(event_id=f"lat-{uuid.uuid4().hex}",
                                 customer_id=ask.customer_id, offer_id=top, event="accept")
        stub.RecordFeedback(pb.RecordFeedbackRequest(events=[event]), timeout=5)
        acked = time.perf_counter()
        scores = {o.offer_id: o.score for o in first.offers}
        seen_live = False
        while time.perf_counter() - acked < 5:
            answer = stub.Recommend(ask, timeout=5)
            now = (time.perf_counter() - acked) * 1000
            if not seen_live and top not in {o.offer_id for o in answer.offers}:
                live_ms.append(now)
                seen_live = True
            if seen_live and any(abs(scores.get(o.offer_id, o.score) - o.score) > 1e-6
                                 for o in answer.offers):
                fold_ms.append(now)
                break
        else:
            misses += 1
        time.sleep(0.01)

    def pcts(values: list[float]) -> dict[str, float]:
        values = sorted(values) or [float("nan")]
        return {"p50_ms": round(values[len(values) // 2], 2),
                "p99_ms": round(values[min(len(values) - 1, int(0.99 * len(values)))], 2),
                "max_ms": round(values[-1], 2)}

    return {"samples": samples, "offer_gone": pcts(live_ms), "vector_folded_in": pcts(fold_ms),
            "not_folded_within_5_s": misses}


def run_load(port: int, customers: int, seconds: float, concurrency: int, size: int,
             rate: float = 0.0, seed: int = 1,
             max_rate: float = 40_000.0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.serving.feedback", "load", "--target", f"127.0.0.1:{port}",
         "--seconds", str(seconds), "--concurrency", str(concurrency), "--batch", str(size),
         "--customers", str(customers), "--rate", str(rate), "--seed", str(seed),
         "--max-rate", str(max_rate)],
        stdout=subprocess.PIPE, text=True)


def started(loader: subprocess.Popen[str]) -> subprocess.Popen[str]:
    """``loader`` once its requests are built (its first line), so its load is on."""
    assert loader.stdout is not None
    loader.stdout.readline()
    return loader


def recommend_load(port: int, args: argparse.Namespace) -> dict[str, Any]:
    return procs.run_json(["bench.serving.loadgen", "--target", f"127.0.0.1:{port}",
                           "--concurrency", "32", "--seconds", str(args.seconds), "--customers",
                           str(args.customers)], dict(os.environ))


def recommend_with_feedback(port: int, args: argparse.Namespace) -> dict[str, Any]:
    """Recommend alone, then with a feedback stream of 10% of its rate (batches of 10)."""
    alone = recommend_load(port, args)
    rate = 0.1 * float(alone["calls_per_second"])
    background = started(run_load(port, args.customers, args.seconds + 30, 1, 10, rate=rate,
                                  seed=4))
    time.sleep(1.0)
    together = recommend_load(port, args)
    background.terminate()
    background.wait()
    return {"alone": alone, "feedback_events_per_second": round(rate),
            "with_feedback": together}


def bench(args: argparse.Namespace) -> dict[str, Any]:
    server = localredis.start(persist=args.fsync != "off",
                              appendfsync="always" if args.fsync == "off" else args.fsync)
    try:
        out_version = prepare(server.url, args.customers)
        client = redis.Redis.from_url(server.url)
        env = dict(os.environ, RECSVC_REDIS_URL=server.url, RECSVC_KEY_PREFIX=PREFIX,
                   RECSVC_LOG_LEVEL="WARNING", RECSVC_HOST="127.0.0.1")
        port = localredis.free_port()
        out: dict[str, Any] = {"version": out_version, "customers": args.customers,
                               "offers": OFFERS, "seconds": args.seconds,
                               "redis_appendfsync": args.fsync}
        only_record = args.what == "record"
        folding = args.consumer and not only_record
        with procs.server(["recsvc", "serve"], dict(env, RECSVC_PORT=str(port)), port) as srv:
            consumer = subprocess.Popen(
                [sys.executable, "-m", "recsvc", "feedback", "consume"] if folding
                else [sys.executable, "-c", "import time; time.sleep(3600)"],
                env=env, stdout=subprocess.DEVNULL)
            try:
                time.sleep(2.0)
                runs = []
                for concurrency in args.concurrencies:
                    cpu = procs.cpu_seconds(srv.pid)
                    fold_cpu = procs.cpu_seconds(consumer.pid)
                    redis_cpu = procs.cpu_seconds(server.process.pid)
                    loader = run_load(port, args.customers, args.seconds, concurrency,
                                      args.batch, max_rate=args.max_rate)
                    result = json.loads(loader.communicate()[0].strip().splitlines()[-1])
                    result["concurrency"] = concurrency
                    result["server_cpu_seconds"] = round(procs.cpu_seconds(srv.pid) - cpu, 2)
                    result["redis_cpu_seconds"] = round(
                        procs.cpu_seconds(server.process.pid) - redis_cpu, 2)
                    if folding:
                        caught_up(client)
                    folded_cpu = procs.cpu_seconds(consumer.pid) - fold_cpu
                    recorded = result["statuses"].get("FEEDBACK_STATUS_RECORDED", 0)
                    total = recorded * (args.seconds + 1) / args.seconds  # warm-up included
                    # CPU per event: what a process given its own core would sustain, whatever
                    # else the machine is busy with (events/s per core = 1e6 / us per event).
                    result["server_cpu_us_per_event"] = round(
                        1e6 * result["server_cpu_seconds"] / max(1.0, total), 1)
                    result["redis_cpu_us_per_event"] = round(
                        1e6 * result["redis_cpu_seconds"] / max(1.0, total), 1)
                    result["fold_in_cpu_seconds"] = round(folded_cpu, 2)
                    result["fold_in_us_per_event"] = round(1e6 * folded_cpu / max(1.0, total), 1)
                    runs.append(result)
                    print(json.dumps(result), flush=True)
                out["record_feedback"] = runs
                if only_record:
                    return out
                with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = pb_grpc.RetentionOfferServiceStub(channel)  # type: ignore[no-untyped-call]
                    out["latency_idle"] = latency(stub, args.customers, args.samples, 3)
                    background = started(run_load(port, args.customers, args.seconds + 30, 2,
                                                  100, rate=2000, seed=2))
                    time.sleep(1.5)
                    out["latency_under_2000_events_per_second"] = latency(
                        stub, args.customers, args.samples, 5)
                    background.terminate()
                    background.wait()
                out["recommend_with_feedback"] = recommend_with_feedback(port, args)
            finally:
                consumer.terminate()
                consumer.wait(timeout=15)
        out["redis_used_memory_mib"] = round(client.info("memory")["used_memory"] / 2**20, 1)
        return out
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serving.feedback")
    parser.add_argument("what", choices=("bench", "record", "inprocess", "load"), nargs="?",
                        default="bench",
                        help="bench: everything; record: only RecordFeedback's throughput "
                             "(no fold-in consumer, no latency or Recommend runs); inprocess: "
                             "the server's Python per event without gRPC (--calls, --batch, "
                             "--concurrency, --profile); load: the load generator (a process "
                             "of its own)")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--fsync", choices=("everysec", "always", "off"), default="everysec",
                        help="Redis append-only file fsync policy (off: no AOF)")
    parser.add_argument("--no-consumer", dest="consumer", action="store_false",
                        help="RecordFeedback alone, no fold-in consumer running")
    parser.add_argument("--target", help="(load) HOST:PORT")
    parser.add_argument("--concurrency", type=int, default=4, help="(load) calls in flight")
    parser.add_argument("--concurrencies", default="4,16",
                        help="calls in flight of the RecordFeedback runs, comma-separated")
    parser.add_argument("--max-rate", type=float, default=40_000.0,
                        help="(load) events/s the requests built before the clock cover")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rate", type=float, default=0.0, help="(load) events/s cap, 0 = none")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--calls", type=int, default=300, help="(inprocess) calls measured")
    parser.add_argument("--profile", action="store_true",
                        help="(inprocess) cProfile's top 15 on stderr")
    args = parser.parse_args()
    args.concurrencies = [int(c) for c in str(args.concurrencies).split(",") if c.strip()]
    if args.what == "load":
        print(json.dumps(asyncio.run(load(args))))
        return 0
    if args.what == "inprocess":
        server = localredis.start(persist=args.fsync != "off", appendfsync=args.fsync
                                  if args.fsync != "off" else "always")
        try:
            print(json.dumps(asyncio.run(in_process(args, server.url, server.process.pid))))
        finally:
            server.stop()
        return 0
    # On SIGTERM the finally blocks stop the server, consumer and redis-server this started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    results = bench(args)
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    name = "feedback-record.json" if args.what == "record" else "feedback.json"
    (ROOT / "bench" / "results" / name).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
