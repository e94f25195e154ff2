"""Hostile bytes and corrupt records are answered, never crashed on (issue 18, points 4 and 5).

A real server on a real Redis; requests sent as raw bytes through a channel with no serializer,
as a fuzzer or a broken client would.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import grpc
import numpy as np
import pytest
import redis

from recsvc.api.server import RunningServer
from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.v1 import offers_pb2 as pb
from recsvc.v1 import offers_pb2_grpc as pb_grpc
from tests.integration.serving import make_data, running, train
from training import localredis

pytestmark = [pytest.mark.integration, pytest.mark.both_models]

SERVICE = "/recsvc.v1.RetentionOfferService/"
PREFIX = "hostile"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory,
            redis_server: localredis.LocalRedis) -> tuple[Settings, str, list[str]]:
    # Generous Redis timeouts: on a loaded CI machine 25 ms can pass before the first model load.
    settings = Settings(redis_url=redis_server.url, key_prefix=PREFIX, host="127.0.0.1", port=0,
                        redis_timeout_ms=250)
    data = make_data(tmp_path_factory.mktemp("hostile"), customers=500)
    version = train(data, settings.redis_url, PREFIX)
    lines = (data / "customers.csv").read_text().splitlines()[1:501]
    return settings, version, [line.split(",")[0].strip('"') for line in lines]


@pytest.fixture
def server(trained: tuple[Settings, str, list[str]], server_model: str
           ) -> Iterator[tuple[RunningServer, grpc.Channel]]:
    with running(replace(trained[0], server_model=server_model)) as (running_server, _stub,
                                                                      channel):
        yield running_server, channel


def raw_call(channel: grpc.Channel, method: str, payload: bytes) -> grpc.StatusCode:
    """Send ``payload`` as the request bytes; the status the server answered."""
    try:
        if method == "RecommendBatch":
            list(channel.unary_stream(SERVICE + method)(payload, timeout=5))
        else:
            channel.unary_unary(SERVICE + method)(payload, timeout=5)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@pytest.mark.parametrize("method", ["Recommend", "RecommendBatch", "GetModelInfo"])
def test_undecodable_request_bytes_are_invalid_argument_naming_the_message(
        server: tuple[RunningServer, grpc.Channel], method: str) -> None:
    _, channel = server
    call = (channel.unary_stream if method == "RecommendBatch" else channel.unary_unary)(
        SERVICE + method)
    with pytest.raises(grpc.RpcError) as caught:
        result = call(b"\x80" * 20, timeout=5)
        if method == "RecommendBatch":
            list(result)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request is not a valid" in caught.value.details()


def test_invalid_utf8_in_a_string_field_is_invalid_argument(
        server: tuple[RunningServer, grpc.Channel]) -> None:
    _, channel = server
    good = pb.RecommendRequest(customer_id="abc", limit=3).SerializeToString()
    with pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(SERVICE + "Recommend")(good.replace(b"abc", b"a\xffc"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in caught.value.details()
    answer = pb.RecommendResponse.FromString(
        channel.unary_unary(SERVICE + "Recommend")(good, timeout=5))
    assert answer.offers  # the same bytes with valid UTF-8 are answered


def test_a_10000_call_fuzz_of_random_bytes_never_answers_internal_and_logs_a_few_lines(
        server: tuple[RunningServer, grpc.Channel], caplog: pytest.LogCaptureFixture) -> None:
    _, channel = server
    rng = random.Random(18)
    statuses: Counter[grpc.StatusCode] = Counter()
    with caplog.at_level(logging.INFO, logger="recsvc"):
        for i in range(10_000):
            payload = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 40)))
            statuses[raw_call(channel, ("Recommend", "RecommendBatch")[i % 2], payload)] += 1
    assert set(statuses) <= {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}, statuses
    assert statuses[grpc.StatusCode.INVALID_ARGUMENT] > 5_000
    logged = [r for r in caplog.records if r.name.startswith("recsvc")]
    assert len(logged) <= 5 and not any(r.exc_info for r in logged)
    assert sum(len(r.getMessage()) for r in logged) < 2_000


def corrupt(client: redis.Redis, version: str, customer_id: str, raw: bytes) -> None:
    client.hset(schema.Keys(PREFIX).customers(version), customer_id, raw)


def test_corrupt_records_answer_their_customer_from_popularity_and_are_counted(
        trained: tuple[Settings, str, list[str]], server: tuple[RunningServer, grpc.Channel],
        client: redis.Redis) -> None:
    _, version, known = trained
    running_server, channel = server
    stub = pb_grpc.RetentionOfferServiceStub(channel)
    key = schema.Keys(PREFIX).customers(version)
    ids = [cid for cid in known  # customers with a personal vector
           if schema.decode_customer_record(client.hget(key, cid)).vector.size][:5]  # type: ignore[arg-type]
    healthy = stub.Recommend(pb.RecommendRequest(customer_id=ids[4]), timeout=5).strategy
    originals = {cid: client.hget(key, cid) for cid in ids}
    record = schema.decode_customer_record(originals[ids[0]])  # type: ignore[arg-type]
    nan = record.vector.copy()
    nan[0] = np.nan
    bad = {
        ids[0]: schema.encode_customer_record(record.segment_index, nan, record.accepted),
        ids[1]: schema.encode_customer_record(record.segment_index,
                                              np.full_like(record.vector, np.inf), []),
        ids[2]: schema.encode_customer_record(record.segment_index, record.vector, [99_999]),
        ids[3]: originals[ids[3]][:-3],  # type: ignore[index]  # wrong length
    }
    try:
        for customer_id, raw in bad.items():
            corrupt(client, version, customer_id, raw)
        before = running_server.recommender.failures.counts["corrupt_record"]
        for customer_id in bad:
            answer = stub.Recommend(pb.RecommendRequest(customer_id=customer_id), timeout=5)
            assert answer.strategy == pb.STRATEGY_DEGRADED_GLOBAL_POPULAR and answer.offers
            assert "customer record unreadable" in answer.reason
        batch = list(stub.RecommendBatch(pb.RecommendBatchRequest(customer_ids=ids[:5]),
                                         timeout=5))
        assert [a.customer_id for a in batch] == ids[:5]
        assert [a.strategy for a in batch[:4]] == [pb.STRATEGY_DEGRADED_GLOBAL_POPULAR] * 4
        assert batch[4].strategy == healthy  # the other ids are unharmed
        assert "NaN or infinite" in batch[0].reason and "NaN or infinite" in batch[1].reason
        assert "accepted-offer index 99999 beyond the catalogue" in batch[2].reason
        assert running_server.recommender.failures.counts["corrupt_record"] == before + 8
    finally:
        client.hset(key, mapping=originals)  # type: ignore[arg-type]


def test_a_10000_id_batch_without_a_deadline_finishes_within_its_scaled_budget(
        trained: tuple[Settings, str, list[str]]) -> None:
    settings, _, ids = trained
    request = pb.RecommendBatchRequest(customer_ids=ids * 20)  # 10,000 known customers
    # The server default alone (250 ms) is too short for the work: the batch is cut.
    with running(replace(settings, default_deadline_ms=250, batch_deadline_per_id_ms=0.0)
                 ) as (_, stub, _channel):
        with pytest.raises(grpc.RpcError) as cut:
            list(stub.RecommendBatch(request))
        assert cut.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    with running(replace(settings, default_deadline_ms=250)) as (_, stub, _channel):
        started = time.monotonic()
        answers = list(stub.RecommendBatch(request))  # no deadline, as grpcurl sends it
    assert len(answers) == 10_000 and time.monotonic() - started < 0.25 + 0.002 * 10_000
    degraded = {pb.STRATEGY_DEGRADED_GLOBAL_POPULAR, pb.STRATEGY_DEGRADED_SEGMENT_POPULAR}
    assert not any(a.strategy in degraded for a in answers)
