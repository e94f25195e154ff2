"""Fixtures the Redis connection tests share (both hot-path connections, aio and per thread)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis


@pytest.fixture
def filled(client: redis.Redis, prefix: str) -> Iterator[str]:
    key = f"{prefix}:h"
    client.hset(key, mapping={f"f{i}": f"v{i}" for i in range(500)})
    client.set(f"{prefix}:s", "a string")
    yield key
    client.delete(key, f"{prefix}:s")
