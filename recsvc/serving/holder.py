"""The active in-memory model version and its decider, shared by the recommender and the watcher;
with a running experiment, the challenger version's decider beside it."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from recsvc.core.errors import ModelNotPublishedError
from recsvc.core.model import ModelVersion
from recsvc.decisioning.budgets import BudgetState
from recsvc.decisioning.decider import Decider, build_decider
from recsvc.experiments.challenger import Experiment


@dataclass(frozen=True)
class Challenger:
    """The running experiment and the decider of its challenger version (same live state)."""

    experiment: Experiment
    decider: Decider

    @property
    def version(self) -> str:
        return self.decider.version

    def serves(self, customer_id: str) -> bool:
        return self.experiment.serves(customer_id)

    def shadows(self, customer_id: str) -> bool:
        return self.experiment.shadows(customer_id)


Lineup = tuple[Decider, Challenger | None]  # the champion's decider, the challenger if any
_NO_BUDGETS = BudgetState()


class ModelHolder:
    """The active version and the decider built on it with the live state (and the challenger's);
    replaced whole (one reference), so a reader keeps one consistent lineup and live state."""

    def __init__(self) -> None:
        self._state: tuple[ModelVersion, Decider, Challenger | None] | None = None
        self._lock = threading.Lock()
        # Set by the watcher while the in-memory version is gone from Redis (flushed, evicted):
        # why, for the answers' reason. Requests then serve popularity from memory. Cleared by
        # the watcher when the keys come back or another version is loaded.
        self.vanished: str | None = None

    @property
    def current(self) -> ModelVersion | None:
        state = self._state
        return None if state is None else state[0]

    @property
    def challenger(self) -> Challenger | None:
        state = self._state
        return None if state is None else state[2]

    @property
    def budgets(self) -> BudgetState:
        """The budget state the current decider was built with (none before a version loads):
        the feedback script's list of on-accept budgets on a cluster."""
        state = self._state
        return _NO_BUDGETS if state is None else state[1].budgets

    def require(self) -> ModelVersion:
        return self.require_decider().base

    def require_decider(self) -> Decider:
        return self.lineup()[0]

    def lineup(self) -> Lineup:
        """The champion's decider and the challenger, read together (one reference)."""
        state = self._state
        if state is None:
            raise ModelNotPublishedError(
                "no model version is active yet: run `recsvc train` to publish one"
            )
        return state[1], state[2]

    def swap(self, model: ModelVersion, decider: Decider | None = None,
             challenger: Challenger | None = None) -> None:
        """Serve ``model`` (with ``decider``; without one, the version's own settings and no
        live state), and ``challenger`` beside it when an experiment runs."""
        decider = decider if decider is not None else build_decider(model)
        with self._lock:
            self._state = (model, decider, challenger)
