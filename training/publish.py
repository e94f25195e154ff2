"""Writing a model version to Redis, checking it, and only then making it active.

Order of a publish (a kill at any step leaves the active version whole and serving):
1. the manifest says ``writing`` (so a crashed run's keys can be found and deleted later);
2. catalogue, segment hashes and customer records are written under the new version id in
   pipelined batches (HSET of ``batch_size`` customers per command, ``transaction=False``);
3. meta is written last, then everything is read back and checked (counts, byte lengths,
   finite values, a sample of customer records byte for byte);
4. the manifest says ``complete``, with the customer count and a digest of the small keys
   (``Registry.check`` verifies both before an operator activates the version), and one Lua
   compare-and-set moves the active pointer (it also
   checks that this run still holds the training lock);
5. versions other than active, previous and this one are deleted.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import redis

from recsvc.core import schema
from recsvc.core.errors import PublishError
from recsvc.core.meta import ModelMeta
from recsvc.store.control.registry import Registry, TrainLock

log = logging.getLogger(__name__)

SAMPLE_CHECKED = 1000  # customer records read back byte for byte


@dataclass(frozen=True)
class SegmentArtifact:
    offers: npt.NDArray[np.int64]  # catalogue indices
    popularity: npt.NDArray[np.float32]
    items: npt.NDArray[np.float32] | None  # None: served by popularity


@dataclass(frozen=True)
class PublishResult:
    version: str
    activated: bool
    previous: str | None
    customers: int
    seconds: float
    deleted: list[str]

    @property
    def customers_per_second(self) -> float:
        return self.customers / self.seconds if self.seconds > 0 else 0.0


def _segment_fields(artifact: SegmentArtifact) -> dict[Any, bytes]:
    fields: dict[Any, bytes] = {schema.FIELD_OFFERS: schema.encode_u32(artifact.offers),
              schema.FIELD_POPULARITY: schema.encode_f32(artifact.popularity)}
    if artifact.items is not None:
        fields[schema.FIELD_FACTORS] = schema.encode_f32(artifact.items)
    return fields


def check_finite(name: str, values: npt.NDArray[np.float32] | None) -> None:
    """Refuse NaN or infinite factors, popularity or customer vectors before anything is written
    (serving would rank by them: NaN sorts anywhere)."""
    if values is not None and not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise PublishError(f"{name}: {bad} NaN or infinite values; not publishing")


def publish(
    client: redis.Redis,
    keys: schema.Keys,
    version: str,
    meta: ModelMeta,
    catalogue: list[dict[str, Any]],
    segments: list[SegmentArtifact],
    global_popular: SegmentArtifact,
    customer_batches: Iterable[list[tuple[str, bytes]]],
    customer_count: int,
    lock: TrainLock,
    activate: bool,
    expected_active: str | None,
    progress: Callable[[int], None] = lambda n: None,
) -> PublishResult:
    """Write, check and (with ``activate``) switch to ``version``. A failure raises (PublishError
    or redis.RedisError); the job deletes what was written and says why in one line."""
    for i, artifact in enumerate(segments):
        check_finite(f"segment {i} popularity", artifact.popularity)
        check_finite(f"segment {i} factors", artifact.items)
    check_finite("global popularity", global_popular.popularity)
    registry = Registry(client, keys)
    started = time.perf_counter()
    registry.begin(version, len(segments))

    pipe = client.pipeline(transaction=False)
    pipe.set(keys.offers(version), json.dumps(catalogue))
    for i, artifact in enumerate(segments):
        pipe.hset(keys.segment(version, i), mapping=_segment_fields(artifact))
    pipe.hset(keys.global_popularity(version), mapping=_segment_fields(global_popular))
    pipe.execute()

    written = 0
    samples: list[tuple[str, bytes]] = []
    for commands, chunk in enumerate(batched(customer_batches, 8)):
        if lock.lost:
            raise PublishError("lost the training lock while publishing; the new version is "
                               "left inactive and will be deleted by the next run")
        # On a cluster the records of a chunk go to the hash of their shard; a cluster pipeline
        # writes every master's commands before it reads a reply, so the masters work at once.
        pipe = client.pipeline(transaction=False)
        for key, records in _by_hash(keys, version, chunk):
            pipe.hset(key, mapping=records)
        for batch in chunk:
            written += len(batch)
            if commands % 50 == 0 and len(samples) < SAMPLE_CHECKED:
                samples.extend(batch[:20])
        pipe.execute()
        progress(sum(len(b) for b in chunk))
    if written != customer_count:
        raise PublishError(f"wrote {written} customer records, expected {customer_count}")
    client.set(keys.meta(version), meta.to_json())

    verify(client, keys, version, segments, global_popular, customer_count, samples)
    # What `recsvc models activate/rollback` re-checks later (Registry.check)
    registry.complete(version, len(segments), customers=customer_count,
                      digest=registry.digest(version, len(segments)))
    previous = None
    if activate:
        previous = registry.activate(version, expected_active, lock.token)
    deleted = registry.collect_garbage(keep={version})
    return PublishResult(version, activate, previous, written,
                         time.perf_counter() - started, deleted)


def _by_hash(keys: schema.Keys, version: str, chunk: list[list[tuple[str, bytes]]]
             ) -> list[tuple[str, dict[Any, bytes]]]:
    """The chunk's HSETs: one per batch into the one hash of a single Redis; on a cluster one
    per shard hash the chunk touches."""
    if not keys.cluster:
        return [(keys.customers(version), dict(batch)) for batch in chunk]
    grouped: dict[str, dict[Any, bytes]] = {}
    for batch in chunk:
        for customer_id, record in batch:
            key = keys.customer_hash_of(version, customer_id)
            grouped.setdefault(key, {})[customer_id] = record
    return list(grouped.items())


T = TypeVar("T")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of ``size`` items (the last may be shorter); itertools.batched from Python 3.12."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def verify(client: redis.Redis, keys: schema.Keys, version: str,
           segments: list[SegmentArtifact], global_popular: SegmentArtifact,
           customer_count: int, samples: list[tuple[str, bytes]]) -> None:
    """Read the version back; raise PublishError on the first difference."""
    stored = Registry(client, keys).record_count(version)
    if stored != customer_count:
        raise PublishError(f"version {version}: {stored} customer records stored, "
                           f"{customer_count} written")
    if client.get(keys.meta(version)) is None or client.get(keys.offers(version)) is None:
        raise PublishError(f"version {version}: meta or catalogue missing after write")
    pipe = client.pipeline(transaction=False)
    for i in range(len(segments)):
        pipe.hgetall(keys.segment(version, i))
    pipe.hgetall(keys.global_popularity(version))
    blobs = pipe.execute()
    for i, (artifact, blob) in enumerate(zip([*segments, global_popular], blobs, strict=True)):
        expected = {k.encode() if isinstance(k, str) else k: v
                    for k, v in _segment_fields(artifact).items()}
        if blob != expected:
            raise PublishError(f"version {version}: segment hash {i} differs from what was "
                               "written")
        check_finite(f"stored segment {i}", schema.decode_f32(blob[b"popularity"]))
    if samples:
        pipe = client.pipeline(transaction=False)
        for customer_id, _ in samples:
            pipe.hget(keys.customer_hash_of(version, customer_id), customer_id)
        values = pipe.execute()
        for (customer_id, record), value in zip(samples, values, strict=True):
            if value != record:
                raise PublishError(f"version {version}: record of customer {customer_id!r} "
                                   "differs from what was written")
            if not np.isfinite(schema.decode_customer_record(value).vector).all():
                raise PublishError(f"version {version}: customer {customer_id!r} has a "
                                   "non-finite vector")
