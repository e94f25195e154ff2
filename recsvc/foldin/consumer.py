"""``recsvc feedback consume``: fold recorded events into customers' vectors, exactly once.

Reads the 64 shard streams with the consumer group ``foldin`` (run more processes to scale; each
gets other entries). Per batch: read the active and previous pointers (after the read, so an
entry read after a model switch is never folded into the old version only), group the entries
by customer, read each customer's record and live fields in one pipeline, solve (pure:
``recsvc.feedback.foldin``), write ``r:<version>``/``f:<version>`` with a compare-and-set (one
pipeline; a lost race reads again), then ``XACK``. ``f:<version>`` lists the stream ids already
folded into the record, so a redelivered or replayed entry has effect once.

A crashed consumer's pending entries are taken over with ``XAUTOCLAIM`` once idle for
``claim_idle_seconds``. When the active version changes (and at start, unless done before) the
entries after the new version's training cutoff (``meta.feedback_cutoff``, per shard) are
replayed into it, so a model switch loses nothing and mixes nothing. SIGTERM: the current batch
finishes, then the process exits.

Every handled entry is counted by outcome and every failed batch by kind
(``recsvc.ops.foldin_metrics``); the backlog metrics are read from Redis at scrape time.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import redis
from redis.cluster import RedisCluster

from recsvc.core import schema
from recsvc.core.config import Settings, setting_name
from recsvc.core.errors import CorruptRecordError, StoreError
from recsvc.core.ratelog import RateLimitedLog
from recsvc.core.stopping import StopRequest
from recsvc.feedback.events import INTERACTIONS
from recsvc.feedback.foldin import ACCEPTED, FoldModel, NewEvent, add_events
from recsvc.ops import endpoint, foldin_metrics
from recsvc.store.feedback.backlog import read_backlog
from recsvc.store.feedback.fold_writes import fold_write_args, run_fold_writes
from recsvc.store.reads.reader import RedisStore

log = logging.getLogger(__name__)

GROUP = "foldin"
CLUSTER_IDLE_SECONDS = 0.1  # on a cluster, how often idle streams are asked again (no BLOCK)
FOLDED_KEPT = 256  # stream ids remembered per customer and version (older ones count as done)
CAS_ATTEMPTS = 5


def stream_id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class Entry:
    shard: int
    stream_id: str
    fields: dict[str, str]

    @property
    def customer(self) -> str:
        return self.fields.get("customer", "")


class ContentionError(StoreError):
    """Customers kept losing the compare-and-set to other consumers (the batch is retried)."""


@dataclass
class Outcomes:
    """What one customer's entries came to (``foldin_metrics.OUTCOMES``)."""

    folded: int = 0
    duplicate: int = 0
    no_effect: int = 0

    def record(self) -> None:
        foldin_metrics.events_handled("folded", self.folded)
        foldin_metrics.events_handled("duplicate", self.duplicate)
        foldin_metrics.events_handled("no_effect", self.no_effect)


def failure_kind(exc: Exception) -> str:
    """``foldin_metrics.FAILURE_KINDS`` of a failed batch."""
    if isinstance(exc, CorruptRecordError):
        return "corrupt"
    if isinstance(exc, ContentionError):
        return "contention"
    return "redis"


@dataclass
class Stats:
    entries: int = 0
    folded: int = 0  # customer records written
    skipped: int = 0  # entries that changed no vector (outcomes, popularity segments, ...)
    replayed: int = 0
    claimed: int = 0
    cas_retries: int = 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entries(shard: int, raw: list[Any]) -> list[Entry]:
    out = []
    for stream_id, fields in raw:
        if fields is None:  # deleted while pending
            continue
        out.append(Entry(shard, _text(stream_id),
                         {_text(k): _text(v) for k, v in fields.items()}))
    return out


