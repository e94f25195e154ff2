"""What serving needs from the outside, as Protocols; ``recsvc.store`` implements them.

Serving depends on these seams, never on redis: the consumer owns the interface, the store fits it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from recsvc.core.model import ModelVersion


class Store(Protocol):
    """What the model watcher needs from the model store (blocking, on its own thread)."""

    def active_version(self) -> str | None:
        """The active pointer; raises StoreError when Redis does not answer."""
        ...

    def load_version(self, version: str) -> ModelVersion: ...

    def version_intact(self, version: str) -> bool:
        """Whether ``version``'s keys are still in Redis (a flush or eviction removes them)."""
        ...


class Records(Protocol):
    """What requests need: customer records, read on the event loop."""

    async def customer_record(self, version: str, customer_id: str,
                              deadline: float) -> bytes | None: ...

    async def customer_records(
        self, version: str, customer_ids: Sequence[str], deadline: float
    ) -> list[bytes | None]: ...
