"""recsvc against a real TLS-only redis-server with ACL users: training writes as one user,
serving reads as a read-only one, both over rediss:// with a client certificate."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlencode

import pytest
import redis

from recsvc.core.config import Settings
from recsvc.store.transport.blocking_pipeline import ThreadPipelines
from recsvc.store.transport.redis_pipeline import ReplyTimeout
from recsvc.v1 import offers_pb2 as pb
from tests.integration import certs, observe
from tests.integration.helpers import cli, train_args
from tests.integration.serving import PERSONAL_CONFIG, running
from training.localredis import free_port

pytestmark = [pytest.mark.integration, pytest.mark.both_models]


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    binary = shutil.which("redis-server")
    assert binary, "redis-server missing"
    ca = certs.authority(tmp_path / "pki", "redis")
    server, client = ca.issue("redis", server=True), ca.issue("recsvc", server=False)
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(server.cert), "--tls-key-file", str(server.key),
         "--tls-ca-cert-file", str(ca.cert_file), "--tls-auth-clients", "yes",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
         "--maxmemory-policy", "noeviction",
         "--user", "default", "off",
         "--user", "trainer", "on", ">train-pw", "~*", "&*", "+@all",
         "--user", "server", "on", ">serve-pw", "~*", "resetchannels", "-@all", "+@read",
         "+@connection"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    query = urlencode({"ssl_ca_certs": ca.cert_file, "ssl_certfile": client.cert,
                       "ssl_keyfile": client.key})
    urls = {user: f"rediss://{user}:{password}@127.0.0.1:{port}/0?{query}"
            for user, password in (("trainer", "train-pw"), ("server", "serve-pw"))}
    deadline = time.monotonic() + 15
    while True:
        try:
            redis.Redis.from_url(urls["trainer"], socket_timeout=1).ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise
            time.sleep(0.1)
    try:
        yield port, urls
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_train_and_serve_over_tls_with_acl_users(
        tls_redis: tuple[int, dict[str, str]], settings: Settings, tmp_path: Path) -> None:
    _, urls = tls_redis
    ids = observe.planted(tmp_path / "data", "T")
    (tmp_path / "config.toml").write_text(PERSONAL_CONFIG)
    trained = cli(train_args(tmp_path / "data", tmp_path / "config.toml"), urls["trainer"], "s")
    assert trained.returncode == 0, trained.stderr
    version = trained.stdout.strip().splitlines()[-1]

    reader = redis.Redis.from_url(urls["server"])
    with pytest.raises(redis.exceptions.NoPermissionError):
        reader.set("s:anything", "x")  # the serving user reads only
    with pytest.raises(redis.exceptions.ConnectionError):  # no client certificate: refused
        redis.Redis.from_url(urls["server"].split("&ssl_certfile")[0], socket_timeout=2).ping()

    served = replace(settings, redis_url=urls["server"], key_prefix="s")
    with running(served) as (_, stub, _channel):
        answer = stub.Recommend(pb.RecommendRequest(customer_id=ids[0]), timeout=10)
        assert answer.model_version == version
        assert answer.strategy == pb.STRATEGY_PERSONALIZED  # read over TLS, as user "server"
        batch = list(stub.RecommendBatch(pb.RecommendBatchRequest(customer_ids=ids[:20]),
                                         timeout=10))
        assert all("DEGRADED" not in pb.Strategy.Name(r.strategy) for r in batch)
    listed = cli(["models", "list"], urls["server"], "s")
    assert listed.returncode == 0 and version in listed.stdout, listed.stderr


def test_a_blocking_read_over_tls_times_out_like_a_plain_one(
        tls_redis: tuple[int, dict[str, str]]) -> None:
    """The thread-pool model's connection over rediss://: a Redis that does not answer fails
    the read within its timeout (OpenSSL retries a read the kernel's timeout interrupted)."""
    _, urls = tls_redis
    pipelines = ThreadPipelines(urls["trainer"])
    pauser = redis.Redis.from_url(urls["trainer"], socket_timeout=5)
    try:
        assert pipelines.execute_many([("PING",)], timeout=2) == [b"PONG"]
        pauser.execute_command("CLIENT", "PAUSE", "600", "ALL")
        started = time.monotonic()
        with pytest.raises(ReplyTimeout):
            pipelines.execute_many([("PING",)], timeout=0.05)
        assert time.monotonic() - started < 0.3
        time.sleep(0.7)
        assert pipelines.execute_many([("PING",)], timeout=2) == [b"PONG"]
    finally:
        pipelines.close()
        pauser.close()