class FoldInConsumer:
    def __init__(self, client: redis.Redis, settings: Settings, name: str | None = None,
                 batch: int = 500, block_ms: int = 1000, claim_idle_seconds: float = 30.0) -> None:
        self.client = client
        self.keys = schema.keys_for(settings)
        self.store = RedisStore(client, self.keys, settings)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = int(claim_idle_seconds * 1000)
        self.ttl = int(settings.live_ttl_days * 86400)
        self.model: FoldModel | None = None
        self.previous = ""
        self.stats = Stats()
        self._last_claim = 0.0
        self._trouble = RateLimitedLog(log)  # a long outage: a line per 10 s, not per second

    # -- set-up and the loop -------------------------------------------------------------
    def ensure_groups(self) -> None:
        """The group on every shard stream, from the stream's start (nothing is skipped)."""
        pipe = self.client.pipeline(transaction=False)
        for shard in range(schema.SHARDS):
            pipe.xgroup_create(self.keys.events(shard), GROUP, id="0", mkstream=True)
        for reply in pipe.execute(raise_on_error=False):
            if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
                raise StoreError(f"cannot create the consumer group: {reply}")

    def run(self, stop: StopRequest) -> Stats:
        """Until ``stop``. Redis trouble (also at start: Redis may come up after us) is a
        warning line (one per kind and 10 s), a failure count and a retry in 1 s, never an exit:
        the backlog waits."""
        started = False
        while not stop.is_set():
            try:
                if not started:
                    self.ensure_groups()
                    self.sync_version(start=True)
                    started = True
                self.step()
                if time.monotonic() - self._last_claim > self.claim_idle_ms / 4000:
                    self.claim_stale()
            except (redis.RedisError, StoreError) as exc:
                kind = failure_kind(exc)
                foldin_metrics.failure(kind)
                self._trouble.log(logging.WARNING, kind,
                                  f"fold-in: a batch failed ({kind}), retrying in 1 s: {exc}")
                stop.wait(1.0)
        return self.stats

    def step(self, block_ms: int | None = None) -> int:
        """Read one batch of new entries (waiting up to ``block_ms``), fold it, ack it."""
        block = self.block_ms if block_ms is None else block_ms
        if self.keys.cluster:
            entries = self._read_cluster(block)
        else:
            streams = {self.keys.events(s): ">" for s in range(schema.SHARDS)}
            reply: Any = self.client.xreadgroup(
                GROUP, self.name, streams,  # type: ignore[arg-type]
                count=self.batch, block=block)
            entries = [e for key, raw in (reply or [])
                       for e in _entries(self._shard_of_key(_text(key)), raw)]
        if not entries:
            return 0
        self.sync_version()  # after the read: see the module docstring
        self.fold(entries)
        self._ack(entries)
        self.stats.entries += len(entries)
        return len(entries)

    def _read_cluster(self, block_ms: int) -> list[Entry]:
        """On a cluster the 64 streams are on 64 slots and XREADGROUP's keys must share one:
        one XREADGROUP per stream, without BLOCK, in one cluster pipeline (a round trip per
        master); while all are empty it asks again every CLUSTER_IDLE_SECONDS up to
        ``block_ms`` (COUNT is per stream, as in the single Redis's one call)."""
        deadline = time.monotonic() + block_ms / 1000.0
        while True:
            pipe = self.client.pipeline(transaction=False)
            for shard in range(schema.SHARDS):
                pipe.xreadgroup(GROUP, self.name, {self.keys.events(shard): ">"},
                                count=self.batch)
            entries = [e for shard, reply in enumerate(pipe.execute())
                       for _key, raw in (reply or []) for e in _entries(shard, raw)]
            left = deadline - time.monotonic()
            if entries or left <= 0:
                return entries
            time.sleep(min(CLUSTER_IDLE_SECONDS, left))

    def claim_stale(self) -> int:
        """Take over entries another consumer read but did not ack for ``claim_idle``."""
        self._last_claim = time.monotonic()
        claimed: list[Entry] = []
        for shard in range(schema.SHARDS):
            start = "0-0"
            while True:
                result = self.client.xautoclaim(self.keys.events(shard), GROUP, self.name,
                                                self.claim_idle_ms, start_id=start,
                                                count=self.batch)
                start, raw = _text(result[0]), result[1]
                claimed.extend(_entries(shard, raw))
                if start == "0-0":
                    break
        if claimed:
            self.sync_version()
            self.fold(claimed)
            self._ack(claimed)
            self.stats.claimed += len(claimed)
            log.info("fold-in: took over %d pending entries", len(claimed))
        return len(claimed)

    # -- versions and replay -------------------------------------------------------------
    def sync_version(self, start: bool = False) -> None:
        active_raw, previous_raw = self.client.mget(self.keys.active, self.keys.previous)
        active = None if active_raw is None else _text(active_raw)
        self.previous = "" if previous_raw is None else _text(previous_raw)
        if active is None or (self.model is not None and self.model.version == active):
            if active is None:
                self.model = None
            return
        model = self.store.load_version(active)
        self.model = FoldModel.from_version(
            active, model.meta.as_dict(), model.catalogue.offer_ids,
            [(s.offers, s.factors) for s in model.segments])
        if start and self.client.hget(self.keys.foldin_replayed, active) is not None:
            return
        self.replay(model.meta.extra.get("feedback_cutoff") or {})

    def replay(self, cutoff: dict[str, str]) -> int:
        """Fold every entry after the version's training cutoff into it (idempotent)."""
        assert self.model is not None
        version = self.model.version
        count = 0
        for shard in range(schema.SHARDS):
            after = cutoff.get(str(shard))
            start = f"({after}" if after else "-"
            while True:
                raw: Any = self.client.xrange(self.keys.events(shard), min=start,
                                              count=self.batch)
                entries = _entries(shard, raw or [])
                if not entries:
                    break
                self.fold(entries)
                count += len(entries)
                start = f"({entries[-1].stream_id}"
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self.keys.foldin_replayed)  # a later switch back must replay again
        pipe.hset(self.keys.foldin_replayed, version, str(time.time()))
        pipe.execute()
        self.stats.replayed += count
        log.info("fold-in: replayed %d entries into version %s", count, version)
        return count

    # -- folding -------------------------------------------------------------------------
    def fold(self, entries: list[Entry]) -> None:
        model = self.model
        if model is None:
            self.stats.skipped += len(entries)
            Outcomes(no_effect=len(entries)).record()
            return
        by_customer: dict[str, list[Entry]] = defaultdict(list)
        ignored = 0
        for entry in entries:
            if entry.fields.get("event") in INTERACTIONS and entry.customer:
                by_customer[entry.customer].append(entry)
            else:
                ignored += 1
        self.stats.skipped += ignored
        Outcomes(no_effect=ignored).record()
        todo = dict(by_customer)
        for _ in range(CAS_ATTEMPTS):
            if not todo:
                return
            todo = self._fold_round(model, todo)
            self.stats.cas_retries += len(todo)
        raise ContentionError(f"fold-in: {len(todo)} customers kept losing the compare-and-set")

    def _fold_round(self, model: FoldModel,
                    todo: dict[str, list[Entry]]) -> dict[str, list[Entry]]:
        customers = list(todo)
        record_field = schema.live_record_field(model.version)
        folded_field = schema.live_folded_field(model.version)
        pipe = self.client.pipeline(transaction=False)
        for customer in customers:
            pipe.hget(self.keys.customer_hash_of(model.version, customer), customer)
            pipe.hmget(self.keys.live(customer), record_field, folded_field,
                       schema.LIVE_SEGMENT)
        replies = pipe.execute()
        writes: list[list[Any]] = []
        written: list[tuple[str, Outcomes]] = []
        for i, customer in enumerate(customers):
            base, (folded_record, folded_ids, live_segment) = replies[2 * i], replies[2 * i + 1]
            expected = "" if folded_ids is None else _text(folded_ids)
            outcomes = Outcomes()
            result = self._solve(model, todo[customer], folded_record or base, expected,
                                 None if live_segment is None else _text(live_segment),
                                 outcomes)
            if result is None:
                outcomes.record()
                continue
            record, folded = result
            writes.append(fold_write_args(self.keys.live(customer), record_field, folded_field,
                                          expected, record, folded, self.ttl, model.version,
                                          self.previous))
            written.append((customer, outcomes))
        won = run_fold_writes(self.client, writes)
        self.stats.folded += sum(won)
        for (_, outcomes), ok in zip(written, won, strict=True):
            if ok:  # a lost compare-and-set is solved again from what the winner wrote
                outcomes.record()
        return {c: todo[c] for (c, _), ok in zip(written, won, strict=True) if not ok}

    def _solve(self, model: FoldModel, entries: list[Entry], raw: bytes | None,
               folded_ids: str, live_segment: str | None,
               outcomes: Outcomes) -> tuple[bytes, str] | None:
        """The customer's new record and folded ids; None when nothing changes. ``outcomes``
        gets what each entry came to."""
        done = folded_ids.split()
        done_set = set(done)
        oldest = min((stream_id_key(s) for s in done), default=None)
        fresh = [e for e in entries if e.stream_id not in done_set
                 and not (len(done) >= FOLDED_KEPT and oldest is not None
                          and stream_id_key(e.stream_id) < oldest)]
        outcomes.duplicate = len(entries) - len(fresh)
        outcomes.no_effect = len(fresh)  # until an entry below turns out to change the vector
        if not fresh:
            return None
        if raw is not None:
            try:
                record = schema.decode_customer_record(raw)
            except ValueError as exc:
                raise CorruptRecordError(f"fold-in: a stored record does not decode: {exc}") \
                    from exc
            segment_index = record.segment_index
            cell_offers, cell_confidence = record.cell_offers, record.cell_confidence
            accepted, attributes = record.accepted, record.attributes
            if len(record.vector) and not len(cell_offers):
                return None  # a format-1 record: its training row is unknown, keep its vector
        else:  # unknown to the model: the segment of an event (or of the live hash)
            name = next((e.fields.get("segment") for e in reversed(fresh)
                         if e.fields.get("segment")), None) or live_segment
            if name is None or name not in model.segment_names:
                return None
            segment_index = model.segment_names.index(name)
            cell_offers = np.empty(0, np.uint32)
            cell_confidence = np.empty(0, np.float32)
            accepted = np.empty(0, np.uint32)
            attributes = np.empty(0, np.uint32)
        solver = model.solvers[segment_index] if segment_index < len(model.solvers) else None
        if solver is None:
            return None
        events = [NewEvent(model.offer_index[e.fields["offer"]], e.fields["event"])
                  for e in fresh if e.fields.get("offer") in model.offer_index]
        outcomes.folded, outcomes.no_effect = len(events), len(fresh) - len(events)
        cell_offers, cell_confidence = add_events(cell_offers, cell_confidence, events,
                                                  model.weights,
                                                  solver.negative_impression_weight)
        newly = [e.offer for e in events if e.event in ACCEPTED]
        if newly:
            accepted = np.union1d(accepted, np.asarray(newly, np.uint32)).astype(np.uint32)
        vector = solver.solve(cell_offers, cell_confidence, accepted)
        ids = sorted(done_set | {e.stream_id for e in fresh}, key=stream_id_key)[-FOLDED_KEPT:]
        encoded = schema.encode_customer_record(segment_index, vector, accepted,
                                                cell_offers=cell_offers,
                                                cell_confidence=cell_confidence,
                                                attributes=attributes)
        return encoded, " ".join(ids)

    def _ack(self, entries: list[Entry]) -> None:
        by_shard: dict[int, list[str]] = defaultdict(list)
        for entry in entries:
            by_shard[entry.shard].append(entry.stream_id)
        pipe = self.client.pipeline(transaction=False)
        for shard, ids in by_shard.items():
            pipe.xack(self.keys.events(shard), GROUP, *ids)
        pipe.execute()
        foldin_metrics.acknowledged(time.time(),
                                    [stream_id_key(e.stream_id)[0] for e in entries])

    def _shard_of_key(self, key: str) -> int:
        return int(key[key.rindex("{") + 1:key.rindex("}")])


