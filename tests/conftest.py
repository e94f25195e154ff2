"""Shared fixtures: a throwaway redis-server for the session, a unique key prefix per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import redis

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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_models: run the module's tests against the grpc.aio "
                            "and the thread-pool server model (RECSVC_SERVER_MODEL)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``both_models`` run once per server model (the ``settings`` fixture)."""
    if "server_model" in metafunc.fixturenames and \
            metafunc.definition.get_closest_marker("both_models") is not None:
        metafunc.parametrize("server_model", ["aio", "sync"], indirect=True, scope="module")


@pytest.fixture(scope="module")
def server_model(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "aio"))


@pytest.fixture
def settings(redis_server: localredis.LocalRedis, prefix: str, server_model: str) -> Settings:
    return Settings(redis_url=redis_server.url, key_prefix=prefix, host="127.0.0.1", port=0,
                    redis_timeout_ms=50, model_poll_ms=100, default_deadline_ms=1000,
                    server_model=server_model)


@pytest.fixture
def client(redis_server: localredis.LocalRedis) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_server.url, socket_timeout=10)
    yield connection
    connection.close()
