"""Shared fixtures: a throwaway redis-server for the session, a unique key prefix per test, and
(for modules marked ``cluster``) a throwaway 3-master Redis Cluster the same tests run against."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import cast

import pytest
import redis
from redis.cluster import RedisCluster

from recsvc.core import schema
from recsvc.core.config import Settings
from training import localredis

_prefixes = itertools.count()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[localredis.LocalRedis]:
    """A redis-server of our own on a free port; integration tests fail (never skip) without it."""
    try:
        server = localredis.start()
    except RuntimeError as exc:
        pytest.fail(f"integration tests need redis-server: {exc}", pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    return f"t{next(_prefixes)}"


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[localredis.LocalCluster]:
    """A Redis Cluster of 3 masters (no replicas: the failover test starts its own)."""
    try:
        cluster = localredis.start_cluster(masters=3)
    except RuntimeError as exc:
        pytest.fail(f"cluster tests need redis-server and redis-cli: {exc}", pytrace=False)
    yield cluster
    cluster.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_models: run the module's tests against the grpc.aio "
                            "and the thread-pool server model (RECSVC_SERVER_MODEL)")
    config.addinivalue_line("markers", "cluster: run the module's tests against a single Redis "
                            "and a 3-master Redis Cluster (RECSVC_REDIS_CLUSTER)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``both_models`` run once per server model, tests marked ``cluster`` once per
    Redis topology (through the ``settings``, ``redis_url`` and ``client`` fixtures)."""
    if "server_model" in metafunc.fixturenames and \
            metafunc.definition.get_closest_marker("both_models") is not None:
        metafunc.parametrize("server_model", ["aio", "sync"], indirect=True, scope="module")
    if "topology" in metafunc.fixturenames and \
            metafunc.definition.get_closest_marker("cluster") is not None:
        metafunc.parametrize("topology", ["single", "cluster"], indirect=True, scope="module")


@pytest.fixture(scope="module")
def server_model(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "aio"))


@pytest.fixture(scope="module")
def topology(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "single"))


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, topology: str) -> str:
    """The URL of the Redis the test runs against: the session's server, or one cluster node."""
    name = "redis_cluster" if topology == "cluster" else "redis_server"
    server: localredis.LocalRedis | localredis.LocalCluster = request.getfixturevalue(name)
    return server.url


@pytest.fixture
def settings(redis_url: str, topology: str, prefix: str, server_model: str) -> Settings:
    return Settings(redis_url=redis_url, redis_cluster=topology == "cluster", key_prefix=prefix,
                    host="127.0.0.1", port=0, redis_timeout_ms=50, model_poll_ms=100,
                    default_deadline_ms=1000, server_model=server_model)


@pytest.fixture
def keys(prefix: str, topology: str) -> schema.Keys:
    """The test's key names, for a cluster or a single Redis (``schema.keys_for``)."""
    return schema.Keys(prefix, cluster=topology == "cluster")


@pytest.fixture
def client(redis_url: str, topology: str) -> Iterator[redis.Redis]:
    """A client of the test's Redis (a cluster client on a cluster)."""
    connection: redis.Redis
    if topology == "cluster":
        connection = cast(redis.Redis, RedisCluster.from_url(redis_url, socket_timeout=10))
    else:
        connection = redis.Redis.from_url(redis_url, socket_timeout=10)
    yield connection
    connection.close()
