"""TLS, mutual TLS and token scopes on a real server: every stranger refused, nothing leaked."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsvc.api.auth import hash_token
from recsvc.api.server import RunningServer, build_server
from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.store.reads.reader import RedisStore, connect
from recsvc.v1 import offers_pb2 as pb
from recsvc.v1 import offers_pb2_grpc as pb_grpc
from tests.integration import certs
from tests.integration.helpers import cli

pytestmark = [pytest.mark.integration, pytest.mark.both_models]

RECOMMEND_TOKEN = "tok-recommend-7f3a"
FEEDBACK_TOKEN = "tok-feedback-91bc"
ADMIN_TOKEN = "tok-admin-55d0"


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, object]:
    ca = certs.authority(tmp_path, "good")
    other = certs.authority(tmp_path, "other")
    return {"ca": ca, "other": other,
            "server": ca.issue("server", server=True, file_stem="server"),
            "client": ca.issue("client", server=False),
            "stranger": other.issue("client", server=False)}


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"# sha256 scopes name\n{hash_token(RECOMMEND_TOKEN)} recommend crm\n"
                    f"{hash_token(FEEDBACK_TOKEN)} feedback  app\n"
                    f"{hash_token(ADMIN_TOKEN)} admin ops\n")
    return path


@contextmanager
def server(settings: Settings) -> Iterator[RunningServer]:
    store = RedisStore(connect(settings), schema.Keys(settings.key_prefix), settings)
    running = build_server(settings, store)
    try:
        yield running
    finally:
        running.stop(0)


def tls_settings(settings: Settings, pki: dict[str, object], mutual: bool = False,
                 tokens: Path | None = None) -> Settings:
    ca, pair = pki["ca"], pki["server"]
    assert isinstance(ca, certs.Authority) and isinstance(pair, certs.Pair)
    return replace(settings, tls_cert_file=str(pair.cert), tls_key_file=str(pair.key),
                   tls_client_ca_file=str(ca.cert_file) if mutual else "",
                   tokens_file=str(tokens or ""))


def secure(port: int, ca: Path, client: certs.Pair | None = None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        ca.read_bytes(), client.key.read_bytes() if client else None,
        client.cert.read_bytes() if client else None)
    return grpc.secure_channel(f"localhost:{port}", credentials)


def recommend(channel: grpc.Channel, token: str | None = None) -> grpc.StatusCode:
    stub = pb_grpc.RetentionOfferServiceStub(channel)
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
    try:
        stub.Recommend(pb.RecommendRequest(customer_id="C1"), timeout=5, metadata=metadata)
    except grpc.RpcError as exc:
        assert_nothing_leaked(exc.details() or "")
        return exc.code()
    return grpc.StatusCode.OK


def assert_nothing_leaked(details: str) -> None:
    for secret in (RECOMMEND_TOKEN, FEEDBACK_TOKEN, ADMIN_TOKEN, "tok-", "sha256", "/tmp",
                   "Traceback"):
        assert secret not in details, details


def test_plaintext_client_cannot_talk_to_a_tls_server(settings: Settings, pki: dict) -> None:
    with server(tls_settings(settings, pki)) as running, \
            grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        assert recommend(channel) == grpc.StatusCode.UNAVAILABLE


def test_tls_client_trusting_another_ca_is_refused(settings: Settings, pki: dict) -> None:
    with server(tls_settings(settings, pki)) as running, \
            secure(running.port, pki["other"].cert_file) as channel:
        assert recommend(channel) == grpc.StatusCode.UNAVAILABLE


def test_tls_without_a_model_reaches_the_service(settings: Settings, pki: dict) -> None:
    """The handshake works: the call gets the service's own answer (no model yet)."""
    with server(tls_settings(settings, pki)) as running, \
            secure(running.port, pki["ca"].cert_file) as channel:
        assert recommend(channel) == grpc.StatusCode.FAILED_PRECONDITION


def test_mutual_tls_refuses_a_missing_or_foreign_client_certificate(
        settings: Settings, pki: dict) -> None:
    with server(tls_settings(settings, pki, mutual=True)) as running:
        with secure(running.port, pki["ca"].cert_file) as channel:
            assert recommend(channel) == grpc.StatusCode.UNAVAILABLE
        with secure(running.port, pki["ca"].cert_file, pki["stranger"]) as channel:
            assert recommend(channel) == grpc.StatusCode.UNAVAILABLE
        with secure(running.port, pki["ca"].cert_file, pki["client"]) as channel:
            assert recommend(channel) == grpc.StatusCode.FAILED_PRECONDITION


