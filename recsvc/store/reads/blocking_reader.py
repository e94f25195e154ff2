"""The Redis implementation of ``BlockingRecords``: the thread-pool server model's reads.

The same commands, retry and breaker rule as ``RecordReader`` (``reader``'s command builders,
``attempt_timeout`` and ``give_up``), on the calling thread's own connection
(``ThreadPipelines``). Writes after the answer ride on that connection without waiting; their
replies are read with the thread's next read, so one slow write reply can time out that read
(Redis answers a small XADD or contact script in microseconds; a Redis that slow fails the
reads anyway).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.core.errors import StoreError
from recsvc.ops import metrics
from recsvc.store.reads.reader import (
    Breaker,
    Command,
    State,
    attempt_timeout,
    contact_command,
    decision_log_command,
    give_up,
    reserve_commands,
    state_commands,
    state_of,
    states_commands,
    states_of,
)
from recsvc.store.transport.blocking_pipeline import ThreadPipelines
from recsvc.store.transport.redis_pipeline import PipelineError


class BlockingRecordReader:
    def __init__(self, keys: schema.Keys, settings: Settings, breaker: Breaker) -> None:
        self._redis = ThreadPipelines(settings.redis_url)
        self._keys = keys
        self._timeout = settings.redis_timeout_ms / 1000.0
        self._write_timeout = settings.feedback_timeout_ms / 1000.0
        self._decision_log_max = str(settings.decision_log_max_per_shard)
        self._breaker = breaker

    def _calls(self, deadline: float, label: str, commands: list[Command]) -> list[Any]:
        for attempt in (1, 2):
            started = time.monotonic()
            try:
                replies = self._redis.execute_many(
                    commands, attempt_timeout(self._breaker, deadline, self._timeout))
                metrics.redis_call(label, time.monotonic() - started)
                return replies
            except PipelineError as exc:
                failure = give_up(exc, attempt, deadline, self._timeout, self._breaker)
                if failure is not None:
                    raise failure from exc
        raise AssertionError("unreachable")

    def customer_state(self, version: str, customer_id: str, deadline: float,
                       challenger: str = "") -> State:
        """The customer's record and live hash (and the challenger's record): one round trip."""
        return state_of(self._calls(deadline, "pipeline",
                                    state_commands(self._keys, version, customer_id, challenger)))

    def customer_states(self, version: str, customer_ids: Sequence[str], deadline: float,
                        challenger: str = "") -> list[State]:
        return states_of(self._calls(
            deadline, "pipeline", states_commands(self._keys, version, customer_ids, challenger)))

    def reserve(self, day: str, segment: str, limit: int,
                candidates: list[tuple[str, bool]], deadline: float) -> set[str]:
        evalsha, evaluate = reserve_commands(self._keys, day, segment, limit, candidates)
        try:
            granted = self._calls(deadline, "EVALSHA", [evalsha])[0]
        except StoreError as exc:
            if "NOSCRIPT" not in str(exc):
                raise
            granted = self._calls(deadline, "EVAL", [evaluate])[0]
        return {bytes(g).decode() for g in granted or []}

    def log_decision(self, customer_id: str, fields: list[bytes | str]) -> None:
        if self._breaker.available():  # Redis known down: not one connect attempt per answer
            self._redis.send_nowait(
                decision_log_command(self._keys, customer_id, self._decision_log_max, fields),
                self._write_timeout)

    def record_contact(self, customer_id: str, channel: str, now: float, keep: int) -> None:
        if self._breaker.available():
            self._redis.send_nowait(contact_command(self._keys, customer_id, channel, now, keep),
                                    self._write_timeout)

    @property
    def writes_dropped(self) -> int:
        return self._redis.dropped

    def close(self) -> None:
        self._redis.close()

