"""The model vanishing from Redis is loud (issue 12, point 4): a real FLUSHALL of a Redis of the
test's own, under a real server."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsvc.core.config import Settings
from recsvc.v1 import offers_pb2 as pb
from tests.integration.serving import make_data, running, train
from training import localredis

pytestmark = [pytest.mark.integration, pytest.mark.both_models]

SERVING, NOT_SERVING = (health_pb2.HealthCheckResponse.SERVING,
                        health_pb2.HealthCheckResponse.NOT_SERVING)
PERSONAL = {pb.STRATEGY_PERSONALIZED, pb.STRATEGY_BLENDED}


@pytest.fixture
def own_redis() -> Iterator[localredis.LocalRedis]:
    server = localredis.start()
    yield server
    server.stop()


def wait_until(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_a_flushed_model_turns_health_not_serving_and_answers_degraded_from_memory(
        own_redis: localredis.LocalRedis, tmp_path: Path,
        caplog: pytest.LogCaptureFixture, server_model: str) -> None:
    data = make_data(tmp_path / "data", customers=500)
    settings = Settings(redis_url=own_redis.url, key_prefix="gone", host="127.0.0.1", port=0,
                        redis_timeout_ms=250, server_model=server_model,
                        model_poll_ms=50)
    train(data, own_redis.url, "gone")
    known = (data / "customers.csv").read_text().splitlines()[1].split(",")[0].strip('"')
    with running(settings) as (_, stub, channel), caplog.at_level(logging.INFO, "recsvc"):
        health = health_pb2_grpc.HealthStub(channel)

        def status(service: str) -> int:
            request = health_pb2.HealthCheckRequest(service=service)
            return health.Check(request, timeout=1).status  # type: ignore[no-any-return]

        def ask(**fields: object) -> pb.RecommendResponse:
            return stub.Recommend(pb.RecommendRequest(customer_id=known, **fields), timeout=2)  # type: ignore[arg-type]

        wait_until(lambda: status("recsvc.v1.RetentionOfferService") == SERVING)
        assert ask().strategy in PERSONAL
        client = redis.Redis.from_url(own_redis.url)
        saved = {key: client.dump(key) for key in client.keys("*")}
        client.flushall()
        wait_until(lambda: status("recsvc.v1.RetentionOfferService") == NOT_SERVING)
        assert status("") == SERVING  # the instance still answers: probes keep it
        answer = ask()
        assert answer.strategy == pb.STRATEGY_DEGRADED_GLOBAL_POPULAR and answer.offers
        assert "vanished from Redis" in answer.reason
        with_segment = ask(segment="at_risk")
        assert with_segment.strategy == pb.STRATEGY_DEGRADED_SEGMENT_POPULAR
        batch = list(stub.RecommendBatch(pb.RecommendBatchRequest(customer_ids=[known, "x"]),
                                         timeout=2))
        assert {a.strategy for a in batch} == {pb.STRATEGY_DEGRADED_GLOBAL_POPULAR}
        assert all("vanished from Redis" in a.reason for a in batch)
        time.sleep(0.3)  # several more polls: still one line
        lines = [r for r in caplog.records if "vanished from Redis" in r.getMessage()]
        assert len(lines) == 1 and lines[0].levelno == logging.ERROR

        for key, value in saved.items():  # restored from a backup: personal answers again
            client.restore(key, 0, value)
        wait_until(lambda: ask().strategy in PERSONAL)
        assert status("recsvc.v1.RetentionOfferService") == SERVING
        assert any("is back in Redis" in r.getMessage() for r in caplog.records)
        client.close()