def test_tokens_and_scopes(settings: Settings, pki: dict, tokens_file: Path) -> None:
    with server(tls_settings(settings, pki, mutual=True, tokens=tokens_file)) as running, \
            secure(running.port, pki["ca"].cert_file, pki["client"]) as channel:
        assert recommend(channel) == grpc.StatusCode.UNAUTHENTICATED  # no token
        assert recommend(channel, "not-a-token") == grpc.StatusCode.UNAUTHENTICATED
        assert recommend(channel, FEEDBACK_TOKEN) == grpc.StatusCode.PERMISSION_DENIED
        assert recommend(channel, RECOMMEND_TOKEN) == grpc.StatusCode.FAILED_PRECONDITION
        assert recommend(channel, ADMIN_TOKEN) == grpc.StatusCode.FAILED_PRECONDITION
        # Probes need no token.
        health = health_pb2_grpc.HealthStub(channel)
        health.Check(health_pb2.HealthCheckRequest(), timeout=5)


def test_tokens_on_a_plaintext_server_and_a_revoked_token(settings: Settings,
                                                          tokens_file: Path) -> None:
    with server(replace(settings, tokens_file=str(tokens_file))) as running, \
            grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        assert recommend(channel, RECOMMEND_TOKEN) == grpc.StatusCode.FAILED_PRECONDITION
        tokens_file.write_text(f"{hash_token(ADMIN_TOKEN)} admin\n")
        os.utime(tokens_file, (time.time() + 5, time.time() + 5))
        time.sleep(1.1)  # re-read at most once a second
        assert recommend(channel, RECOMMEND_TOKEN) == grpc.StatusCode.UNAUTHENTICATED


def test_a_full_server_answers_resource_exhausted_before_checking_the_token(
        settings: Settings, tokens_file: Path, client: redis.Redis) -> None:
    """The same order in both server models: the cap, then the token."""
    slow = replace(settings, tokens_file=str(tokens_file), max_concurrent_rpcs=1,
                   feedback_timeout_ms=3000)
    with server(slow) as running, \
            grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = pb_grpc.RetentionOfferServiceStub(channel)
        client.execute_command("CLIENT", "PAUSE", "800", "ALL")
        held = stub.RecordFeedback.future(
            pb.RecordFeedbackRequest(events=[pb.FeedbackEvent(
                event_id="e1", customer_id="c1", offer_id="o1", event="accept")]),
            timeout=5, metadata=(("authorization", f"Bearer {FEEDBACK_TOKEN}"),))
        time.sleep(0.3)
        assert recommend(channel) == grpc.StatusCode.RESOURCE_EXHAUSTED
        held.result()


def test_a_tokens_file_holding_a_clear_token_is_refused_at_start(
        settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "tokens"
    bad.write_text("my-secret-token recommend\n")
    with pytest.raises(Exception, match=r"line 1: the first field must be a sha256"):
        build_server(replace(settings, tokens_file=str(bad)),
                     RedisStore(connect(settings), schema.Keys("x"), settings))


def test_renewed_certificates_are_used_without_a_restart(
        settings: Settings, pki: dict, tmp_path: Path) -> None:
    with server(tls_settings(settings, pki)) as running:
        with secure(running.port, pki["ca"].cert_file) as channel:
            assert recommend(channel) == grpc.StatusCode.FAILED_PRECONDITION
        renewed = certs.authority(tmp_path / "renewed", "renewed")
        pair = renewed.issue("server", server=True)
        shutil.copy(pair.key, pki["server"].key)
        shutil.copy(pair.cert, pki["server"].cert)
        later = time.time() + 5
        for path in (pki["server"].key, pki["server"].cert):
            os.utime(path, (later, later))
        with secure(running.port, renewed.cert_file) as channel:
            assert recommend(channel) == grpc.StatusCode.FAILED_PRECONDITION
        with secure(running.port, pki["ca"].cert_file) as channel:
            assert recommend(channel) == grpc.StatusCode.UNAVAILABLE


def test_cli_clients_speak_mutual_tls_with_a_token(settings: Settings, pki: dict,
                                                    tokens_file: Path) -> None:
    with server(tls_settings(settings, pki, mutual=True, tokens=tokens_file)) as running:
        target = ["--target", f"localhost:{running.port}", "--ca", str(pki["ca"].cert_file),
                  "--cert", str(pki["client"].cert), "--key", str(pki["client"].key)]
        result = cli(["health", *target], settings.redis_url, settings.key_prefix)
        # Reached over mutual TLS: the server answers (not serving: no model published yet).
        assert result.stdout.strip() == "NOT_SERVING", result.stderr
        result = cli(["recommend", "C1", *target, "--token", FEEDBACK_TOKEN],
                     settings.redis_url, settings.key_prefix)
        assert result.returncode == 1 and "PERMISSION_DENIED" in result.stderr
        result = cli(["recommend", "C1", *target, "--token", RECOMMEND_TOKEN],
                     settings.redis_url, settings.key_prefix)
        assert "FAILED_PRECONDITION" in result.stderr  # through: no model published
        result = cli(["recommend", "C1", "--target", f"localhost:{running.port}"],
                     settings.redis_url, settings.key_prefix)
        assert result.returncode == 1 and "UNAVAILABLE" in result.stderr
