"""The hot path's connections to a Redis Cluster: one per master, each call to its slot's master.

``ClusterPipelines`` (event loop) holds a ``PipelinedRedis`` per master, ``ClusterThreadPipelines``
(thread-pool model) a ``ThreadPipelines`` per master (so a connection per master per thread).
Both share the way they learn where slots live (``_Router``): ``CLUSTER SLOTS`` from a node
known to be in the cluster (the masters of the last map, the URL's node, then every other node
named), read again after a ``MOVED``, a ``CLUSTERDOWN``/``TRYAGAIN`` or a failed connection to a
master, at most once per ``redis_retry_after_failure_ms``; a ``MOVED`` also moves its slot in
the map at once so the call is retried on the right master within the caller's timeout. A
failure raised from here names the master (``PipelineError.address``): the readers keep a
breaker per master, so a lost master degrades only the calls for its slots.

A single Redis never comes here (``redis_pipeline``/``blocking_pipeline`` as they were).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from recsvc.store.blocking_pipeline import ThreadPipelines
from recsvc.store.redis_pipeline import (
    ConnectionLost,
    Endpoint,
    ErrorReply,
    PipelinedRedis,
    PipelineError,
    ReplyTimeout,
)
from recsvc.store.slots import (
    Address,
    Command,
    SlotMap,
    SlotMapError,
    by_master,
    call_slot,
    cluster_unavailable,
    command_slot,
    parse_cluster_slots,
    redirect,
)

log = logging.getLogger(__name__)

_REDIRECTS = 3  # MOVED/ASK followed per call before giving up (a slot migrating twice is rare)


class ClusterDown(ConnectionLost):
    """The cluster cannot serve the slot now (CLUSTERDOWN, an unassigned slot, no map yet)."""


def _asking(commands: Sequence[Command]) -> list[Command]:
    """``commands`` each after an ``ASKING`` (it admits the next command only)."""
    return [c for command in commands for c in (("ASKING",), command)]


def _first_error(replies: list[Any]) -> ErrorReply | None:
    for reply in replies:
        if isinstance(reply, ErrorReply):
            return reply
    return None


def _named(exc: PipelineError, address: Address | None) -> PipelineError:
    exc.address = address
    return exc


class _Router:
    """The slot map one process side shares, and when it may be read again."""

    def __init__(self, url: str, every: float, timeout: float) -> None:
        self.seed = Endpoint.of(url)
        self.map: SlotMap | None = None
        self.every = every  # at most one read of the map per this many seconds
        self.timeout = timeout  # of one node's CLUSTER SLOTS
        self._read_at = -float("inf")
        self._lock = threading.Lock()

    def due(self) -> bool:
        """True once per ``every`` seconds: the caller reads the map now."""
        with self._lock:
            now = time.monotonic()
            if now - self._read_at < self.every:
                return False
            self._read_at = now
            return True

    def candidates(self) -> list[Address]:
        """Where to ask: the masters of the last map, the URL's node, every other node named."""
        seed = (self.seed.host, self.seed.port)
        known = self.map.nodes if self.map is not None else ()
        masters = self.map.masters if self.map is not None else set()
        ordered = [a for a in known if a in masters] + [seed] + list(known)
        return list(dict.fromkeys(ordered))

    def endpoint(self, address: Address) -> Endpoint:
        return dataclasses.replace(self.seed, path=None, host=address[0], port=address[1])

    def master(self, slot: int) -> Address | None:
        return None if self.map is None else self.map.owners[slot]

    def moved(self, slot: int, address: Address, asked: Address) -> Address:
        """Follow a MOVED: the slot's master is ``address`` from now on (an empty host in it
        is the host ``asked``)."""
        if not address[0]:
            address = (asked[0], address[1])
        if self.map is not None:
            self.map = self.map.moved(slot, address)
        return address

    def learned(self, reply: Any, asked: Address) -> SlotMap:
        self.map = parse_cluster_slots(reply, asked)
        return self.map


