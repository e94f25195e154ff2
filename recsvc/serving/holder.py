"""The active in-memory model version, shared by the recommender and the watcher."""

from __future__ import annotations

import threading

from recsvc.core.errors import ModelNotPublishedError
from recsvc.core.model import ModelVersion


class ModelHolder:
    """The active in-memory version; replaced whole, so a reader keeps one consistent version."""

    def __init__(self) -> None:
        self._current: ModelVersion | None = None
        self._lock = threading.Lock()
        # Set by the watcher while the in-memory version is gone from Redis (flushed, evicted):
        # why, for the answers' reason. Requests then serve popularity from memory.
        self.vanished: str | None = None

    @property
    def current(self) -> ModelVersion | None:
        return self._current

    def require(self) -> ModelVersion:
        model = self._current
        if model is None:
            raise ModelNotPublishedError(
                "no model version is active yet: run `recsvc train` to publish one"
            )
        return model

    def swap(self, model: ModelVersion) -> None:
        with self._lock:
            self._current = model
            self.vanished = None
