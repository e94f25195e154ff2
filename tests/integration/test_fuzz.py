"""No client input produces INTERNAL or UNKNOWN (property-based, against a real server)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from recsvc.core.config import Settings
from recsvc.v1 import offers_pb2 as pb
from tests.integration.serving import make_data, running, train

pytestmark = pytest.mark.integration

FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
texts = st.one_of(st.text(max_size=40), st.text(min_size=250, max_size=300),
                  st.sampled_from(["", "C0000001", "email", "at_risk", "OFF00001"]))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_server: object) -> object:
    settings = Settings(redis_url=redis_server.url, key_prefix="fuzz",  # type: ignore[attr-defined]
                        host="127.0.0.1", port=0)
    data = make_data(tmp_path_factory.mktemp("fuzz"), customers=500)
    train(data, settings.redis_url, settings.key_prefix)
    with running(settings) as (_, stub, _channel):
        yield stub


@hsettings(max_examples=150, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(customer_id=texts, limit=st.integers(-2**31, 2**31 - 1), channel=texts, segment=texts,
       exclude=st.lists(texts, max_size=5))
def test_recommend_never_answers_internal_or_unknown(server: object, customer_id: str,
                                                     limit: int, channel: str, segment: str,
                                                     exclude: list[str]) -> None:
    request = pb.RecommendRequest(customer_id=customer_id, limit=limit, channel=channel,
                                  segment=segment, exclude_offer_ids=exclude)
    try:
        server.Recommend(request, timeout=5)  # type: ignore[attr-defined]
    except grpc.RpcError as exc:
        assert exc.code() not in FORBIDDEN, exc.details()
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT


@hsettings(max_examples=60, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(texts, max_size=20), limit=st.integers(-5, 200), channel=texts)
def test_recommend_batch_never_answers_internal_or_unknown(server: object, ids: list[str],
                                                           limit: int, channel: str) -> None:
    request = pb.RecommendBatchRequest(customer_ids=ids, limit=limit, channel=channel)
    try:
        answers = list(server.RecommendBatch(request, timeout=5))  # type: ignore[attr-defined]
        assert [a.customer_id for a in answers] == ids
    except grpc.RpcError as exc:
        assert exc.code() not in FORBIDDEN, exc.details()
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_serve_process_exits_cleanly_on_sigterm(tmp_path: Path, redis_server: object) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from training.localredis import free_port

    port = free_port()
    env = dict(os.environ, RECSVC_REDIS_URL=redis_server.url,  # type: ignore[attr-defined]
               RECSVC_KEY_PREFIX="fuzz", RECSVC_PORT=str(port), RECSVC_HOST="127.0.0.1")
    process = subprocess.Popen([sys.executable, "-m", "recsvc", "serve"], env=env,
                               stderr=subprocess.PIPE, text=True)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=20)
    time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    assert "graceful shutdown" in process.stderr.read()  # type: ignore[union-attr]
