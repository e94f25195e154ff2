"""Helpers for observability tests: a `recsvc serve` process with its log file, /metrics scrapes,
and a small planted data set whose customer ids are easy to grep for."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from training.localredis import free_port


@dataclass
class ServeProcess:
    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log: Path

    def lines(self) -> list[dict[str, object]]:
        """The JSON log lines written so far (a line that is not JSON fails the test)."""
        text = self.log.read_text()
        return [json.loads(line) for line in text.splitlines() if line.strip()]


@contextmanager
def serve(redis_url: str, prefix: str, log: Path, workers: int = 1,
          extra_env: dict[str, str] | None = None) -> Iterator[ServeProcess]:
    port, metrics_port = free_port(), free_port()
    env = dict(os.environ, RECSVC_REDIS_URL=redis_url, RECSVC_KEY_PREFIX=prefix,
               RECSVC_HOST="127.0.0.1", RECSVC_PORT=str(port), RECSVC_WORKERS=str(workers),
               RECSVC_METRICS_PORT=str(metrics_port), RECSVC_MODEL_POLL_MS="100",
               RECSVC_REDIS_TIMEOUT_MS="50", RECSVC_REDIS_RETRY_AFTER_FAILURE_MS="200",
               RECSVC_DEFAULT_DEADLINE_MS="1000")
    env.update(extra_env or {})
    with open(log, "wb") as handle:
        process = subprocess.Popen([sys.executable, "-m", "recsvc", "serve"], env=env,
                                   stdout=handle, stderr=subprocess.STDOUT)
    running = ServeProcess(process, port, metrics_port, log)
    try:
        wait_serving(port)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_serving(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise AssertionError(f"server on port {port} never became SERVING")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def wait_for_metrics(port: int, ready: Callable[[dict[Any, float]], bool],
                     timeout: float = 20.0) -> dict[Any, float]:
    """Scrape until ``ready`` (the endpoint may not listen yet); the last scrape."""
    deadline = time.monotonic() + timeout
    last: dict[Any, float] = {}
    while time.monotonic() < deadline:
        try:
            last = scrape(port)
        except OSError:
            last = {}
        if ready(last):
            return last
        time.sleep(0.05)
    raise AssertionError(f"metrics never ready: {last}")


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    """Sum of ``name``'s samples whose labels include ``labels`` (over workers and the rest)."""
    return sum(value for (n, got), value in samples.items()
               if n == name and set(labels.items()) <= set(got))


def planted(folder: Path, tag: str) -> list[str]:
    """Two tastes in one segment (see helpers.planted) with long, greppable customer ids."""
    customers = ["customer_id,segment"]
    interactions = ["customer_id,offer_id,event,ts"]
    ids = []
    t = 1_700_000_000
    for group, count in (("a", 30), ("b", 50)):
        for i in range(count):
            cid = f"Person{tag}{group.upper()}{i:03d}Zq"
            ids.append(cid)
            customers.append(f"{cid},main")
            for j in range(1, 6):
                t += 1
                interactions.append(f"{cid},{group}{j},accept,{t}")
    offers = ["offer_id,segments,title"] + [f"{g}{j},*,Offer {g}{j}" for g in "ab"
                                            for j in range(1, 6)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "customers.csv").write_text("\n".join(customers) + "\n")
    (folder / "offers.csv").write_text("\n".join(offers) + "\n")
    (folder / "interactions.csv").write_text("\n".join(interactions) + "\n")
    return ids