class ClusterPipelines:
    """``PipelinedRedis``'s calls, each sent to the master of its slot (the event loop's)."""

    def __init__(self, url: str, every: float, timeout: float,
                 router: _Router | None = None) -> None:
        self.router = router if router is not None else _Router(url, every, timeout)
        self._links: dict[Address, PipelinedRedis] = {}
        self._refreshing: asyncio.Future[None] | None = None
        self._dropped = 0

    def sharing(self) -> ClusterPipelines:
        """Another set of connections (the writes') on the same slot map."""
        return ClusterPipelines("", 0.0, 0.0, router=self.router)

    @property
    def dropped(self) -> int:
        return self._dropped + sum(link.dropped for link in self._links.values())

    def master(self, slot: int) -> Address | None:
        return self.router.master(slot)

    async def execute(self, *args: bytes | str, timeout: float) -> Any:
        return (await self.execute_many([args], timeout))[0]

    async def execute_many(self, commands: list[Command], timeout: float,
                           slot: int | None = None) -> list[Any]:
        """``commands`` (one slot; CrossSlotError otherwise) on their master, replies in order.
        MOVED and ASK are followed within ``timeout``; a failure carries the master's address."""
        deadline = time.monotonic() + timeout
        if slot is None:
            slot = call_slot(commands)
        asking: Address | None = None
        for _ in range(_REDIRECTS):
            address = asking if asking is not None else await self._master(slot, deadline)
            sent = _asking(commands) if asking is not None else commands
            replies = await self._send(address, sent, deadline)
            if asking is not None:
                replies = replies[1::2]
            error = _first_error(replies)
            if error is None:
                return replies
            asking = self._redirected(error, address)
        raise _named(ClusterDown("too many cluster redirections"), None)

    async def execute_groups(self, groups: list[list[Command]], timeout: float
                             ) -> list[list[Any]]:
        """Several calls (each on one slot), each master's in one write, every master's written
        before any reply is awaited; the replies per call, in order."""
        deadline = time.monotonic() + timeout
        slots = [call_slot(g) for g in groups]
        for _ in range(_REDIRECTS):
            if self.router.map is None:
                await self._load(deadline)
            assert self.router.map is not None
            owners = by_master(slots, self.router.map)
            if None in owners:
                self.refresh_soon()
                raise _named(ClusterDown("a slot of the batch has no master"), None)
            sends = [(address, members, [c for i in members for c in groups[i]])
                     for address, members in owners.items() if address is not None]
            results = await asyncio.gather(
                *(self._send(address, commands, deadline) for address, _, commands in sends),
                return_exceptions=True)
            out: list[list[Any]] = [[] for _ in groups]
            retry = False
            for (address, members, _), result in zip(sends, results, strict=True):
                if isinstance(result, BaseException):
                    raise result
                at = 0
                for i in members:
                    out[i] = result[at:at + len(groups[i])]
                    at += len(groups[i])
                    error = _first_error(out[i])
                    if error is not None:
                        if self._redirected(error, address) is not None:  # ASK: a migration
                            raise _named(ClusterDown(f"slot migrating: {error}"), address)
                        retry = True
            if not retry:
                return out
        raise _named(ClusterDown("too many cluster redirections"), None)

    def send_nowait(self, *args: bytes | str, timeout: float) -> None:
        """Fire and forget on the master of the command's slot (a write after the answer)."""
        address = self.router.master(command_slot(args))
        if address is None:
            self._dropped += 1
            self.refresh_soon()
            return
        self._link(address).send_nowait(*args, timeout=timeout)

    def refresh_soon(self) -> None:
        """Read the slot map again in the background, unless read less than ``every`` ago."""
        if self._refreshing is None and self.router.due():
            self._refreshing = asyncio.ensure_future(self._refresh())
            self._refreshing.add_done_callback(self._refreshed)

    async def close(self) -> None:
        links, self._links = self._links, {}
        for link in links.values():
            await link.close()
        if self._refreshing is not None:
            self._refreshing.cancel()

    async def _send(self, address: Address, commands: list[Command], deadline: float
                    ) -> list[Any]:
        left = deadline - time.monotonic()
        if left <= 0:  # never a timer already due on a shared connection: it would close it
            raise _named(ReplyTimeout("no time left for Redis"), address)
        try:
            return await self._link(address).execute_all(commands, timeout=left)
        except ConnectionLost as exc:
            self.refresh_soon()
            raise _named(exc, address) from None

    def _redirected(self, error: ErrorReply, address: Address) -> Address | None:
        """What an error reply means: MOVED moves the slot (None: retry on the map), ASK names
        the node to ask once; anything else is raised (a cluster down as a lost connection)."""
        message = str(error)
        moved = redirect(message)
        if moved is None:
            if cluster_unavailable(message):
                self.refresh_soon()
                raise _named(ClusterDown(message), address)
            raise _named(error, address)
        kind, slot, target = moved
        if kind == "ASK":
            return (address[0], target[1]) if not target[0] else target
        self.router.moved(slot, target, address)
        self.refresh_soon()
        return None

    async def _master(self, slot: int, deadline: float) -> Address:
        if self.router.map is None:
            await self._load(deadline)
        address = self.router.master(slot)
        if address is None:
            self.refresh_soon()
            raise _named(ClusterDown(f"slot {slot} has no master"), None)
        return address

    async def _load(self, deadline: float) -> None:
        """The first map, awaited within the caller's deadline."""
        self.refresh_soon()
        if self._refreshing is None:
            raise _named(ClusterDown("no slot map yet (the cluster did not answer)"), None)
        try:
            await asyncio.wait_for(asyncio.shield(self._refreshing),
                                   max(deadline - time.monotonic(), 0.0))
        except TimeoutError as exc:
            raise _named(ReplyTimeout("the cluster's slot map did not come in time"),
                         None) from exc
        except PipelineError as exc:
            raise _named(exc, None) from None
        if self.router.map is None:
            raise _named(ClusterDown("no slot map yet (the cluster did not answer)"), None)

    def _refreshed(self, task: asyncio.Future[None]) -> None:
        self._refreshing = None
        if not task.cancelled() and task.exception() is not None:
            log.warning("cannot read the Redis Cluster slot map: %s", task.exception())

    async def _refresh(self) -> None:
        failures: list[str] = []
        for address in self.router.candidates():
            probe = PipelinedRedis(self.router.endpoint(address))
            try:
                reply = await probe.execute("CLUSTER", "SLOTS", timeout=self.router.timeout)
                slot_map = self.router.learned(reply, address)
            except (PipelineError, SlotMapError) as exc:
                failures.append(f"{address[0]}:{address[1]}: {exc}")
                continue
            finally:
                await probe.close()
            masters = slot_map.masters
            for gone in [a for a in self._links if a not in masters]:
                await self._links.pop(gone).close()
            return
        raise ClusterDown("no node answered CLUSTER SLOTS (" + "; ".join(failures) + ")")

    def _link(self, address: Address) -> PipelinedRedis:
        link = self._links.get(address)
        if link is None:
            link = self._links[address] = PipelinedRedis(self.router.endpoint(address))
        return link


