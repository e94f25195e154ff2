"""Publishing refuses non-finite numbers before anything is written (a failed publish deleting
what it wrote is tested in test_training_checks)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import redis

from recsvc.core import schema
from recsvc.core.errors import PublishError
from recsvc.store.control.registry import TrainLock
from training.publish import SegmentArtifact, check_finite, publish

pytestmark = pytest.mark.integration


def artifact(items: np.ndarray | None = None) -> SegmentArtifact:
    return SegmentArtifact(np.arange(3, dtype=np.int64),
                           np.array([3.0, 2.0, 1.0], dtype=np.float32), items)


def run(client: redis.Redis, prefix: str, segment: SegmentArtifact,
        batches: Iterator[list[tuple[str, bytes]]], count: int) -> None:
    keys = schema.Keys(prefix)
    catalogue = [{"offer_id": f"o{i}"} for i in range(3)]
    with TrainLock(client, keys, 30) as lock:
        publish(client, keys, "v1", {"segments": [{"name": "s"}]}, catalogue, [segment],
                artifact(), batches, count, lock, activate=True, expected_active=None)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_item_factors_are_refused_before_anything_is_written(
        client: redis.Redis, prefix: str, bad: float) -> None:
    items = np.ones((3, 4), dtype=np.float32)
    items[1, 2] = bad
    with pytest.raises(PublishError, match="segment 0 factors: 1 NaN or infinite values"):
        run(client, prefix, artifact(items), iter([]), 0)
    assert client.keys(f"{prefix}:*") == []


def test_customer_vectors_are_checked_before_they_are_written() -> None:
    """The job calls this per segment before the segment's records go out."""
    vectors = np.ones((2, 4), dtype=np.float32)
    vectors[1, 0] = np.nan
    with pytest.raises(PublishError, match="customer vectors: 1 NaN or infinite values"):
        check_finite("segment 0 customer vectors", vectors)
    check_finite("segment 0 customer vectors", vectors[:1])
