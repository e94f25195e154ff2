"""What serving needs from the outside, as Protocols; ``recsvc.store`` implements them.

Serving depends on these seams, never on redis: the consumer owns the interface, the store fits it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from recsvc.core.model import ModelVersion
from recsvc.decisioning.live import LiveData, Poll

# A customer's record (maybe None), live hash, and the challenger version's record (None when
# no experiment runs or the challenger does not know the customer).
State = tuple[bytes | None, dict[bytes, bytes], bytes | None]


class Store(Protocol):
    """What the model watcher needs from the model store (blocking, on its own thread)."""

    def active_version(self) -> str | None:
        """The active pointer; raises StoreError when Redis does not answer."""
        ...

    def poll(self) -> Poll:
        """The active pointer and the live revision counters, in one round trip."""
        ...

    def load_version(self, version: str) -> ModelVersion: ...

    def load_live(self) -> LiveData:
        """Offer overrides, budgets and the do-not-contact list."""
        ...

    def version_intact(self, version: str) -> bool:
        """Whether ``version``'s keys are still in Redis (a flush or eviction removes them)."""
        ...

    def record_stream_metrics(self) -> None:
        """Read the Redis streams' lengths into the metrics (every few seconds, not per call);
        raises StoreError when Redis does not answer."""
        ...


class Writes(Protocol):
    """Writes after an answer, sent and not waited for (both server models)."""

    def log_decision(self, customer_id: str, fields: list[bytes | str]) -> None:
        """Append one entry to the decision log."""
        ...

    def record_contact(self, customer_id: str, channel: str, now: float, keep: int) -> None:
        """A contact on ``channel`` (contacts counted on serve)."""
        ...


class Records(Writes, Protocol):
    """What requests need on the event loop (grpc.aio): customer records and live state."""

    async def customer_state(self, version: str, customer_id: str, deadline: float,
                             challenger: str = "") -> State:
        """The record and the live hash (and the ``challenger`` version's record), in one
        round trip."""
        ...

    async def customer_states(self, version: str, customer_ids: Sequence[str], deadline: float,
                              challenger: str = "") -> list[State]: ...

    async def reserve(self, day: str, segment: str, limit: int,
                      candidates: list[tuple[str, bool]], deadline: float) -> set[str]:
        """On-serve budgets: the budgeted offers granted a unit, atomically."""
        ...


class BlockingRecords(Writes, Protocol):
    """The same reads for the thread-pool server model: blocking, callable from any thread."""

    def customer_state(self, version: str, customer_id: str, deadline: float,
                       challenger: str = "") -> State:
        """The record and the live hash (and the ``challenger`` version's record), in one
        round trip."""
        ...

    def customer_states(self, version: str, customer_ids: Sequence[str], deadline: float,
                        challenger: str = "") -> list[State]: ...

    def reserve(self, day: str, segment: str, limit: int,
                candidates: list[tuple[str, bool]], deadline: float) -> set[str]:
        """On-serve budgets: the budgeted offers granted a unit, atomically."""
        ...
