"""Keeps the in-memory model on the active version and health in step with reality.

A background thread reads the active pointer every ``poll`` seconds (not per request) and loads a
new version fully before swapping it in. That one read is also the Redis health signal, and its
success closes the store's breaker, so requests use Redis again as soon as it answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from recsvc.core.errors import CorruptRecordError, StoreError
from recsvc.ops import metrics
from recsvc.serving.holder import ModelHolder
from recsvc.serving.ports import Store

log = logging.getLogger(__name__)


class ModelWatcher:
    def __init__(self, store: Store, holder: ModelHolder, poll_seconds: float,
                 on_health: Callable[[bool, bool], None]) -> None:
        self.store = store
        self.holder = holder
        self.poll_seconds = poll_seconds
        self.on_health = on_health  # (model loaded, redis answers)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed_version: str | None = None
        self._redis_down_since: float | None = None  # for one log line when down, one when back

    def check_once(self) -> None:
        """One poll: read the pointer; load and swap when it moved."""
        try:
            active = self.store.active_version()
        except StoreError as exc:
            self._redis_state(False, exc)
            self.on_health(self.holder.current is not None, False)
            return
        self._redis_state(True)
        current = self.holder.current
        if active is not None and active != self._failed_version and (
                current is None or current.version != active):
            try:
                model = self.store.load_version(active)
                self.holder.swap(model)
                metrics.model_loaded(active, model.trained_at, time.time(), current is not None)
                log.info("serving model version %s", active, extra={
                    "version": active, "previous": current and current.version,
                    "trained_at": model.trained_at})
            except CorruptRecordError as exc:
                # Retrying cannot help a version that does not decode: skip it until the
                # pointer moves; the version in memory keeps serving.
                metrics.model_load_failed("corrupt")
                log.error("cannot switch model version: %s", exc,
                          extra={"version": active, "cause": str(exc)})
                self._failed_version = active
            except StoreError as exc:  # Redis trouble mid-load: the next poll tries again
                metrics.model_load_failed("store")
                log.warning("model version %s not loaded yet: %s", active, exc,
                            extra={"version": active, "cause": str(exc)})
        self.on_health(self.holder.current is not None, True)

    def _redis_state(self, up: bool, cause: Exception | None = None) -> None:
        """One log line when Redis stops answering, one when it answers again."""
        metrics.redis_up(up)
        down_since = self._redis_down_since
        if not up and down_since is None:
            self._redis_down_since = time.monotonic()
            log.error("Redis unavailable: serving from memory", extra={"cause": str(cause)})
        elif up and down_since is not None:
            self._redis_down_since = None
            log.warning("Redis available again",
                        extra={"down_seconds": round(time.monotonic() - down_since, 3)})

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.check_once()
            except Exception:
                log.exception("model watcher poll failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