class ClusterThreadPipelines:
    """``ThreadPipelines``' calls, each sent to the master of its slot (per thread a connection
    per master); the map is read on a thread of its own, the first one on the calling thread."""

    def __init__(self, url: str, every: float, timeout: float) -> None:
        self.router = _Router(url, every, timeout)
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
        for _ in range(_REDIRECTS):
            address = asking if asking is not None else self._master(slot, deadline)
            sent = _asking(commands) if asking is not None else commands
            link = self._link(address)
            try:
                connection = link.begin(sent, self._left(deadline, address))
                replies = link.finish(connection, len(sent))
            except ConnectionLost as exc:
                self.refresh_soon()
                raise _named(exc, address) from None
            if asking is not None:
                replies = replies[1::2]
            error = _first_error(replies)
            if error is None:
                return replies
            asking = self._redirected(error, address)
        raise _named(ClusterDown("too many cluster redirections"), None)

    def execute_groups(self, groups: list[list[Command]], timeout: float) -> list[list[Any]]:
        """As ``ClusterPipelines.execute_groups``: every master's write, then the replies."""
        deadline = time.monotonic() + timeout
        slots = [call_slot(g) for g in groups]
        for _ in range(_REDIRECTS):
            if self.router.map is None:
                self._load(deadline)
            assert self.router.map is not None
            owners = by_master(slots, self.router.map)
            if None in owners:
                self.refresh_soon()
                raise _named(ClusterDown("a slot of the batch has no master"), None)
            begun: list[tuple[Address, list[int], ThreadPipelines, Any, int]] = []
            failure: PipelineError | None = None
            for address, members in owners.items():
                assert address is not None
                commands = [c for i in members for c in groups[i]]
                link = self._link(address)
                try:
                    connection = link.begin(commands, self._left(deadline, address))
                except ConnectionLost as exc:
                    failure = _named(exc, address)
                    break
                begun.append((address, members, link, connection, len(commands)))
            out: list[list[Any]] = [[] for _ in groups]
            retry = False
            for address, members, link, connection, count in begun:  # every begun one is read
                try:
                    result = link.finish(connection, count)
                except ConnectionLost as exc:
                    failure = failure or _named(exc, address)
                    continue
                at = 0
                for i in members:
                    out[i] = result[at:at + len(groups[i])]
                    at += len(groups[i])
                    error = _first_error(out[i])
                    if error is not None and failure is None:
                        try:
                            if self._redirected(error, address) is not None:
                                failure = _named(ClusterDown(f"slot migrating: {error}"),
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
        raise _named(ClusterDown("too many cluster redirections"), None)

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
            raise _named(ReplyTimeout("no time left for Redis"), address)
        return left

    def _redirected(self, error: ErrorReply, address: Address) -> Address | None:
        message = str(error)
        moved = redirect(message)
        if moved is None:
            if cluster_unavailable(message):
                self.refresh_soon()
                raise _named(ClusterDown(message), address)
            raise _named(error, address)
        kind, slot, target = moved
        if kind == "ASK":
            return (address[0], target[1]) if not target[0] else target
        self.router.moved(slot, target, address)
        self.refresh_soon()
        return None

    def _master(self, slot: int, deadline: float) -> Address:
        if self.router.map is None:
            self._load(deadline)
        address = self.router.master(slot)
        if address is None:
            self.refresh_soon()
            raise _named(ClusterDown(f"slot {slot} has no master"), None)
        return address

    def _load(self, deadline: float) -> None:
        """The first map, on the calling thread; the threads arriving meanwhile wait for it."""
        with self._loading:
            if self.router.map is not None:
                return
            if not self.router.due():
                raise _named(ClusterDown("no slot map yet (the cluster did not answer)"), None)
            try:
                self._refresh(max(deadline - time.monotonic(), 0.001))
            except PipelineError as exc:
                raise _named(exc, None) from None

    def _refresh_logged(self) -> None:
        try:
            self._refresh(self.router.timeout)
        except PipelineError as exc:
            log.warning("cannot read the Redis Cluster slot map: %s", exc)
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
            return
        raise ClusterDown("no node answered CLUSTER SLOTS (" + "; ".join(failures) + ")")

    def _link(self, address: Address) -> ThreadPipelines:
        link = self._links.get(address)
        if link is None:
            with self._lock:
                if self._closed:
                    raise _named(ConnectionLost("client closed"), address)
                link = self._links.setdefault(address, ThreadPipelines(self.router.endpoint(
                    address)))
        return link
