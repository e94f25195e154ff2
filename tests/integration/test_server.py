"""The gRPC service against a real Redis and a real server bound to a free port."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from recsvc.core.config import Settings
from recsvc.v1 import offers_pb2 as pb
from tests.integration.serving import (
    fast_settings,
    make_data,
    reference_ranking,
    running,
    train,
    wait_for_version,
)
from training import localredis

pytestmark = [pytest.mark.integration, pytest.mark.both_models]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_data(tmp_path_factory.mktemp("serving"))


@pytest.fixture
def published(data: Path, settings: Settings) -> str:
    return train(data, settings.redis_url, settings.key_prefix, cluster=settings.redis_cluster)


def known_ids(data: Path, count: int) -> list[str]:
    lines = (data / "customers.csv").read_text().splitlines()[1:count + 1]
    return [line.split(",")[0].strip('"') for line in lines]


@pytest.mark.cluster
def test_rankings_equal_a_plain_numpy_reference_on_the_published_vectors(
        published: str, settings: Settings, client: redis.Redis, data: Path) -> None:
    with running(settings) as (_, stub, _channel):
        for customer_id in known_ids(data, 40):
            response = stub.Recommend(pb.RecommendRequest(customer_id=customer_id), timeout=5)
            assert response.strategy == pb.STRATEGY_PERSONALIZED
            assert response.model_version == published
            assert [o.offer_id for o in response.offers] == reference_ranking(
                client, settings.key_prefix, published, customer_id,
                cluster=settings.redis_cluster)
            assert [o.rank for o in response.offers] == list(range(1, len(response.offers) + 1))


def test_every_fallback_is_named_in_strategy(published: str, settings: Settings) -> None:
    with running(settings) as (_, stub, _channel):
        def ask(**fields: object) -> pb.RecommendResponse:
            return stub.Recommend(pb.RecommendRequest(**fields), timeout=5)  # type: ignore[arg-type]

        with_segment = ask(customer_id="nobody", segment="at_risk")
        assert with_segment.strategy == pb.STRATEGY_SEGMENT_POPULAR
        assert with_segment.segment == "at_risk" and with_segment.offers
        without = ask(customer_id="nobody")
        assert without.strategy == pb.STRATEGY_GLOBAL_POPULAR and without.offers
        unknown_segment = ask(customer_id="nobody", segment="no-such-segment")
        assert unknown_segment.strategy == pb.STRATEGY_GLOBAL_POPULAR
        assert "no-such-segment" in unknown_segment.reason
        no_history = ask(customer_id="N1")
        assert no_history.strategy == pb.STRATEGY_SEGMENT_POPULAR
        assert no_history.segment == "at_risk"
        quiet = ask(customer_id="Q1")
        assert quiet.strategy == pb.STRATEGY_SEGMENT_POPULAR and quiet.segment == "quiet"
        assert "popularity" in quiet.reason


def test_rules_exclude_requested_offers_and_honour_channel_and_limit(
        published: str, settings: Settings, data: Path) -> None:
    customer_id = known_ids(data, 1)[0]
    with running(settings) as (_, stub, _channel):
        full = stub.Recommend(pb.RecommendRequest(customer_id=customer_id, limit=5), timeout=5)
        assert len(full.offers) == 5
        first = full.offers[0].offer_id
        without = stub.Recommend(pb.RecommendRequest(customer_id=customer_id, limit=5,
                                                     exclude_offer_ids=[first, "unknown"]),
                                 timeout=5)
        assert first not in [o.offer_id for o in without.offers]
        assert [o.offer_id for o in without.offers][:4] == [o.offer_id for o in full.offers][1:]
        email = stub.Recommend(pb.RecommendRequest(customer_id=customer_id, limit=100,
                                                   channel="email"), timeout=5)
        catalogue = {}
        for line in (data / "offers.csv").read_text().splitlines()[1:]:
            fields = line.split(",")
            catalogue[fields[0].strip('"')] = fields[5].strip('"')
        for offer in email.offers:
            assert catalogue[offer.offer_id] in ("",) or "email" in catalogue[offer.offer_id]


def test_no_model_published_is_failed_precondition_and_health_not_serving(
        settings: Settings) -> None:
    with running(settings) as (_, stub, channel):
        with pytest.raises(grpc.RpcError) as error:
            stub.Recommend(pb.RecommendRequest(customer_id="x"), timeout=5)
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "recsvc train" in error.value.details()
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_health_and_reflection(published: str, settings: Settings) -> None:
    with running(fast_settings(settings, reflection=True)) as (_, _stub, channel):
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "recsvc.v1.RetentionOfferService"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service),
                                timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        (answer,) = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        names = {s.name for s in answer.list_services_response.service}
        assert {"recsvc.v1.RetentionOfferService", "grpc.health.v1.Health"} <= names


@pytest.mark.cluster
@pytest.mark.parametrize("chunk", [7, 500])  # chunks smaller and larger than a ranking slice
def test_batch_answers_in_request_order_and_equals_single_calls(
        published: str, settings: Settings, data: Path, chunk: int) -> None:
    ids = known_ids(data, 130)
    ids = [ids[0], "unknown-1", *ids[1:], "Q2", "N1", ids[0]]
    with running(fast_settings(settings, batch_chunk=chunk)) as (_, stub, _channel):
        batch = list(stub.RecommendBatch(pb.RecommendBatchRequest(customer_ids=ids, limit=5),
                                         timeout=10))
        assert [r.customer_id for r in batch] == ids
        for response in batch:
            single = stub.Recommend(pb.RecommendRequest(customer_id=response.customer_id,
                                                        limit=5), timeout=5)
            assert [o.offer_id for o in response.offers] == [o.offer_id for o in single.offers]
            assert response.strategy == single.strategy


def test_batch_over_the_cap_is_invalid_argument(published: str, settings: Settings) -> None:
    with running(fast_settings(settings, max_batch_ids=5)) as (_, stub, _channel):
        with pytest.raises(grpc.RpcError) as error:
            list(stub.RecommendBatch(pb.RecommendBatchRequest(
                customer_ids=[f"c{i}" for i in range(6)]), timeout=5))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "customer_ids" in error.value.details() and "at most 5" in error.value.details()


@pytest.mark.parametrize(("fields", "named"), [
    ({"customer_id": ""}, "customer_id"),
    ({"customer_id": "x" * 300}, "customer_id"),
    ({"customer_id": "x", "limit": -1}, "limit"),
    ({"customer_id": "x", "limit": 101}, "limit"),
    ({"customer_id": "x", "channel": "e mail!"}, "channel"),
    ({"customer_id": "x", "exclude_offer_ids": ["o"] * 1001}, "exclude_offer_ids"),
    ({"customer_id": "x", "segment": "s" * 200}, "segment"),
])
def test_bad_input_is_invalid_argument_naming_the_field(
        published: str, settings: Settings, fields: dict[str, object], named: str) -> None:
    with running(settings) as (_, stub, _channel):
        with pytest.raises(grpc.RpcError) as error:
            stub.Recommend(pb.RecommendRequest(**fields), timeout=5)  # type: ignore[arg-type]
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details().startswith(named)


def test_model_info_describes_the_active_version(published: str, settings: Settings) -> None:
    with running(settings) as (_, stub, _channel):
        info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
    assert info.active_version == published and info.trained_at.endswith("Z")
    assert info.algorithm == "als" and len(info.data_fingerprint) == 64
    by_name = {s.name: s for s in info.segments}
    assert by_name["quiet"].strategy == pb.STRATEGY_SEGMENT_POPULAR
    assert by_name["quiet"].customers == 2
    personal = [s for s in info.segments if s.strategy == pb.STRATEGY_PERSONALIZED]
    assert personal and all(s.metrics.ndcg_at_10 > 0 and s.evaluated_customers for s in personal)


def test_a_model_switch_under_concurrent_load_has_no_errors_and_no_mixed_answers(
        published: str, settings: Settings, client: redis.Redis, data: Path) -> None:
    ids = known_ids(data, 20)
    seen: list[tuple[str, str, list[str]]] = []
    errors: list[Exception] = []
    stop = threading.Event()
    with running(settings) as (_, stub, _channel):
        def load() -> None:
            i = 0
            while not stop.is_set():
                customer_id = ids[i % len(ids)]
                i += 1
                try:
                    r = stub.Recommend(pb.RecommendRequest(customer_id=customer_id), timeout=5)
                    seen.append((customer_id, r.model_version, [o.offer_id for o in r.offers]))
                except grpc.RpcError as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        second = train(data, settings.redis_url, settings.key_prefix, seed=99)
        wait_for_version(stub, second)
        time.sleep(0.3)
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors
    versions = {version for _, version, _ in seen}
    assert versions == {published, second}
    references = {(c, v): reference_ranking(client, settings.key_prefix, v, c)
                  for c in ids for v in versions}
    mixed = [s for s in seen if references[(s[0], s[1])] != s[2]]
    assert not mixed, f"{len(mixed)} of {len(seen)} answers mix two versions"


@pytest.mark.parametrize("cap, threads, calls", [(2, 16, 6), (4, 2, 8)])
def test_concurrency_cap_answers_resource_exhausted_but_never_rejects_health(
        published: str, settings: Settings, client: redis.Redis, cap: int, threads: int,
        calls: int) -> None:
    """Calls beyond the cap are refused at once, never queued, and health answers meanwhile;
    also with fewer sync threads than the cap (16 < 64 by default): the admitted calls wait
    their turn for a thread, health does not wait behind them."""
    slow = fast_settings(settings, max_concurrent_rpcs=cap, sync_threads=threads,
                         redis_timeout_ms=3000, default_deadline_ms=10_000)
    with running(slow) as (server, stub, channel):
        stub.Recommend(pb.RecommendRequest(customer_id="warm"), timeout=5)
        client.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        futures = [stub.Recommend.future(pb.RecommendRequest(customer_id=f"x{i}"), timeout=10)
                   for i in range(calls)]
        time.sleep(0.3)
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
            health_pb2.HealthCheckResponse.SERVING
        codes = []
        for future in futures:
            try:
                future.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
        assert codes.count(grpc.StatusCode.OK) == cap
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == calls - cap
        assert server.limiter.in_flight == 0


def test_a_batch_its_caller_cancels_frees_its_slot_and_is_counted_cancelled(
        published: str, settings: Settings) -> None:
    with running(fast_settings(settings, batch_chunk=5)) as (server, stub, _channel):
        before = REGISTRY.get_sample_value(
            "recsvc_rpc_total", {"method": "RecommendBatch", "code": "CANCELLED"}) or 0.0
        call = stub.RecommendBatch(pb.RecommendBatchRequest(
            customer_ids=[f"x{i}" for i in range(5000)]), timeout=10)
        next(call)
        call.cancel()
        deadline = time.monotonic() + 3
        while server.limiter.in_flight and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.limiter.in_flight == 0
        assert REGISTRY.get_sample_value(
            "recsvc_rpc_total", {"method": "RecommendBatch", "code": "CANCELLED"}) == before + 1


def test_a_stopped_server_leaves_no_thread_of_its_pool(published: str,
                                                         settings: Settings) -> None:
    before = set(threading.enumerate())
    with running(settings) as (_server, stub, _channel):
        futures = [stub.Recommend.future(pb.RecommendRequest(customer_id=f"x{i}"), timeout=5)
                   for i in range(8)]
        for future in futures:
            future.result()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        left = [t for t in threading.enumerate() if t not in before and t.name.startswith("grpc")]
        if not left:
            break
        time.sleep(0.05)
    assert not left


def test_calls_admitted_beyond_the_threads_wait_their_turn(
        published: str, settings: Settings, client: redis.Redis) -> None:
    """More calls than RECSVC_SYNC_THREADS but within the cap are answered, none refused."""
    slow = fast_settings(settings, max_concurrent_rpcs=6, sync_threads=2,
                         redis_timeout_ms=3000, default_deadline_ms=10_000)
    with running(slow) as (server, stub, _channel):
        client.execute_command("CLIENT", "PAUSE", "500", "ALL")
        futures = [stub.Recommend.future(pb.RecommendRequest(customer_id=f"x{i}"), timeout=10)
                   for i in range(6)]
        assert all(f.result().model_version == published for f in futures)
        assert server.limiter.in_flight == 0


def test_graceful_stop_lets_in_flight_calls_finish(published: str, settings: Settings,
                                                    client: redis.Redis) -> None:
    slow = fast_settings(settings, redis_timeout_ms=3000, default_deadline_ms=10_000)
    with running(slow) as (server, stub, _channel):
        stub.Recommend(pb.RecommendRequest(customer_id="warm"), timeout=5)
        client.execute_command("CLIENT", "PAUSE", "800", "ALL")
        future = stub.Recommend.future(pb.RecommendRequest(customer_id="x"), timeout=10)
        time.sleep(0.2)
        stopper = threading.Thread(target=server.stop, args=(5.0,))
        stopper.start()
        assert future.result().model_version == published
        stopper.join()


class TestRedisTrouble:
    """A Redis of its own (AOF on, so a killed server comes back with its data)."""

    @pytest.fixture
    def own_redis(self) -> localredis.LocalRedis:
        server = localredis.start(persist=True)
        yield server  # type: ignore[misc]
        server.stop()

    def _ask(self, stub: object, customer_id: str) -> pb.RecommendResponse:
        started = time.monotonic()
        response = stub.Recommend(  # type: ignore[attr-defined]
            pb.RecommendRequest(customer_id=customer_id, segment="at_risk"), timeout=1)
        assert time.monotonic() - started < 0.5
        return response

    def test_stopped_then_killed_redis_degrades_to_popularity_and_recovers(
            self, own_redis: localredis.LocalRedis, data: Path, prefix: str,
            server_model: str) -> None:
        settings = Settings(redis_url=own_redis.url, key_prefix=prefix, host="127.0.0.1",
                            port=0, redis_timeout_ms=30, model_poll_ms=100,
                            server_model=server_model)
        train(data, own_redis.url, prefix)
        customer_id = known_ids(data, 1)[0]
        with running(settings) as (_, stub, channel):
            assert self._ask(stub, customer_id).strategy == pb.STRATEGY_PERSONALIZED
            health = health_pb2_grpc.HealthStub(channel)
            service = health_pb2.HealthCheckRequest(service="recsvc.v1.RetentionOfferService")
            for fault, recover in ((own_redis.pause, own_redis.resume),
                                   (own_redis.kill, own_redis.restart)):
                fault()
                degraded = [self._ask(stub, customer_id) for _ in range(20)]
                assert {r.strategy for r in degraded} == {pb.STRATEGY_DEGRADED_SEGMENT_POPULAR}
                assert all(r.offers for r in degraded)
                time.sleep(0.4)
                assert health.Check(service, timeout=1).status == \
                    health_pb2.HealthCheckResponse.NOT_SERVING
                recover()
                deadline = time.monotonic() + 5
                while self._ask(stub, customer_id).strategy != pb.STRATEGY_PERSONALIZED:
                    assert time.monotonic() < deadline, "did not recover"
                    time.sleep(0.05)
                assert health.Check(service, timeout=1).status == \
                    health_pb2.HealthCheckResponse.SERVING
