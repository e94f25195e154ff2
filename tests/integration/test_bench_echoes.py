"""The two bare echoes of bench/servers answer the same bytes, the floor (the sync echo with
Recommend's Redis read) too, making that one round trip per call, and one pinned h2load run
reads back as complete answers (real processes; h2load runs only when installed). The ceiling
(the sync server with its decision replayed) answers what Recommend answers, with the same
reads and log write; the in-process stage costs time a real decision."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
import redis

from bench.common import procs
from bench.servers import h2load, runs
from recsvc.core import schema
from recsvc.v1 import offers_pb2 as pb
from training import localredis

MESSAGE = pb.RecommendRequest(customer_id="C0000001", limit=10).SerializeToString()
PUBLISHED_PREFIX = "bench-echoes"  # the module's trained model (tests' own prefixes are t<n>)


def test_sync_and_aio_echoes_answer_the_same_412_byte_frame() -> None:
    answers = []
    env = dict(os.environ, RECSVC_LOG_LEVEL="WARNING")
    for module in ("bench.servers.echo_sync", "bench.serving.echo"):
        port = localredis.free_port()
        with procs.server([module, "--port", str(port)], env, port, cpus="0") as server:
            assert procs.cpus_allowed(server.pid) == {"0"}  # every thread on CPU 0
            answers.append(runs.check_answer(port, MESSAGE))
    assert answers[0] == answers[1]
    assert answers[0]["offers"] == 10
    assert answers[0]["response_frame_bytes"] == 412


def test_the_floor_makes_recommends_one_round_trip_and_answers_the_echo(
        redis_server: localredis.LocalRedis, prefix: str) -> None:
    client = redis.Redis.from_url(redis_server.url)
    keys = schema.Keys(prefix)
    client.set(keys.active, "v1")  # what the floor reads under: any active version
    client.hset(keys.customer_hash("v1", schema.shard_of("C0000001")), "C0000001", b"record")
    env = dict(os.environ, RECSVC_LOG_LEVEL="WARNING", RECSVC_REDIS_URL=redis_server.url,
               RECSVC_KEY_PREFIX=prefix)
    port = localredis.free_port()

    def calls(command: str) -> int:
        return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))

    with procs.server(["bench.servers.echo_sync", "--redis-read", "--port", str(port)], env,
                      port) as _:
        before = calls("hget"), calls("hgetall")
        answers = [runs.check_answer(port, MESSAGE) for _ in range(5)]
        after = calls("hget"), calls("hgetall")
    assert after[0] - before[0] == 5 and after[1] - before[1] == 5
    assert all(a["response_frame_bytes"] == 412 and a["offers"] == 10 for a in answers)


def test_h2load_run_of_the_sync_echo() -> None:
    binary = h2load.find()
    if binary is None:
        pytest.skip("h2load not installed (make h2load-bin)")
    port = localredis.free_port()
    env = dict(os.environ, RECSVC_LOG_LEVEL="WARNING")
    with procs.server(["bench.servers.echo_sync", "--port", str(port)], env, port) as server, \
            tempfile.TemporaryDirectory() as tmp:
        frame = Path(tmp, "request.bin")
        frame.write_bytes(h2load.grpc_frame(MESSAGE))
        meter = runs.Meter(binary, port, server.pid, server.pid, frame, "0,1", 412)
        result = meter.measure(runs.Shape(1, 1), 1, latencies=True)
    assert result["succeeded"] == result["done"] > 0
    assert result["data_bytes"] == 412 * result["succeeded"]
    assert not result["short_answers"]
    assert abs(result["logged"] - result["succeeded"]) <= 1  # one may end past the window
    assert 0 < result["p50_ms"] <= result["p99_ms"]
    assert result["server_cpu_seconds"] > 0 and result["client_cpu_seconds"] > 0
    assert result["server_voluntary_switches_per_request"] > 0  # threads block on sockets


@pytest.fixture(scope="module")
def published(redis_server: localredis.LocalRedis,
              tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A small model trained under a prefix of this module's, and its first customer."""
    from tests.integration.helpers import FAST_CONFIG
    from tests.integration.serving import make_data, train

    data = make_data(tmp_path_factory.mktemp("data"), customers=300)
    train(data, redis_server.url, PUBLISHED_PREFIX, FAST_CONFIG)
    return PUBLISHED_PREFIX, next(line.split(",")[0].strip('"') for line in
                                  (data / "customers.csv").read_text().splitlines()[1:])


def test_the_stage_costs_time_a_real_decision_on_a_real_redis(
        redis_server: localredis.LocalRedis, published: tuple[str, str]) -> None:
    from bench.serving.stages import measure

    prefix, customer = published
    result = measure(redis_server.url, prefix, customer, calls=20)
    assert result["customer"] == customer and result["answer_bytes"] > 0
    assert result["strategy"] in ("personalized", "blended", "segment_popular")
    assert len(result["stages"]) == 7
    for value in (result["echo_response"], result["floor_body"], result["recommend_handler"],
                  *result["stages"].values()):
        assert value > 0


def test_the_ceiling_replays_recommends_answer_with_its_round_trip_and_log_write(
        redis_server: localredis.LocalRedis, published: tuple[str, str]) -> None:
    import grpc

    from recsvc.v1 import offers_pb2_grpc as pb_grpc

    prefix, customer = published
    client = redis.Redis.from_url(redis_server.url)
    env = dict(os.environ, RECSVC_LOG_LEVEL="WARNING", RECSVC_REDIS_URL=redis_server.url,
               RECSVC_KEY_PREFIX=prefix, RECSVC_HOST="127.0.0.1", RECSVC_SERVER_MODEL="sync",
               RECSVC_MODEL_POLL_MS="600000")  # no watcher read while counting

    def calls(command: str) -> int:
        return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))

    answers = []
    for command in (["recsvc", "serve"], ["bench.servers.ceiling"]):
        port = localredis.free_port()
        args = command if command[0] == "recsvc" else [*command, "--port", str(port)]
        with procs.server(args, dict(env, RECSVC_PORT=str(port)), port) as _, \
                grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.RetentionOfferServiceStub(channel)  # type: ignore[no-untyped-call]
            request = pb.RecommendRequest(customer_id=customer, limit=10)
            stub.Recommend(request, timeout=30, wait_for_ready=True)  # the model is loaded
            before = calls("hget"), calls("hgetall"), calls("xadd")
            replies = [stub.Recommend(request, timeout=5) for _ in range(5)]
            time.sleep(0.2)  # the log writes are sent without waiting
            after = calls("hget"), calls("hgetall"), calls("xadd")
        assert [b - a for a, b in zip(before, after, strict=True)] == [5, 5, 5]
        # Recommend decides every call anew (a new decision id each); the ceiling replays one.
        ids = {reply.decision_id for reply in replies}
        assert len(ids) == (5 if command[0] == "recsvc" else 1)
        for reply in replies:
            reply.decision_id = ""
        assert all(r == replies[0] for r in replies)
        answers.append(replies[0])
    assert answers[0] == answers[1] and len(answers[0].offers) > 0
