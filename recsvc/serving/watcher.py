"""Keeps the in-memory model on the active version and health in step with reality.

A background thread reads the active pointer every ``poll`` seconds (not per request) and loads a
new version fully before swapping it in. That one read is also the Redis health signal, and its
success closes the store's breaker, so requests use Redis again as soon as it answers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from recsvc.core.errors import CorruptRecordError, StoreError
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

    def check_once(self) -> None:
        """One poll: read the pointer; load and swap when it moved."""
        try:
            active = self.store.active_version()
        except StoreError:
            self.on_health(self.holder.current is not None, False)
            return
        current = self.holder.current
        if active is not None and active != self._failed_version and (
                current is None or current.version != active):
            try:
                self.holder.swap(self.store.load_version(active))
                log.info("serving model version %s", active)
            except CorruptRecordError as exc:
                # Retrying cannot help a version that does not decode: skip it until the
                # pointer moves; the version in memory keeps serving.
                log.error("cannot switch model version: %s", exc)
                self._failed_version = active
            except StoreError as exc:  # Redis trouble mid-load: the next poll tries again
                log.warning("model version %s not loaded yet: %s", active, exc)
        self.on_health(self.holder.current is not None, True)

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
