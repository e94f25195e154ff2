"""One function per fault. Each returns its figures and whether its bar was met (``passed``).

The environment (``Env``) is one throwaway Redis, a generated data set, a published version and
a `recsvc serve` process; scenarios that break something restore it before they return.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import redis
from prometheus_client.parser import text_string_to_metric_families

from bench.chaos.load import Load, known_request
from bench.chaos.proxy import FlakyProxy
from bench.common.procs import rss_mib
from recsvc.core import schema
from recsvc.store.control.registry import Registry
from recsvc.v1 import offers_pb2 as pb
from recsvc.v1 import offers_pb2_grpc as pb_grpc
from training.localredis import LocalRedis, free_port

PREFIX = "chaos"
CONFIG = """
seed = 7
[tuning]
factors = [16]
alpha = [5.0]
blend_weights = [1.0]
[publish]
lock_ttl_seconds = 3.0
"""


@dataclass
class Env:
    redis: LocalRedis
    data: Path
    customers: int
    quick: bool
    metrics_port: int = 0  # of the server `serving` started last

    @property
    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url, socket_timeout=10)

    def env(self, redis_url: str | None = None, **extra: str) -> dict[str, str]:
        return dict(os.environ, RECSVC_REDIS_URL=redis_url or self.redis.url,
                    RECSVC_KEY_PREFIX=PREFIX, RECSVC_LOG_LEVEL="WARNING", **extra)

    def train_command(self, seed: int) -> list[str]:
        return [sys.executable, "-m", "recsvc", "train", "--customers",
                str(self.data / "customers.csv"), "--offers", str(self.data / "offers.csv"),
                "--interactions", str(self.data / "interactions.csv"), "--config",
                str(self.data / "chaos.toml"), "--seed", str(seed), "--force"]

    def train(self, seed: int) -> str:
        result = subprocess.run(self.train_command(seed), env=self.env(), text=True,
                                capture_output=True, timeout=900, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"training failed: {result.stderr[-2000:]}")
        return result.stdout.strip().splitlines()[-1]


def prepare(folder: Path, redis_server: LocalRedis, customers: int, quick: bool) -> Env:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "recsvc", "datagen", "--out", str(folder),
                    "--customers", str(customers), "--offers", "100", "--segments", "3"],
                   check=True, capture_output=True)
    (folder / "chaos.toml").write_text(CONFIG)
    return Env(redis_server, folder, customers, quick)


def server_late(metrics_port: int, deadline: float) -> dict[str, int]:
    """From the server's own histogram: Recommend calls handled, and those that took longer
    than ``deadline`` (a bucket bound: 0.25 or 1.0)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    count = within = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("method") != "Recommend":
                continue
            if sample.name == "recsvc_rpc_duration_seconds_count":
                count = sample.value
            elif sample.name == "recsvc_rpc_duration_seconds_bucket" and \
                    float(sample.labels["le"]) == deadline:
                within = sample.value
    return {"server_handled": int(count), "server_over_deadline": int(count - within)}


@contextmanager
def serving(env: Env, redis_url: str | None = None, **extra: str
            ) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    env.metrics_port = free_port()
    settings = {"RECSVC_HOST": "127.0.0.1", "RECSVC_PORT": str(port),
                "RECSVC_METRICS_PORT": str(env.metrics_port),
                "RECSVC_MODEL_POLL_MS": "100", "RECSVC_REDIS_RETRY_AFTER_FAILURE_MS": "200"}
    settings.update(extra)
    process = subprocess.Popen([sys.executable, "-m", "recsvc", "serve"],
                               env=env.env(redis_url, **settings), stderr=subprocess.DEVNULL)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.RetentionOfferServiceStub(channel)  # type: ignore[no-untyped-call]
            deadline = time.monotonic() + 60
            while True:
                try:
                    stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=1)
                    break
                except grpc.RpcError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError("recsvc serve did not come up") from None
                    time.sleep(0.2)
        yield process, port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _fault_bar(result: dict[str, Any]) -> bool:
    """The server handled every call within its deadline, and none was INTERNAL/UNKNOWN.
    (Client-side lateness is reported too; on a shared 2-core machine it includes the load
    generator's own scheduling delays.)"""
    return result["server_over_deadline"] == 0 and result["internal_or_unknown"] == 0


def redis_stalled(env: Env) -> dict[str, Any]:
    """SIGSTOP Redis for 3 s in the middle of 10 s of load."""
    with serving(env) as (_, port):
        load = Load(port, 10, 16, known_request(env.customers)).start()
        time.sleep(3)
        env.redis.pause()
        time.sleep(3)
        env.redis.resume()
        result = {**load.join().summary(), **server_late(env.metrics_port, 0.25)}
    return {**result, "fault": "SIGSTOP 3 s", "passed": _fault_bar(result)}