def consume(settings: Settings, stop: StopRequest, name: str | None = None,
            batch: int = 500, claim_idle_seconds: float = 30.0) -> Stats:
    """The command's body: a client with generous timeouts, the loop until ``stop``; with
    ``RECSVC_FOLDIN_METRICS_PORT`` (or ``--metrics-port``) its metrics served meanwhile."""
    client = _client(settings, socket_timeout=30, socket_connect_timeout=5,
                     health_check_interval=30)
    consumer = FoldInConsumer(client, settings, name, batch,
                              claim_idle_seconds=claim_idle_seconds)
    with serving_metrics(settings) as port:
        log.info("fold-in consumer %s started", consumer.name,
                 extra={"metrics_port": port} if port else None)
        stats = consumer.run(stop)
    log.info("fold-in consumer %s stopped: %s", consumer.name, stats)
    return stats


def _client(settings: Settings, socket_timeout: float, socket_connect_timeout: float,
            health_check_interval: int = 0) -> redis.Redis:
    """The consumer's own client: timeouts of its own (a blocking read waits a second), a
    cluster client on a Redis Cluster."""
    if settings.redis_cluster:
        return cast(redis.Redis, RedisCluster.from_url(
            settings.redis_url, socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout))
    return redis.Redis.from_url(settings.redis_url, socket_timeout=socket_timeout,
                                socket_connect_timeout=socket_connect_timeout,
                                health_check_interval=health_check_interval)


@contextmanager
def serving_metrics(settings: Settings) -> Iterator[int]:
    """The consumer's /metrics while the block runs (yields its port; 0 = off). The backlog is
    read at scrape time on a client of its own whose timeouts fit a scrape (a few seconds)."""
    if not settings.foldin_metrics_port:
        yield 0
        return
    reader = _client(settings, socket_timeout=3, socket_connect_timeout=3)
    keys = schema.keys_for(settings)
    collector = foldin_metrics.watch_backlog(lambda: read_backlog(reader, keys, GROUP))
    try:
        with endpoint.serving_registry(foldin_metrics.REGISTRY,
                                       settings.metrics_host or settings.host,
                                       settings.foldin_metrics_port,
                                       setting_name("foldin_metrics_port")) as port:
            yield port
    finally:
        foldin_metrics.REGISTRY.unregister(collector)
        reader.close()
