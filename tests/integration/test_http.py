"""The HTTP/JSON face on a real server (RECSVC_HTTP_PORT=0), called with urllib: the same answers,
tokens, metrics and validation as gRPC; every bad request a clear 4xx JSON, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from recsvc.api.auth import hash_token
from recsvc.api.server import RunningServer
from recsvc.core.config import Settings
from recsvc.v1 import offers_pb2 as pb
from recsvc.v1 import offers_pb2_grpc as pb_grpc
from tests.integration.helpers import FAST_CONFIG, planted
from tests.integration.http_face import SERVICE, Reply, call, http_server, request
from tests.integration.serving import train, wait_for_version
from training import localredis

pytestmark = [pytest.mark.integration, pytest.mark.both_models]

RECOMMEND_TOKEN, CRM_TOKEN = "tok-recommend-2b", "tok-crm-8c"


CRM = "https://crm.example.com"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory,
            redis_server: localredis.LocalRedis) -> tuple[Settings, str]:
    """One planted model for the module (training is what takes the time)."""
    settings = Settings(redis_url=redis_server.url, key_prefix="http-face", host="127.0.0.1",
                        port=0, redis_timeout_ms=50, model_poll_ms=100,
                        default_deadline_ms=1000)
    version = train(planted(tmp_path_factory.mktemp("http")), settings.redis_url,
                    settings.key_prefix, FAST_CONFIG)
    return settings, version


@pytest.fixture(scope="module")
def face(trained: tuple[Settings, str], server_model: str) -> Iterator[RunningServer]:
    """The server most tests share: CORS for the CRM's origin, a 4 KiB body cap."""
    settings, version = trained
    with http_server(replace(settings, server_model=server_model), http_cors_origins=f"{CRM}, https://other.example",
                     http_max_body_bytes=4096) as running:
        channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
        wait_for_version(pb_grpc.RetentionOfferServiceStub(channel), version)
        channel.close()
        yield running


def port_of(running: RunningServer) -> int:
    assert running.http is not None
    return running.http.port


def assert_error(reply: Reply, status: int, code: str, *words: str) -> None:
    assert reply.status == status, reply.body
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert body["code"] == code, body
    for word in words:
        assert word in body["message"], body
    assert "Traceback" not in reply.body.decode()


def rpc_count(method: str, code: str) -> float:
    return REGISTRY.get_sample_value("recsvc_rpc_total", {"method": method, "code": code}) or 0.0


def test_recommend_over_http_answers_what_grpc_answers(face: RunningServer,
                                                       trained: tuple[Settings, str]) -> None:
    version = trained[1]
    with grpc.insecure_channel(f"127.0.0.1:{face.port}") as channel:
        stub = pb_grpc.RetentionOfferServiceStub(channel)
        before = rpc_count("Recommend", "OK")
        reply = call(port_of(face), "Recommend", {"customerId": "a-test", "limit": 3},
                     x_request_id="req-http-1")
        assert reply.status == 200, reply.body
        assert rpc_count("Recommend", "OK") == before + 1  # the same metrics as gRPC
        assert reply.headers["x-request-id"] == "req-http-1"
        body = reply.json()
        by_grpc = stub.Recommend(pb.RecommendRequest(customer_id="a-test", limit=3), timeout=5)
        assert [o["offerId"] for o in body["offers"]] == [o.offer_id for o in by_grpc.offers]
        assert body["offers"][0]["offerId"] == "a5"  # the planted taste, as over gRPC
        assert body["modelVersion"] == version
        assert body["strategy"] == pb.Strategy.Name(by_grpc.strategy)
        assert body["decisionId"] and body["offers"][0]["reasons"]


def test_batch_is_one_json_array_in_the_order_of_the_ids(face: RunningServer) -> None:
    ids = ["a-test", "b3", "nobody-known"]
    reply = call(port_of(face), "RecommendBatch", {"customerIds": ids, "limit": 2})
    assert reply.status == 200, reply.body
    answers = reply.json()
    assert [a["customerId"] for a in answers] == ids
    assert all(len(a["offers"]) == 2 for a in answers)


def test_feedback_and_model_info_over_http(face: RunningServer,
                                           trained: tuple[Settings, str]) -> None:
    version = trained[1]
    port = port_of(face)
    info = call(port, "GetModelInfo", {})
    assert info.status == 200 and info.json()["activeVersion"] == version
    answer = call(port, "Recommend", {"customerId": "a-test", "limit": 1}).json()
    event = {"eventId": "http-e1", "customerId": "a-test", "event": "accept",
             "offerId": answer["offers"][0]["offerId"], "decisionId": answer["decisionId"],
             "time": "2026-01-31T09:30:00Z"}
    first = call(port, "RecordFeedback", {"events": [event]})
    assert first.status == 200, first.body
    assert first.json()["results"] == [{"eventId": "http-e1", "status":
                                        "FEEDBACK_STATUS_RECORDED", "reason": ""}]
    again = call(port, "RecordFeedback", {"events": [event]}).json()
    assert again["results"][0]["status"] == "FEEDBACK_STATUS_DUPLICATE"


