"""The thread-pool model's connections to a Redis Cluster: per thread a connection per master.

``ClusterPipelines`` (``cluster_pipeline``) for the server threads: each call to its slot's
master over that master's ``ThreadPipelines``, a batch's masters all written before any reply
is read (``begin``/``finish``). The slot map is shared by the threads and read again on a
thread of its own (the first one on the calling thread, the others arriving meanwhile wait).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from recsvc.store.transport.blocking_pipeline import ThreadPipelines
from recsvc.store.transport.cluster_pipeline import (
    REDIRECTS,
    SLOT_MAP_LOG,
    ClusterDown,
    Router,
    first_error,
    named,
    with_asking,
)
from recsvc.store.transport.redis_pipeline import (
    ConnectionLost,
    ErrorReply,
    PipelineError,
    ReplyTimeout,
)
from recsvc.store.transport.slots import (
    Address,
    Command,
    SlotMap,
    SlotMapError,
    by_master,
    call_slot,
    command_slot,
)


class ClusterThreadPipelines:
    """``ThreadPipelines``' calls, each sent to the master of its slot (per thread a connection
    per master); the map is read on a thread of its own, the first one on the calling thread."""

    def __init__(self, url: str, every: float, timeout: float) -> None:
        self.router = Router(url, every, timeout)
        self._links: dict[Address, ThreadPipelines] = {}
        self._lock = threading.Lock()  # around the links' dict and the refresh flag
        self._loading = threading.Lock()  # around the first read of the map
        self._refreshing = False
        self._dropped = 0
        self._closed = False

    @property
    def dropped(self) -> int:
        return self._dropped + sum(link.dropped for link in list(self._links.values()))

    def master(self, slot: int) -> Address | None:
        return self.router.master(slot)

    def execute_many(self, commands: list[Command], timeout: float,
                     slot: int | None = None) -> list[Any]:
        deadline = time.monotonic() + timeout
        if slot is None:
            slot = call_slot(commands)
        asking: Address | None = None
        for _ in range(REDIRECTS):
            address = asking if asking is not None else self._master(slot, deadline)
            sent = with_asking(commands) if asking is not None else commands
            link = self._link(address)
            try:
                connection = link.begin(sent, self._left(deadline, address))
                replies = link.finish(connection, len(sent))
            except ConnectionLost as exc:
                self.refresh_soon()
                raise named(exc, address) from None
            if asking is not None:
                replies = replies[1::2]
            error = first_error(replies)
            if error is None:
                return replies
            asking = self._redirected(error, address)
        raise named(ClusterDown("too many cluster redirections"), None)

    def execute_groups(self, groups: list[list[Command]], timeout: float) -> list[list[Any]]:
        """As ``ClusterPipelines.execute_groups``: every master's write, then the replies."""
        deadline = time.monotonic() + timeout
        slots = [call_slot(g) for g in groups]
        for _ in range(REDIRECTS):
            if self.router.map is None:
                self._load(deadline)
            assert self.router.map is not None
            owners = by_master(slots, self.router.map)
            if None in owners:
                self.refresh_soon()
                raise named(ClusterDown("a slot of the batch has no master"), None)
            begun: list[tuple[Address, list[int], ThreadPipelines, Any, int]] = []
            failure: PipelineError | None = None
            for address, members in owners.items():
                assert address is not None
                commands = [c for i in members for c in groups[i]]
                link = self._link(address)
                try:
                    connection = link.begin(commands, self._left(deadline, address))
                except ConnectionLost as exc:
                    failure = named(exc, address)
                    break
                begun.append((address, members, link, connection, len(commands)))
            out: list[list[Any]] = [[] for _ in groups]
            retry = False
            for address, members, link, connection, count in begun:  # every begun one is read
                try:
                    result = link.finish(connection, count)
                except ConnectionLost as exc:
                    failure = failure or named(exc, address)
                    continue
                at = 0
                for i in members:
                    out[i] = result[at:at + len(groups[i])]
                    at += len(groups[i])
                    error = first_error(out[i])
                    if error is not None and failure is None:
                        try:
                            if self._redirected(error, address) is not None:
                                failure = named(ClusterDown(f"slot migrating: {error}"),
                                                 address)
                        except PipelineError as exc:
                            failure = exc
                        retry = True
            if failure is not None:
                if isinstance(failure, ConnectionLost):
                    self.refresh_soon()
                raise failure
            if not retry:
                return out
        raise named(ClusterDown("too many cluster redirections"), None)

    def read_map(self, timeout: float) -> SlotMap:
        """The slot map read now, on the calling thread (a batch job waits for it)."""
        self._refresh(timeout)
        assert self.router.map is not None
        return self.router.map

    def link(self, address: Address) -> ThreadPipelines:
        """The connections to one master (a batch job routes its own packed commands)."""
        return self._link(address)

    def send_nowait(self, command: Command, timeout: float) -> None:
        address = self.router.master(command_slot(command))
        if address is None:
            with self._lock:
                self._dropped += 1
            self.refresh_soon()
            return
        self._link(address).send_nowait(command, timeout)

    def refresh_soon(self) -> None:
        """Read the slot map again on a thread of its own (the caller does not wait)."""
        with self._lock:
            if self._refreshing or self._closed or not self.router.due():
                return
            self._refreshing = True
        threading.Thread(target=self._refresh_logged, name="redis-slot-map", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            links, self._links = self._links, {}
        for link in links.values():
            link.close()

    @staticmethod
    def _left(deadline: float, address: Address) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise named(ReplyTimeout("no time left for Redis"), address)
        return left

    def _redirected(self, error: ErrorReply, address: Address) -> Address | None:
        return self.router.redirected(error, address, self.refresh_soon)

    def _master(self, slot: int, deadline: float) -> Address:
        if self.router.map is None:
            self._load(deadline)
        address = self.router.master(slot)
        if address is None:
            self.refresh_soon()
            raise named(ClusterDown(f"slot {slot} has no master"), None)
        return address

    def _load(self, deadline: float) -> None:
        """The first map, on the calling thread; the threads arriving meanwhile wait for it."""
        with self._loading:
            if self.router.map is not None:
                return
            if not self.router.due():
                raise named(ClusterDown("no slot map yet (the cluster did not answer)"), None)
            try:
                self._refresh(max(deadline - time.monotonic(), 0.001))
            except PipelineError as exc:
                raise named(exc, None) from None

    def _refresh_logged(self) -> None:
        try:
            self._refresh(self.router.timeout)
        except PipelineError as exc:
            SLOT_MAP_LOG.log(logging.WARNING, "slot_map",
                             f"cannot read the Redis Cluster slot map: {exc}")
        finally:
            with self._lock:
                self._refreshing = False

    def _refresh(self, timeout: float) -> None:
        failures: list[str] = []
        for address in self.router.candidates():
            probe = ThreadPipelines(self.router.endpoint(address))
            try:
                reply = probe.execute_many([("CLUSTER", "SLOTS")], timeout)[0]
                slot_map = self.router.learned(reply, address)
            except (PipelineError, SlotMapError) as exc:
                failures.append(f"{address[0]}:{address[1]}: {exc}")
                continue
            finally:
                probe.close()
            masters = slot_map.masters
            with self._lock:
                gone = [self._links.pop(a) for a in list(self._links) if a not in masters]
            for link in gone:
                link.close()
                with self._lock:
                    self._dropped += link.dropped  # still counted once the link is gone
            return
        raise ClusterDown("no node answered CLUSTER SLOTS (" + "; ".join(failures) + ")")

    def _link(self, address: Address) -> ThreadPipelines:
        link = self._links.get(address)
        if link is None:
            with self._lock:
                if self._closed:
                    raise named(ConnectionLost("client closed"), address)
                link = self._links.setdefault(address, ThreadPipelines(self.router.endpoint(
                    address)))
        return link
