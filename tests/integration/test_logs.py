"""A full run (train, serve, calls with errors, Redis down and back, version switches): every log
line is JSON, each failure is one line with its cause, and no customer id appears in clear."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from pathlib import Path

import grpc
import pytest
import redis

from recsvc.core import schema
from recsvc.v1 import offers_pb2 as pb
from recsvc.v1 import offers_pb2_grpc as pb_grpc
from tests.integration import observe
from tests.integration.helpers import FAST_CONFIG, cli, train_args
from training import localredis

pytestmark = pytest.mark.integration

SALT = "test-deployment-salt"
CONFIG = FAST_CONFIG.replace("blend_weights = [0.0, 0.5, 1.0]", "blend_weights = [1.0]")


def ref(customer_id: str) -> str:
    return "c-" + hashlib.blake2b(customer_id.encode(), key=SALT.encode(),
                                  digest_size=8).hexdigest()


def wait_for(server: observe.ServeProcess, text: str, timeout: float = 20.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in server.lines():
            if text in str(line["event"]):
                return line
        time.sleep(0.1)
    raise AssertionError(f"no log line with {text!r}:\n{server.log.read_text()[-3000:]}")


def test_a_full_run_logs_json_failures_with_causes_and_no_customer_ids(tmp_path: Path) -> None:
    own = localredis.start()  # killed and restarted below: not the session's server
    try:
        run(tmp_path, own)
    finally:
        own.stop()


def run(tmp_path: Path, own: localredis.LocalRedis) -> None:
    data = tmp_path / "data"
    ids = observe.planted(data, "L")
    ghost = "PersonGhostZq777"  # in the interactions only: a bad row
    with open(data / "interactions.csv", "a") as handle:
        handle.write(f"{ghost},a1,accept,1700000000\n")
    (tmp_path / "config.toml").write_text(CONFIG)
    env = {"RECSVC_LOG_SALT": SALT}
    logs: list[str] = []

    def train(*extra: str) -> str:
        result = cli(train_args(data, tmp_path / "config.toml", "--report",
                                str(tmp_path / "report.json"), *extra), own.url, "p", env)
        logs.append(result.stderr)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    first = train()
    unknown = "PersonStrangerZq404"
    corrupt = ids[3]
    keys = schema.Keys("p")
    client = redis.Redis.from_url(own.url)
    with observe.serve(own.url, "p", tmp_path / "serve.log", extra_env=env) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.RetentionOfferServiceStub(channel)

        def ask(customer_id: str, request_id: str, **fields: object) -> None:
            with contextlib.suppress(grpc.RpcError):
                stub.Recommend(pb.RecommendRequest(customer_id=customer_id, **fields),
                               timeout=5, metadata=(("x-request-id", request_id),))

        for cid in ids[:20]:
            ask(cid, "req-ok")
        ask(unknown, "req-unknown")
        ask(ids[0], "req-invalid", limit=1000)
        list(stub.RecommendBatch(pb.RecommendBatchRequest(customer_ids=[*ids[:5], unknown]),
                                 timeout=5))
        # A record that does not decode: one error line, with the call's request id.
        client.hset(keys.customers(first), corrupt, b"\xff garbage")
        ask(corrupt, "req-corrupt-1")
        line = wait_for(server, "corrupt customer record")
        assert line["level"] == "error" and line["request_id"] == "req-corrupt-1"

        # Redis killed, then back: one line each, with the cause and the downtime.
        own.kill()
        down = wait_for(server, "Redis unavailable")
        assert down["level"] == "error" and down["cause"]
        for cid in ids[:5]:
            ask(cid, "req-degraded")
        own.restart()
        back = wait_for(server, "Redis available again")
        assert float(back["down_seconds"]) > 0  # type: ignore[arg-type]
        assert sum("Redis unavailable" in str(x["event"]) for x in server.lines()) == 1

        # A new version (the restart lost the data: publish again), then one that cannot load.
        second = train()
        switch = wait_for(server, f"serving model version {second}")
        assert switch["version"] == second and switch["previous"] == first
        bad = "20000101T000000Z-bad"
        client.mset({keys.meta(bad): json.dumps({"segments": []}),
                     keys.offers(bad): "not json"})
        client.set(keys.active, bad)
        failed = wait_for(server, "cannot switch model version")
        assert failed["version"] == bad and failed["cause"]
        client.set(keys.active, second)
        for cid in [*ids[:20], unknown]:
            ask(cid, "req-after")
    logs.append(server.log.read_text())
    lines = [json.loads(text) for log in logs[-1:] for text in log.splitlines() if text.strip()]
    assert all({"event", "level", "timestamp", "logger"} <= set(x) for x in lines)
    everything = "\n".join(logs)
    for cid in [*ids, unknown, ghost]:
        assert cid not in everything, f"customer id {cid} logged in clear"
