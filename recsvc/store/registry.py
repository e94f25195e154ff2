"""Model versions in Redis: list, activate (an atomic compare-and-set), roll back, delete.

The pointer flip is one Lua script, so a reader sees either the old or the new version, never a
mix, and a training run whose lock has expired can never activate over a newer run.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis

from recsvc.core import schema
from recsvc.core.errors import LockHeldError, PublishError, RecsvcError

STATE_WRITING = "writing"
STATE_COMPLETE = "complete"

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

# KEYS: lock. ARGV: token, ttl ms. Extends the lock only while we still hold it.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
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
    role: str  # "active", "previous" or ""


class Registry:
    """Version bookkeeping under one key prefix."""

    def __init__(self, client: redis.Redis, keys: schema.Keys) -> None:
        self.client = client
        self.keys = keys
        self._activate = client.register_script(_ACTIVATE)

    def pointers(self) -> tuple[str | None, str | None]:
        active, previous = self.client.mget(self.keys.active, self.keys.previous)
        return _text(active), _text(previous)

    def manifest(self, version: str) -> dict[str, Any] | None:
        raw = self.client.hget(self.keys.versions, version)
        return None if raw is None else dict(json.loads(raw))

    def all(self) -> list[VersionInfo]:
        active, previous = self.pointers()
        infos = []
        for raw_version, raw in sorted(self.client.hgetall(self.keys.versions).items()):
            version = _text(raw_version) or ""
            manifest = json.loads(raw)
            role = "active" if version == active else "previous" if version == previous else ""
            infos.append(VersionInfo(version, manifest.get("state", "?"),
                                     manifest.get("created_at", ""),
                                     int(manifest.get("segment_count", 0)), role))
        return infos

    def begin(self, version: str, segment_count: int) -> None:
        """Record a version before its first key is written, so a crash leaves it findable."""
        self._set_manifest(version, STATE_WRITING, segment_count)

    def complete(self, version: str, segment_count: int) -> None:
        self._set_manifest(version, STATE_COMPLETE, segment_count)

    def _set_manifest(self, version: str, state: str, segment_count: int) -> None:
        manifest = {"state": state, "segment_count": segment_count,
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.client.hset(self.keys.versions, version, json.dumps(manifest))

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
        """Swap active and previous; returns the version now active."""
        active, previous = self.pointers()
        if not previous:
            raise RecsvcError("no previous version to roll back to")
        self.activate(previous, active)
        return previous

    def delete(self, version: str) -> None:
        """Remove a version's keys (UNLINK frees big hashes in the background) and manifest."""
        active, previous = self.pointers()
        if version in (active, previous):
            role = "active" if version == active else "previous"
            raise RecsvcError(f"version {version} is {role}; not deleting it")
        manifest = self.manifest(version) or {}
        count = int(manifest.get("segment_count", 0))
        keys = self.keys.version_keys(version, count)
        # A crashed writer may have written segments its manifest does not count yet.
        keys += [k.decode() for k in self.client.scan_iter(
            match=f"{self.keys.prefix}:v:{version}:seg:*", count=1000)]
        pipe = self.client.pipeline(transaction=False)
        pipe.unlink(*sorted(set(keys)))
        pipe.hdel(self.keys.versions, version)
        pipe.execute()

    def collect_garbage(self, keep: set[str]) -> list[str]:
        """Delete every recorded version that is not active, previous or in ``keep``."""
        active, previous = self.pointers()
        live = {v for v in (active, previous) if v} | keep
        recorded = [_text(v) or "" for v in self.client.hkeys(self.keys.versions)]
        doomed = [v for v in recorded if v not in live]
        for version in doomed:
            self.delete(version)
        return doomed


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
                if not self._renew(keys=[self.key], args=[self.token, self.ttl_ms]):
                    self.lost = True
                    return
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