def redis_killed(env: Env) -> dict[str, Any]:
    """SIGKILL Redis under load; start it again after 3 s (empty: no persistence, so the
    model is gone from Redis and the server keeps its version in memory); publish again after
    the load (loading a version under load is the model_switch scenario's)."""
    with serving(env) as (_, port):
        load = Load(port, 12, 16, known_request(env.customers)).start()
        time.sleep(3)
        env.redis.kill()
        time.sleep(3)
        env.redis.restart()
        result = {**load.join().summary(), **server_late(env.metrics_port, 0.25)}
    env.train(seed=11)  # the restart lost the data: the nightly job would publish again
    return {**result, "fault": "SIGKILL, restart (empty) after 3 s",
            "passed": _fault_bar(result)}


def flaky_proxy(env: Env) -> dict[str, Any]:
    """Redis behind a proxy delaying 5% of chunks up to 80 ms and resetting 0.2% of them."""
    proxy = FlakyProxy(env.redis.port).start()
    try:
        with serving(env, f"redis://127.0.0.1:{proxy.port}/0") as (_, port):
            result = {**Load(port, 12, 16, known_request(env.customers)).start().join().summary(),
                      **server_late(env.metrics_port, 0.25)}
    finally:
        proxy.stop()
    return {**result, "fault": "5% chunks delayed <= 80 ms, 0.2% connections reset",
            "proxy_delays": proxy.delays, "proxy_resets": proxy.resets,
            "passed": _fault_bar(result)}


def overload(env: Env) -> dict[str, Any]:
    """Goodput at 1x, 2x and 4x the concurrency cap (16 per process); health probed alongside."""
    figures: dict[str, Any] = {}
    with serving(env, RECSVC_MAX_CONCURRENT_RPCS="16") as (_, port):
        Load(port, 2, 16, known_request(env.customers)).start().join()  # warm-up
        for factor in (1, 2, 4):
            result = Load(port, 8, 16 * factor, known_request(env.customers),
                          deadline=1.0).start().join().summary()
            figures[f"{factor}x"] = result
    base = figures["1x"]["ok_per_second"] or 1e-9
    rejected = sum(v for r in figures.values() for k, v in r["health"].items()
                   if k.startswith("rejected"))
    ratios = {k: round(v["ok_per_second"] / base, 3) for k, v in figures.items()}
    return {"levels": figures, "goodput_vs_1x": ratios, "health_rejected": rejected,
            "passed": min(ratios["2x"], ratios["4x"]) >= 0.9 and rejected == 0
            and all(r["internal_or_unknown"] == 0 for r in figures.values())}