def test_health_is_open_and_says_whether_the_instance_can_answer(
        settings: Settings, face: RunningServer, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{hash_token(CRM_TOKEN)} recommend,feedback crm\n")
    with http_server(settings, tokens_file=str(tokens)) as empty:  # nothing published here
        reply = request(port_of(empty), "/healthz")  # and no token
        assert reply.status == 503 and reply.json() == {"status": "NOT_SERVING"}
        assert_error(call(port_of(empty), "Recommend", {"customerId": "x"}, token=CRM_TOKEN),
                     400, "failed_precondition", "recsvc train")
    reply = request(port_of(face), "/healthz")
    assert reply.status == 200 and reply.json() == {"status": "SERVING"}


def test_tokens_and_scopes_are_checked_as_over_grpc(trained: tuple[Settings, str],
                                                    tmp_path: Path) -> None:
    settings = trained[0]
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{hash_token(RECOMMEND_TOKEN)} recommend app\n"
                      f"{hash_token(CRM_TOKEN)} recommend,feedback crm\n")
    with http_server(settings, tokens_file=str(tokens)) as running:
        assert running.http is not None
        port = running.http.port
        ask = {"customerId": "a-test"}
        assert_error(call(port, "Recommend", ask), 401, "unauthenticated", "bearer token")
        assert_error(call(port, "Recommend", ask, token="wrong"), 401, "unauthenticated",
                     "invalid token")
        feedback = {"events": [{"eventId": "t1", "customerId": "a-test", "offerId": "a1",
                                "event": "click"}]}
        assert_error(call(port, "RecordFeedback", feedback, token=RECOMMEND_TOKEN), 403,
                     "permission_denied", "'feedback' scope")
        assert call(port, "Recommend", ask, token=RECOMMEND_TOKEN).status == 200
        assert call(port, "RecordFeedback", feedback, token=CRM_TOKEN).status == 200


BAD_BODIES = [
    pytest.param(b"{not json", "request body is not JSON", id="malformed-json"),
    pytest.param(b"\xff\xfe", "request body is not JSON", id="bad-utf8"),
    pytest.param(b"[1, 2]", "must be a JSON object", id="array"),
    pytest.param(b'{"customerId": "a", "limit": "ten"}', "limit", id="wrong-type"),
    pytest.param(b'{"customerId": 7}', "customerId", id="number-for-string"),
    pytest.param(b'{"customerId": "a", "limt": 3}', "limt", id="unknown-field"),
    pytest.param(b'{"customerId": "a", "limit": 1000}', "limit", id="limit-out-of-range"),
    pytest.param(b'{"customerId": ""}', "customer_id", id="empty-id"),
]


@pytest.mark.parametrize(("body", "words"), BAD_BODIES)
def test_a_bad_body_is_a_400_naming_the_field(face: RunningServer, body: bytes,
                                              words: str) -> None:
    assert_error(call(port_of(face), "Recommend", body), 400, "invalid_argument", words)


def test_refusals_outside_the_body_are_json_4xx(face: RunningServer) -> None:
    port = port_of(face)
    big = {"customerId": "a", "excludeOfferIds": ["x" * 100] * 100}
    assert_error(call(port, "Recommend", big), 413, "resource_exhausted",
                 "RECSVC_HTTP_MAX_BODY_BYTES")
    assert_error(call(port, "Recommend", b"customerId=a", content_type="text/plain"),
                 415, "invalid_argument", "application/json")
    assert_error(call(port, "Nope", {}), 404, "not_found", "Recommend")
    assert_error(request(port, f"{SERVICE}/Recommend"), 405, "unimplemented")
    assert_error(request(port, "/nothing/here"), 404, "not_found")
    assert_error(call(port, "Recommend", {"customerId": "a"}, connect_timeout_ms="soon"),
                 400, "invalid_argument", "connect-timeout-ms")


def test_cors_admits_only_the_configured_origins(face: RunningServer) -> None:
    crm = CRM
    port = port_of(face)
    preflight = {"access-control-request-method": "POST",
                 "access-control-request-headers": "authorization, content-type"}
    ok = request(port, f"{SERVICE}/Recommend", method="OPTIONS",
                 headers={"origin": crm, **preflight})
    assert ok.status == 204
    assert ok.headers["access-control-allow-origin"] == crm
    assert "authorization" in ok.headers["access-control-allow-headers"]
    assert "POST" in ok.headers["access-control-allow-methods"]
    refused = request(port, f"{SERVICE}/Recommend", method="OPTIONS",
                      headers={"origin": "https://evil.example", **preflight})
    assert_error(refused, 403, "permission_denied", "https://evil.example",
                 "RECSVC_HTTP_CORS_ORIGINS")
    asked = call(port, "Recommend", {"customerId": "a-test"}, origin=crm)
    assert asked.status == 200 and asked.headers["access-control-allow-origin"] == crm
    stranger = call(port, "Recommend", {"customerId": "a-test"},
                    origin="https://evil.example")
    assert "access-control-allow-origin" not in stranger.headers
