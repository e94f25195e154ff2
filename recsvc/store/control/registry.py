"""Model versions in Redis: list, activate (an atomic compare-and-set), roll back, delete.

The pointer flip is one Lua script, so a reader sees either the old or the new version, never a
mix, and a training run whose lock has expired can never activate over a newer run.

A version is checked before an operator activates it or rolls back to it (``check``): its
manifest records, at publish, the number of customer records and a SHA-256 digest of its small
keys (meta, catalogue, segment hashes, global popularity). Redis evicts or deletes whole keys,
never single hash fields, so HLEN of the customers hash plus that digest (a few MB to read at
any customer count) plus a sample of decoded records finds a partly evicted version in
milliseconds; a digest over every customer record would cost a full HSCAN (docs/DESIGN.md, 2).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import redis
from redis.cluster import RedisCluster

from recsvc.core import schema
from recsvc.core.errors import LockHeldError, PublishError, RecsvcError

log = logging.getLogger(__name__)

STATE_WRITING = "writing"
STATE_COMPLETE = "complete"
SAMPLE_CHECKED = 64  # customer records decoded by check(): HRANDFIELD, one round trip

# KEYS: active, previous, versions, lock. ARGV: expected active ('' = none), new version,
# lock token ('' = no lock required). Returns {status, current active}.
_ACTIVATE = """
local cur = redis.call('GET', KEYS[1]) or ''
if ARGV[3] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[3] then return {-2, cur} end
if cur ~= ARGV[1] then return {0, cur} end
local manifest = redis.call('HGET', KEYS[3], ARGV[2])
if not manifest or cjson.decode(manifest)['state'] ~= 'complete' then return {-1, cur} end
if cur == ARGV[2] then return {1, cur} end
redis.call('SET', KEYS[1], ARGV[2])
if cur ~= '' then redis.call('SET', KEYS[2], cur) else redis.call('DEL', KEYS[2]) end
return {1, cur}
"""

# KEYS: lock. ARGV: token, ttl ms. Extends the lock while we hold it; takes it back if it lapsed
# and nobody took it (1: renewed, 2: taken back, 0: another run holds it). Taking it back is safe:
# a run that held it in between either deleted our unfinished version (our read-back fails) or
# moved the active pointer (our compare-and-set fails), so a lapse never publishes silently.
_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class VersionInfo:
    version: str
    state: str
    created_at: str
    segment_count: int
    role: str  # "active", "previous", "challenger" (a running experiment's) or ""


class Registry:
    """Version bookkeeping under one key prefix."""

    def __init__(self, client: redis.Redis, keys: schema.Keys) -> None:
        self.client = client
        self.keys = keys
        self._activate = client.register_script(_ACTIVATE)

    def pointers(self) -> tuple[str | None, str | None]:
        active, previous = self.client.mget(self.keys.active, self.keys.previous)
        return _text(active), _text(previous)

    def challenger(self) -> str | None:
        """The running experiment's challenger version (``recsvc experiments``): kept like the
        active and previous versions until the experiment ends."""
        return _text(self.client.hget(self.keys.experiments, "challenger"))

    def manifest(self, version: str) -> dict[str, Any] | None:
        raw = self.client.hget(self.keys.versions, version)
        return None if raw is None else dict(json.loads(raw))

    def all(self) -> list[VersionInfo]:
        active, previous = self.pointers()
        challenger = self.challenger()
        infos = []
        for raw_version, raw in sorted(self.client.hgetall(self.keys.versions).items()):
            version = _text(raw_version) or ""
            manifest = json.loads(raw)
            role = "active" if version == active else "previous" if version == previous else ""
            if not role and version == challenger:
                role = "challenger"
            infos.append(VersionInfo(version, manifest.get("state", "?"),
                                     manifest.get("created_at", ""),
                                     int(manifest.get("segment_count", 0)), role))
        return infos

    def begin(self, version: str, segment_count: int) -> None:
        """Record a version before its first key is written, so a crash leaves it findable."""
        self._set_manifest(version, STATE_WRITING, segment_count)

    def complete(self, version: str, segment_count: int, customers: int | None = None,
                 digest: str | None = None) -> None:
        """Mark a version complete, with what ``check`` verifies later."""
        extra = {} if customers is None else {"customers": customers, "digest": digest}
        self._set_manifest(version, STATE_COMPLETE, segment_count, extra)

    def _set_manifest(self, version: str, state: str, segment_count: int,
                      extra: dict[str, Any] | None = None) -> None:
        manifest = {"state": state, "segment_count": segment_count,
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    **(extra or {})}
        self.client.hset(self.keys.versions, version, json.dumps(manifest))

    def digest(self, version: str, segment_count: int) -> str:
        """SHA-256 over the version's small keys: meta, catalogue, segment hashes, global."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.keys.meta(version))
        pipe.get(self.keys.offers(version))
        for i in range(segment_count):
            pipe.hgetall(self.keys.segment(version, i))
        pipe.hgetall(self.keys.global_popularity(version))
        digest = hashlib.sha256()
        for blob in pipe.execute():
            parts = [b"-"] if blob is None else [blob] if isinstance(blob, bytes) else \
                [part for field in sorted(blob) for part in (field, blob[field])]
            for part in parts:
                digest.update(len(part).to_bytes(8, "little") + part)
        return digest.hexdigest()

    def check(self, version: str) -> str:
        """Raise PublishError unless ``version`` is complete in Redis; returns what was checked.

        Checks: manifest complete; meta and catalogue present; customer records = the count
        recorded at publish; the digest of the small keys; a sample of records decodes, with a
        segment index in range and finite factors.
        """
        manifest = self.manifest(version)
        if manifest is None:
            raise PublishError(f"version {version} is not a complete published version (no such "
                               "version)")
        if manifest.get("state") != STATE_COMPLETE:
            raise PublishError(f"version {version} is not a complete published version "
                               f"(state {manifest.get('state')})")
        segments = int(manifest.get("segment_count", 0))
        hashes = self.keys.customer_hashes(version)
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(self.keys.meta(version), self.keys.offers(version),
                    self.keys.global_popularity(version),
                    *(self.keys.segment(version, i) for i in range(segments)))
        for key in hashes:
            pipe.hlen(key)
        # A sample from every hash, SAMPLE_CHECKED in all (at least one per hash)
        each = max(1, SAMPLE_CHECKED // len(hashes))
        for key in hashes:
            pipe.hrandfield(key, each, withvalues=True)
        present, *replies = pipe.execute()
        stored = sum(replies[:len(hashes)])
        sample = [item for reply in replies[len(hashes):] for item in reply]
        refuse = f"version {version} is incomplete in Redis (evicted or deleted?): "
        if present != segments + 3:
            raise PublishError(refuse + f"{segments + 3 - present} of its {segments + 3} model "
                               "keys (meta, catalogue, segments, global) are missing")
        expected = manifest.get("customers")
        if expected is not None and stored != expected:
            raise PublishError(refuse + f"{stored:,} customer records, {expected:,} published")
        if manifest.get("digest") and self.digest(version, segments) != manifest["digest"]:
            raise PublishError(refuse + "meta, catalogue or segment hashes differ from what was "
                               "published (digest mismatch)")
        for field, value in zip(sample[::2], sample[1::2], strict=True):
            try:
                record = schema.decode_customer_record(value)
            except ValueError as exc:
                raise PublishError(refuse + f"customer record {field!r}: {exc}") from None
            if record.segment_index >= segments or not np.isfinite(record.vector).all():
                raise PublishError(refuse + f"customer record {field!r} is corrupt")
        if expected is None:
            return f"{stored:,} customer records, keys present (published without a digest)"
        return f"{stored:,} customer records, digest {manifest['digest'][:12]}"

    def record_count(self, version: str) -> int:
        """The customer records a version holds in Redis (over its one or 64 hashes)."""
        pipe = self.client.pipeline(transaction=False)
        for key in self.keys.customer_hashes(version):
            pipe.hlen(key)
        return sum(pipe.execute())

    def activate(self, version: str, expected_active: str | None,
                 lock_token: str = "") -> str | None:
        """Make ``version`` active if the pointer still says ``expected_active``.

        Returns the version that was active before. Raises PublishError otherwise.
        """
        status, current = self._activate(
            keys=[self.keys.active, self.keys.previous, self.keys.versions, self.keys.train_lock],
            args=[expected_active or "", version, lock_token],
        )
        current_text = _text(current) or None
        if status == -2:
            raise PublishError("the training lock expired or was taken over; not activating")
        if status == -1:
            raise PublishError(f"version {version} is not a complete published version")
        if status == 0:
            raise PublishError(
                f"the active version changed during the run (now {current_text}); not activating"
            )
        return current_text

    def rollback(self) -> str:
        """Swap active and previous, once previous passes ``check``; returns it."""
        active, previous = self.pointers()
        if not previous:
            raise RecsvcError("no previous version to roll back to")
        self.check(previous)
        self.activate(previous, active)
        return previous

    def delete(self, version: str) -> None:
        """Remove a version's keys (UNLINK frees big hashes in the background) and manifest."""
        active, previous = self.pointers()
        if version in (active, previous):
            role = "active" if version == active else "previous"
            raise RecsvcError(f"version {version} is {role}; not deleting it")
        if version == self.challenger():
            raise RecsvcError(f"version {version} is the running experiment's challenger; "
                              "not deleting it (stop or promote the experiment first)")
        manifest = self.manifest(version) or {}
        count = int(manifest.get("segment_count", 0))
        keys = self.keys.version_keys(version, count)
        # A crashed writer may have written segments its manifest does not count yet. On a
        # cluster they are on the control slot: only its master is scanned.
        match = self.keys.segment(version, 0).removesuffix("0") + "*"
        if self.keys.cluster:
            node = self.client.get_node_from_key(self.keys.active)  # type: ignore[attr-defined]
            found = self.client.scan_iter(match=match, count=1000, target_nodes=node)
        else:
            found = self.client.scan_iter(match=match, count=1000)
        keys += [k.decode() for k in found]
        pipe = self.client.pipeline(transaction=False)
        if self.keys.cluster:  # a cluster pipeline unlinks one key per command (its slot's)
            for key in sorted(set(keys)):
                pipe.unlink(key)
        else:
            pipe.unlink(*sorted(set(keys)))
        pipe.hdel(self.keys.versions, version)
        pipe.execute()

    def collect_garbage(self, keep: set[str]) -> list[str]:
        """Delete every recorded version that is not active, previous or in ``keep``."""
        active, previous = self.pointers()
        live = {v for v in (active, previous, self.challenger()) if v} | keep
        recorded = [_text(v) or "" for v in self.client.hkeys(self.keys.versions)]
        doomed = [v for v in recorded if v not in live]
        for version in doomed:
            self.delete(version)
        return doomed


def redis_problem(exc: redis.RedisError, url: str) -> str:
    """One line for a Redis failure of a command-line tool: where (never the password), what."""
    parts = urlsplit(url)
    where = (f"unix://{parts.path}" if parts.scheme == "unix" else
             f"{parts.scheme}://{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path}")
    # redis-py quotes the failed pipeline command (keys, binary values): keep only the error.
    detail = (str(exc).splitlines() or ["no answer"])[0].split(" of pipeline caused error: ")[-1]
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        detail += " (Redis is out of memory: raise maxmemory or free room for one more version)"
    return f"Redis at {where} failed: {type(exc).__name__}: {detail}"


def eviction_risk(client: redis.Redis) -> str | None:
    """One line when Redis may evict model keys, else None.

    Model keys have no TTL, so ``noeviction`` and every ``volatile-*`` policy leave them alone
    (under ``volatile-*`` only the training lock, which has a TTL, could go: the activation
    script then refuses to flip). An ``allkeys-*`` policy may drop any key, i.e. part of a live
    version, once ``maxmemory`` is reached; with maxmemory 0 (no limit) not yet, but one
    ``CONFIG SET`` away, so that is reported too. Read with CONFIG GET, or INFO where a managed
    Redis disables CONFIG. None too when Redis does not answer: the caller's next command says so.
    On a cluster every master is asked (each holds part of every version); the first at risk is
    named.
    """
    if not isinstance(client, RedisCluster):
        return _eviction_risk(client, {})
    for node in client.get_primaries():
        risk = _eviction_risk(client, {"target_nodes": node})
        if risk:
            return f"{node.name}: {risk}"
    return None


def _eviction_risk(client: redis.Redis, where: dict[str, Any]) -> str | None:
    try:
        try:
            config = client.config_get("maxmemory*", **where)
            policy, maxmemory = config.get("maxmemory-policy"), config.get("maxmemory")
        except redis.ResponseError:
            info = client.info("memory", **where)
            policy, maxmemory = info.get("maxmemory_policy"), info.get("maxmemory")
    except redis.RedisError:
        return None
    policy = _text(policy) or ""
    if not policy.startswith("allkeys"):
        return None
    limit = int(_text(maxmemory) or 0)
    reached = (f"when its maxmemory ({limit / 2**20:,.0f} MiB) is reached" if limit else
               "once a maxmemory is set (none now)")
    return (f"Redis maxmemory-policy is {policy}: {reached} Redis may evict parts of a model "
            "version and answers go silently wrong; set maxmemory-policy noeviction "
            "(a volatile-* policy is safe too: model keys have no TTL)")


class TrainLock:
    """A lock with a TTL, renewed by a heartbeat thread while the run lives.

    A killed run stops renewing, so the lock expires by itself after ``ttl_seconds``.
    """

    def __init__(self, client: redis.Redis, keys: schema.Keys, ttl_seconds: float) -> None:
        self.client = client
        self.key = keys.train_lock
        self.ttl_ms = max(100, int(ttl_seconds * 1000))
        self.token = secrets.token_hex(16)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False
        self.lapses = 0

    def __enter__(self) -> TrainLock:
        if not self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
            ttl = self.client.pttl(self.key)
            raise LockHeldError(
                f"another training run holds the lock {self.key} (expires in "
                f"{max(ttl, 0) / 1000:.1f} s unless renewed); refusing to run concurrently"
            )
        self._thread = threading.Thread(target=self._heartbeat, name="train-lock", daemon=True)
        self._thread.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000.0):
            try:
                status = self._renew(keys=[self.key], args=[self.token, self.ttl_ms])
                if not status:
                    self.lost = True
                    return
                if status == 2:  # a beat came later than the TTL: an overloaded machine
                    self.lapses += 1
                    log.warning("training lock %s lapsed and was taken back", self.key)
            except redis.RedisError:
                continue  # the next beat retries; the lock expires if Redis stays away

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with contextlib.suppress(redis.RedisError):  # if not released, it expires by itself
            self._release(keys=[self.key], args=[self.token])


def _text(raw: Any) -> str | None:
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else str(raw)
