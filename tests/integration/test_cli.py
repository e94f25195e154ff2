"""The command line as users run it: parquet data end to end, and several server processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from recsvc.v1 import offers_pb2 as pb
from recsvc.v1 import offers_pb2_grpc as pb_grpc
from tests.integration.helpers import FAST_CONFIG, cli
from training import localredis

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("model", ["aio", "sync"])
def test_parquet_data_trains_and_two_workers_serve_it_on_one_port(
        tmp_path: Path, redis_server: localredis.LocalRedis, prefix: str,
        model: str) -> None:
    url = redis_server.url
    made = cli(["datagen", "--out", str(tmp_path), "--customers", "800", "--offers", "40",
                "--segments", "2", "--format", "parquet"], url, prefix)
    assert made.returncode == 0, made.stderr
    (tmp_path / "c.toml").write_text(FAST_CONFIG)
    trained = cli(["train", "--customers", str(tmp_path / "customers.parquet"),
                   "--offers", str(tmp_path / "offers.parquet"),
                   "--interactions", str(tmp_path / "interactions.parquet"),
                   "--config", str(tmp_path / "c.toml")], url, prefix)
    assert trained.returncode == 0, trained.stderr
    port = localredis.free_port()
    env = dict(os.environ, RECSVC_REDIS_URL=url, RECSVC_KEY_PREFIX=prefix,
               RECSVC_PORT=str(port), RECSVC_HOST="127.0.0.1", RECSVC_SERVER_MODEL=model)
    server = subprocess.Popen([sys.executable, "-m", "recsvc", "serve", "--workers", "2"],
                              env=env)
    try:
        healthy = cli(["health", "--target", f"127.0.0.1:{port}", "--wait", "30"], url, prefix)
        assert healthy.returncode == 0 and "SERVING" in healthy.stdout
        versions = set()
        for _ in range(6):  # separate connections land on both processes
            with grpc.insecure_channel(f"127.0.0.1:{port}",
                                       options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                stub = pb_grpc.RetentionOfferServiceStub(ch)
                answer = stub.Recommend(pb.RecommendRequest(customer_id="C0000001"), timeout=5)
                assert answer.offers
                versions.add(answer.model_version)
        assert len(versions) == 1  # every process serves the same version
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
