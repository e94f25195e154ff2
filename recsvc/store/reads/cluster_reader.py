"""The hot path's reads on a Redis Cluster, for both server models, and which reader a server
uses (``record_reader``, ``blocking_record_reader``).

The same commands, retry and breaker rule as ``RecordReader``/``BlockingRecordReader`` (a
single Redis keeps those classes untouched), with two differences: each call goes to its slot's
master (``cluster_pipeline``), and the breaker is per master: a lost master opens its own, so
only the calls for its slots answer degraded (from segment popularity) while the others stay
personalized; a call that meets an open breaker asks for the slot map again (rate-limited), so
a promoted replica is found. A batch chunk is one call per shard hash, every master's written
before any reply is awaited; it needs every master it touches.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.ops import metrics
from recsvc.store.reads.blocking_reader import BlockingRecordReader
from recsvc.store.reads.reader import (
    Breaker,
    Command,
    RecordReader,
    State,
    attempt_timeout,
    contact_command,
    decision_log_command,
    give_up,
    sharded_states_commands,
    sharded_states_of,
)
from recsvc.store.transport.cluster_blocking import ClusterThreadPipelines
from recsvc.store.transport.cluster_pipeline import ClusterPipelines
from recsvc.store.transport.redis_pipeline import PipelineError
from recsvc.store.transport.slots import Address, call_slot, command_slot

T = TypeVar("T")


def record_reader(keys: schema.Keys, settings: Settings, breaker: Breaker) -> RecordReader:
    """The event loop's reader: one pipelined connection, or one per master on a cluster."""
    if settings.redis_cluster:
        return ClusterRecordReader(keys, settings, breaker)
    return RecordReader(keys, settings, breaker)


def blocking_record_reader(keys: schema.Keys, settings: Settings, breaker: Breaker
                           ) -> BlockingRecordReader:
    """The thread-pool model's reader: per thread a connection, or one per master on a cluster."""
    if settings.redis_cluster:
        return BlockingClusterRecordReader(keys, settings, breaker)
    return BlockingRecordReader(keys, settings, breaker)


def _map_timeout(settings: Settings) -> float:
    """One node's CLUSTER SLOTS: read off the request's path, so allowed more than a read."""
    return max(settings.redis_timeout_ms, 250) / 1000.0


class _Breakers:
    """A breaker per master (None: the cluster as a whole, before a slot map is known)."""

    def __init__(self, pause: float, master: Callable[[int], Address | None],
                 refresh: Callable[[], None]) -> None:
        self._pause = pause
        self._master = master
        self._refresh = refresh
        self._by_address: dict[Address | None, Breaker] = {}

    def of(self, address: Address | None) -> Breaker:
        breaker = self._by_address.get(address)
        if breaker is None:
            breaker = self._by_address.setdefault(address, Breaker(self._pause))
        return breaker

    def for_slots(self, slots: Sequence[int]) -> Breaker:
        """The breaker that decides the call: an open one of its masters, else the first's.
        An open one asks for the slot map again (its slots may have a new master by now)."""
        first: Breaker | None = None
        for slot in slots:
            breaker = self.of(self._master(slot))
            if not breaker.available():
                self._refresh()
                return breaker
            first = first or breaker
        return first if first is not None else self.of(None)

    def available(self, command: Command) -> bool:
        return self.of(self._master(command_slot(command))).available()