def model_switch(env: Env, first: str, second: str) -> dict[str, Any]:
    """Flip the active version every 250 ms under load; every answer must be exactly the
    ranking its model_version gives (measured for each version at rest first)."""
    registry = Registry(env.client, schema.Keys(PREFIX))
    ids = [f"C{i:07d}" for i in range(0, env.customers, max(1, env.customers // 50))]
    reference: dict[tuple[str, str], list[str]] = {}
    with serving(env) as (_, port), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.RetentionOfferServiceStub(channel)  # type: ignore[no-untyped-call]
        for version in (first, second):
            registry.activate(version, registry.pointers()[0])
            while stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5).active_version \
                    != version:
                time.sleep(0.05)
            for cid in ids:
                answer = stub.Recommend(pb.RecommendRequest(customer_id=cid, limit=5), timeout=5)
                reference[(cid, version)] = [o.offer_id for o in answer.offers]

        def request(rng: random.Random) -> pb.RecommendRequest:
            return pb.RecommendRequest(customer_id=rng.choice(ids), limit=5)

        def check(req: pb.RecommendRequest, res: pb.RecommendResponse) -> bool:
            if "DEGRADED" in pb.Strategy.Name(res.strategy):
                return True  # a Redis read timed out: popularity, counted as degraded
            return reference.get((req.customer_id, res.model_version)) == \
                [o.offer_id for o in res.offers]

        load = Load(port, 10, 16, request, deadline=1.0, check=check).start()
        flips = 0
        end = time.monotonic() + 9.5
        while time.monotonic() < end:
            active = registry.pointers()[0]
            registry.activate(second if active == first else first, active)
            flips += 1
            time.sleep(0.25)
        result = {**load.join().summary(), **server_late(env.metrics_port, 0.25)}
    return {**result, "flips": flips, "passed": result["mismatched"] == 0
            and result["internal_or_unknown"] == 0 and result["codes"].get("OK") == result["calls"]}


def training_killed(env: Env, runs: int) -> dict[str, Any]:
    """SIGKILL `recsvc train` at random points; the active version must not move; after the
    lock's TTL a run succeeds and no key of a dead run is left."""
    registry = Registry(env.client, schema.Keys(PREFIX))
    started = time.monotonic()
    full = env.train(seed=21)  # one whole run, to know how long one takes
    length = time.monotonic() - started
    active_before = registry.pointers()[0]
    assert active_before == full
    rng = random.Random(5)
    kills, moved = [], 0
    for _ in range(runs):
        at = rng.uniform(0.3, length)
        process = subprocess.Popen(env.train_command(seed=rng.randrange(1000)), env=env.env(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(at)
        finished = process.poll() is not None
        process.kill()
        process.wait()
        kills.append(round(at, 2))
        if not finished and registry.pointers()[0] != active_before:
            moved += 1
        if finished:
            active_before = registry.pointers()[0]
        time.sleep(3.5)  # the killed run's lock expires (lock_ttl_seconds = 3)
    final = env.train(seed=99)
    kept = {info.version for info in registry.all()}
    states = Counter(info.state for info in registry.all())
    leaked = set()
    for key in env.client.scan_iter(match=f"{PREFIX}:v:*", count=1000):
        version = key.decode().split(":")[2]
        if version not in kept:
            leaked.add(version)
    return {"one_run_seconds": round(length, 1), "killed_at_seconds": kills,
            "active_moved_by_a_killed_run": moved, "next_run_published": final,
            "versions_kept": len(kept), "states": dict(states), "leaked_versions": len(leaked),
            "passed": moved == 0 and not leaked and states.get("writing", 0) == 0}


def fuzz(env: Env, count: int) -> dict[str, Any]:
    """Random requests (odd strings, limits, channels, exclusions) and random bytes."""
    rng = random.Random(12)
    alphabet = "aZ09_-. é€\u200b\U0001f600\x00\n"
    codes: Counter[str] = Counter()

    def text(n: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(n)))

    with serving(env) as (_, port), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.RetentionOfferServiceStub(channel)  # type: ignore[no-untyped-call]
        raw = {m: channel.unary_unary(f"/recsvc.v1.RetentionOfferService/{m}")
               for m in ("Recommend", "GetModelInfo", "RecordFeedback")}
        for i in range(count):
            try:
                if i % 5 == 4:
                    method = rng.choice(list(raw))
                    raw[method](rng.randbytes(rng.randrange(64)), timeout=2)
                else:
                    stub.Recommend(pb.RecommendRequest(
                        customer_id=rng.choice([text(20), f"C{rng.randrange(10**7):07d}",
                                                text(400)]),
                        limit=rng.choice([0, 1, 10, 100, 101, -1, 2**31 - 1]),
                        channel=rng.choice(["", "email", text(10), "x" * 70]),
                        segment=rng.choice(["", "at_risk", text(10)]),
                        exclude_offer_ids=[text(8) for _ in range(rng.randrange(4))],
                        context={text(5): text(5) for _ in range(rng.randrange(3))},
                        explain=rng.random() < 0.3), timeout=2)
                codes["OK"] += 1
            except grpc.RpcError as exc:
                codes[exc.code().name] += 1
    bad = codes.get("INTERNAL", 0) + codes.get("UNKNOWN", 0)
    return {"requests": count, "codes": dict(codes), "internal_or_unknown": bad,
            "passed": bad == 0}


def memory(env: Env, count: int) -> dict[str, Any]:
    """Server RSS over ``count`` varied requests: after the first 20% and at the end."""
    def request(rng: random.Random) -> pb.RecommendRequest:
        return pb.RecommendRequest(
            customer_id=rng.choice([f"C{rng.randrange(env.customers):07d}",
                                    f"new-{rng.randrange(10**9)}"]),
            limit=rng.randrange(1, 30), channel=rng.choice(["", "email", "app"]),
            exclude_offer_ids=[f"O{rng.randrange(100):04d}" for _ in range(rng.randrange(3))],
            explain=rng.random() < 0.2)

    samples = []
    with serving(env) as (process, port):
        done = 0
        while done < count:  # 3-second blocks, RSS read after each
            done += Load(port, 3, 16, request, deadline=2.0).start().join().calls
            samples.append((done, rss_mib(process.pid)))
    first = next(rss for n, rss in samples if n >= count * 0.2)
    growth = samples[-1][1] - first
    return {"requests": done, "rss_mib": [s[1] for s in samples][::max(1, len(samples) // 10)],
            "rss_at_20_percent_mib": first, "rss_at_end_mib": samples[-1][1],
            "growth_mib": round(growth, 1), "passed": growth < 10}
