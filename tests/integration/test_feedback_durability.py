"""Exactly once in effect: client retries, calls cut short after sending, and a Redis SIGKILL +
restart (append-only file on) lose no acknowledged event and apply none twice."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest
import redis

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.v1 import offers_pb2 as pb
from tests.integration.serving import running
from training import localredis

pytestmark = pytest.mark.integration

CUSTOMERS = 20
BATCHES = 60
BATCH = 20
DONE = {pb.FEEDBACK_STATUS_RECORDED, pb.FEEDBACK_STATUS_DUPLICATE}


@pytest.fixture
def durable_redis() -> Iterator[localredis.LocalRedis]:
    server = localredis.start(persist=True)  # appendonly yes, appendfsync always
    yield server
    server.stop()


def send_until_acknowledged(stub: object, request: pb.RecordFeedbackRequest,
                            rng: random.Random, attempts: Counter[str]) -> None:
    """Like a careful client: retry the same ids until every event is acknowledged; sometimes
    give up on a call right after sending it (its events may or may not be recorded)."""
    while True:
        attempts["calls"] += 1
        if rng.random() < 0.3:  # cancel right after sending, then retry the same ids
            call = stub.RecordFeedback.future(request, timeout=5)  # type: ignore[attr-defined]
            time.sleep(rng.choice((0.0, 0.0005, 0.001)))
            if call.cancel():
                attempts["cancelled"] += 1
                continue
        try:
            response = stub.RecordFeedback(request, timeout=5)  # type: ignore[attr-defined]
        except grpc.RpcError as exc:
            attempts[exc.code().name] += 1
            time.sleep(0.02)
            continue
        assert all(r.status in DONE for r in response.results), response
        return


def test_no_acknowledged_event_is_lost_or_applied_twice(durable_redis: localredis.LocalRedis,
                                                        prefix: str) -> None:
    settings = Settings(redis_url=durable_redis.url, key_prefix=prefix, host="127.0.0.1",
                        port=0, redis_timeout_ms=50, model_poll_ms=100,
                        feedback_timeout_ms=1000)
    rng = random.Random(11)
    attempts: Counter[str] = Counter()
    sent: list[pb.FeedbackEvent] = []
    with running(settings) as (_, stub, _channel):
        def crash_redis() -> None:
            while len(sent) < BATCHES * BATCH // 3:
                time.sleep(0.001)
            durable_redis.kill()  # SIGKILL, with calls in flight
            time.sleep(0.3)
            durable_redis.restart()

        crasher = threading.Thread(target=crash_redis)
        crasher.start()
        for b in range(BATCHES):
            events = [pb.FeedbackEvent(event_id=f"b{b}-{i}", customer_id=f"c{(b + i) % CUSTOMERS}",
                                       offer_id="o1", event="decline")
                      for i in range(BATCH)]
            sent.extend(events)
            send_until_acknowledged(stub, pb.RecordFeedbackRequest(events=events), rng, attempts)
        crasher.join()
    assert attempts["cancelled"] > 0 and attempts["UNAVAILABLE"] > 0, attempts
    print(dict(attempts))

    client = redis.Redis.from_url(durable_redis.url)
    keys = schema.Keys(prefix)
    logged = Counter(fields[b"id"].decode() for s in range(schema.SHARDS)
                     for _, fields in client.xrange(keys.events(s)))
    acknowledged = {e.event_id for e in sent}
    assert set(logged) == acknowledged  # 0 lost
    assert max(logged.values()) == 1  # 0 twice in the log
    per_customer = Counter(e.customer_id for e in sent)
    for customer, count in per_customer.items():  # 0 applied twice to live state
        declines = client.hget(keys.live(customer), "d:o1")
        assert declines is not None and int(declines.split()[0]) == count, customer
    client.close()
