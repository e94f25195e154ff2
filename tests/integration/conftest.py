"""Fixtures the Redis connection tests share (both hot-path connections, aio and per thread),
on the test's topology: a single Redis, or a Redis Cluster (its connection per master)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis

from recsvc.store.transport.blocking_pipeline import ThreadPipelines
from recsvc.store.transport.cluster_blocking import ClusterThreadPipelines
from recsvc.store.transport.cluster_pipeline import ClusterPipelines
from recsvc.store.transport.redis_pipeline import PipelinedRedis

AioPipeline = PipelinedRedis | ClusterPipelines
ThreadPipeline = ThreadPipelines | ClusterThreadPipelines


@pytest.fixture
def filled(client: redis.Redis, prefix: str) -> Iterator[str]:
    key = f"{prefix}:h"
    client.hset(key, mapping={f"f{i}": f"v{i}" for i in range(500)})
    client.set(f"{prefix}:s", "a string")
    yield key
    client.delete(key)
    client.delete(f"{prefix}:s")


@pytest.fixture
def aio_pipeline(redis_url: str, topology: str) -> Callable[[], AioPipeline]:
    """A new event-loop connection of the topology (make it inside the loop that uses it)."""
    if topology == "cluster":
        return lambda: ClusterPipelines(redis_url, 1.0, 0.25)
    return lambda: PipelinedRedis(redis_url)


@pytest.fixture
def thread_pipelines(redis_url: str, topology: str) -> Iterator[ThreadPipeline]:
    """The per-thread connections of the topology, closed after the test."""
    pipelines: ThreadPipeline = ClusterThreadPipelines(redis_url, 1.0, 0.25) \
        if topology == "cluster" else ThreadPipelines(redis_url)
    yield pipelines
    pipelines.close()