class ClusterRecordReader(RecordReader):
    """``RecordReader`` on a cluster (the event loop)."""

    def __init__(self, keys: schema.Keys, settings: Settings, breaker: Breaker) -> None:
        super().__init__(keys, settings, breaker)
        pause = settings.redis_retry_after_failure_ms / 1000.0
        self._cluster = ClusterPipelines(settings.redis_url, pause, _map_timeout(settings))
        # Writes after the answer on connections of their own (as on a single Redis), same map.
        self._cluster_writes = self._cluster.sharing()
        self._breakers = _Breakers(pause, self._cluster.master, self._cluster.refresh_soon)

    async def _call(self, deadline: float, *command: bytes | str) -> Any:
        slot = call_slot([command])
        replies = await self._routed(deadline, str(command[0]), [slot], lambda timeout:
                                     self._cluster.execute_many([command], timeout, slot))
        return replies[0]

    async def _calls(self, deadline: float, commands: list[Command]) -> list[Any]:
        slot = call_slot(commands)
        return await self._routed(deadline, "pipeline", [slot], lambda timeout:
                                  self._cluster.execute_many(commands, timeout, slot))

    async def customer_states(self, version: str, customer_ids: Sequence[str], deadline: float,
                              challenger: str = "") -> list[State]:
        """One call per shard of the chunk, each master's in one write, all written at once."""
        calls, positions = sharded_states_commands(self._keys, version, customer_ids,
                                                   challenger)
        slots = [call_slot(c) for c in calls]
        replies = await self._routed(deadline, "pipeline", slots, lambda timeout:
                                     self._cluster.execute_groups(calls, timeout))
        return sharded_states_of(replies, positions, len(customer_ids))

    async def _routed(self, deadline: float, label: str, slots: Sequence[int],
                      send: Callable[[float], Awaitable[T]]) -> T:
        """``_bounded``'s rule with the breakers of the call's masters."""
        for attempt in (1, 2):
            started = time.monotonic()
            try:
                breaker = self._breakers.for_slots(slots)
                reply = await send(attempt_timeout(breaker, deadline,
                                                   self._timeout))
                metrics.redis_call(label, time.monotonic() - started)
                breaker.close()  # the gauge: this master answers again
                return reply
            except PipelineError as exc:
                failure = give_up(exc, attempt, deadline, self._timeout,
                                  self._breakers.of(exc.address))
                if failure is not None:
                    raise failure from exc
        raise AssertionError("unreachable")

    def log_decision(self, customer_id: str, fields: list[bytes | str]) -> None:
        command = decision_log_command(self._keys, customer_id, self._decision_log_max, fields)
        if self._breakers.available(command):
            self._cluster_writes.send_nowait(*command, timeout=self._write_timeout)

    def record_contact(self, customer_id: str, channel: str, now: float, keep: int) -> None:
        command = contact_command(self._keys, customer_id, channel, now, keep)
        if self._breakers.available(command):
            self._cluster_writes.send_nowait(*command, timeout=self._write_timeout)

    @property
    def writes_dropped(self) -> int:
        return self._cluster_writes.dropped

    async def close(self) -> None:
        await self._cluster.close()
        await self._cluster_writes.close()
        await super().close()


class BlockingClusterRecordReader(BlockingRecordReader):
    """``BlockingRecordReader`` on a cluster (the thread-pool model)."""

    def __init__(self, keys: schema.Keys, settings: Settings, breaker: Breaker) -> None:
        super().__init__(keys, settings, breaker)
        pause = settings.redis_retry_after_failure_ms / 1000.0
        self._cluster = ClusterThreadPipelines(settings.redis_url, pause, _map_timeout(settings))
        self._breakers = _Breakers(pause, self._cluster.master, self._cluster.refresh_soon)

    def _calls(self, deadline: float, label: str, commands: list[Command]) -> list[Any]:
        slot = call_slot(commands)
        return self._routed(deadline, label, [slot], lambda timeout:
                            self._cluster.execute_many(commands, timeout, slot))

    def customer_states(self, version: str, customer_ids: Sequence[str], deadline: float,
                        challenger: str = "") -> list[State]:
        calls, positions = sharded_states_commands(self._keys, version, customer_ids,
                                                   challenger)
        slots = [call_slot(c) for c in calls]
        replies = self._routed(deadline, "pipeline", slots, lambda timeout:
                               self._cluster.execute_groups(calls, timeout))
        return sharded_states_of(replies, positions, len(customer_ids))

    def _routed(self, deadline: float, label: str, slots: Sequence[int],
                send: Callable[[float], T]) -> T:
        for attempt in (1, 2):
            started = time.monotonic()
            try:
                breaker = self._breakers.for_slots(slots)
                reply = send(attempt_timeout(breaker, deadline,
                                             self._timeout))
                metrics.redis_call(label, time.monotonic() - started)
                breaker.close()  # the gauge: this master answers again
                return reply
            except PipelineError as exc:
                failure = give_up(exc, attempt, deadline, self._timeout,
                                  self._breakers.of(exc.address))
                if failure is not None:
                    raise failure from exc
        raise AssertionError("unreachable")

    def log_decision(self, customer_id: str, fields: list[bytes | str]) -> None:
        command = decision_log_command(self._keys, customer_id, self._decision_log_max, fields)
        if self._breakers.available(command):
            self._cluster.send_nowait(command, self._write_timeout)

    def record_contact(self, customer_id: str, channel: str, now: float, keep: int) -> None:
        command = contact_command(self._keys, customer_id, channel, now, keep)
        if self._breakers.available(command):
            self._cluster.send_nowait(command, self._write_timeout)

    @property
    def writes_dropped(self) -> int:
        return self._cluster.dropped

    def close(self) -> None:
        self._cluster.close()
        super().close()
