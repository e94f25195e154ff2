"""Keeps the in-memory model on the active version and health in step with reality.

A background thread checks the active pointer every ``poll`` seconds (not per request), loads a
new version fully before swapping it in, and pings Redis so a breaker opened by a failure closes
again as soon as Redis answers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from recsvc.errors import StoreError
from recsvc.recommender import ModelHolder
from recsvc.store import Store

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
        """One poll: ping, read the pointer, load and swap when it moved."""
        redis_ok = self.store.ping()
        if redis_ok:
            try:
                active = self.store.active_version()
                current = self.holder.current
                if active is not None and (current is None or current.version != active) \
                        and active != self._failed_version:
                    self.holder.swap(self.store.load_version(active))
                    log.info("serving model version %s", active)
            except StoreError as exc:
                # A version that does not load is skipped until the pointer moves again; the
                # version already in memory keeps serving.
                log.error("cannot switch model version: %s", exc)
                self._failed_version = self._active_or_none()
        self.on_health(self.holder.current is not None, redis_ok)

    def _active_or_none(self) -> str | None:
        try:
            return self.store.active_version()
        except StoreError:
            return None

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
