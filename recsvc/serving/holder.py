"""The active in-memory model version and its decider, shared by the recommender and the watcher."""

from __future__ import annotations

import threading

from recsvc.core.errors import ModelNotPublishedError
from recsvc.core.model import ModelVersion
from recsvc.decisioning.decider import Decider, build_decider


class ModelHolder:
    """The active version and the decider built on it with the live state; replaced whole (one
    reference), so a reader keeps one consistent version and one consistent live state."""

    def __init__(self) -> None:
        self._state: tuple[ModelVersion, Decider] | None = None
        self._lock = threading.Lock()
        # Set by the watcher while the in-memory version is gone from Redis (flushed, evicted):
        # why, for the answers' reason. Requests then serve popularity from memory. Cleared by
        # the watcher when the keys come back or another version is loaded.
        self.vanished: str | None = None

    @property
    def current(self) -> ModelVersion | None:
        state = self._state
        return None if state is None else state[0]

    def require(self) -> ModelVersion:
        return self.require_decider().base

    def require_decider(self) -> Decider:
        state = self._state
        if state is None:
            raise ModelNotPublishedError(
                "no model version is active yet: run `recsvc train` to publish one"
            )
        return state[1]

    def swap(self, model: ModelVersion, decider: Decider | None = None) -> None:
        """Serve ``model`` (with ``decider``; without one, the version's own settings and no
        live state)."""
        decider = decider if decider is not None else build_decider(model)
        with self._lock:
            self._state = (model, decider)
