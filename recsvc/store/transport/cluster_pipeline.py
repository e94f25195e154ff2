"""The hot path's connections to a Redis Cluster: one per master, each call to its slot's master.

``ClusterPipelines`` (event loop) holds a ``PipelinedRedis`` per master; ``cluster_blocking``'s
``ClusterThreadPipelines`` (thread-pool model) a ``ThreadPipelines`` per master (so a connection
per master per thread). Both learn where slots live the same way (``Router``): ``CLUSTER
SLOTS`` from a node known to be in the cluster (the masters of the last map, the URL's node,
then every other node named), read again after a ``MOVED``, a ``CLUSTERDOWN``/``TRYAGAIN`` or a
failed connection to a master, at most once per ``redis_retry_after_failure_ms``; a ``MOVED``
also moves its slot in the map at once so the call is retried on the right master within the
caller's timeout. A failure raised from here names the master (``PipelineError.address``): the
readers keep a breaker per master, so a lost master degrades only the calls for its slots.

A single Redis never comes here (``redis_pipeline``/``blocking_pipeline`` as they were).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from recsvc.core.ratelog import RateLimitedLog
from recsvc.store.transport.redis_pipeline import (
    ConnectionLost,
    Endpoint,
    ErrorReply,
    PipelinedRedis,
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
    cluster_unavailable,
    command_slot,
    parse_cluster_slots,
    redirect,
)

# While a master is away the map is read about once a second: one line per 10 s says so.
SLOT_MAP_LOG = RateLimitedLog(logging.getLogger(__name__))

REDIRECTS = 3  # MOVED/ASK followed per call before giving up (a slot migrating twice is rare)


class ClusterDown(ConnectionLost):
    """The cluster cannot serve the slot now (CLUSTERDOWN, an unassigned slot, no map yet)."""


def with_asking(commands: Sequence[Command]) -> list[Command]:
    """``commands`` each after an ``ASKING`` (it admits the next command only)."""
    return [c for command in commands for c in (("ASKING",), command)]


def first_error(replies: list[Any]) -> ErrorReply | None:
    for reply in replies:
        if isinstance(reply, ErrorReply):
            return reply
    return None


def named(exc: PipelineError, address: Address | None) -> PipelineError:
    exc.address = address
    return exc


class Router:
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

    def redirected(self, error: ErrorReply, address: Address, refresh: Callable[[], None]
                   ) -> Address | None:
        """What an error reply from ``address`` means: MOVED moves the slot (None: retry on the
        map), ASK names the node to ask once; anything else is raised (a cluster down as a
        lost connection, so the caller's retry and breaker rule applies)."""
        message = str(error)
        moved = redirect(message)
        if moved is None:
            if cluster_unavailable(message):
                refresh()
                raise named(ClusterDown(message), address)
            raise named(error, address)
        kind, slot, target = moved
        if kind == "ASK":
            return (address[0], target[1]) if not target[0] else target
        self.moved(slot, target, address)
        refresh()
        return None

    def learned(self, reply: Any, asked: Address) -> SlotMap:
        self.map = parse_cluster_slots(reply, asked)
        return self.map


class ClusterPipelines:
    """``PipelinedRedis``'s calls, each sent to the master of its slot (the event loop's)."""

    def __init__(self, url: str, every: float, timeout: float,
                 router: Router | None = None) -> None:
        self.router = router if router is not None else Router(url, every, timeout)
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
        for _ in range(REDIRECTS):
            address = asking if asking is not None else await self._master(slot, deadline)
            sent = with_asking(commands) if asking is not None else commands
            replies = await self._send(address, sent, deadline)
            if asking is not None:
                replies = replies[1::2]
            error = first_error(replies)
            if error is None:
                return replies
            asking = self._redirected(error, address)
        raise named(ClusterDown("too many cluster redirections"), None)

    async def execute_all(self, commands: list[Command], timeout: float) -> list[Any]:
        """``PipelinedRedis.execute_all`` on a cluster: each command (with a key: CrossSlotError
        for one without, such as SCRIPT LOAD) on its slot's master, every master written before
        any reply is awaited; every reply in order, an error reply as an ErrorReply in its
        place (MOVED followed, as everywhere here)."""
        replies = await self.execute_groups([[c] for c in commands], timeout, in_place=True)
        return [r for call in replies for r in call]

    async def execute_groups(self, groups: list[list[Command]], timeout: float,
                             in_place: bool = False) -> list[list[Any]]:
        """Several calls (each on one slot), each master's in one write, every master's written
        before any reply is awaited; the replies per call, in order. An error reply other than
        a redirection is raised, or with ``in_place`` left in its place."""
        deadline = time.monotonic() + timeout
        slots = [call_slot(g) for g in groups]
        for _ in range(REDIRECTS):
            if self.router.map is None:
                await self._load(deadline)
            assert self.router.map is not None
            owners = by_master(slots, self.router.map)
            if None in owners:
                self.refresh_soon()
                raise named(ClusterDown("a slot of the batch has no master"), None)
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
                    error = first_error(out[i])
                    if error is not None and (not in_place or redirect(str(error))):
                        if self._redirected(error, address) is not None:  # ASK: a migration
                            raise named(ClusterDown(f"slot migrating: {error}"), address)
                        retry = True
            if not retry:
                return out
        raise named(ClusterDown("too many cluster redirections"), None)

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
            raise named(ReplyTimeout("no time left for Redis"), address)
        try:
            return await self._link(address).execute_all(commands, timeout=left)
        except ConnectionLost as exc:
            self.refresh_soon()
            raise named(exc, address) from None

    def _redirected(self, error: ErrorReply, address: Address) -> Address | None:
        return self.router.redirected(error, address, self.refresh_soon)

    async def _master(self, slot: int, deadline: float) -> Address:
        if self.router.map is None:
            await self._load(deadline)
        address = self.router.master(slot)
        if address is None:
            self.refresh_soon()
            raise named(ClusterDown(f"slot {slot} has no master"), None)
        return address

    async def _load(self, deadline: float) -> None:
        """The first map, awaited within the caller's deadline."""
        self.refresh_soon()
        if self._refreshing is None:
            raise named(ClusterDown("no slot map yet (the cluster did not answer)"), None)
        try:
            await asyncio.wait_for(asyncio.shield(self._refreshing),
                                   max(deadline - time.monotonic(), 0.0))
        except TimeoutError as exc:
            raise named(ReplyTimeout("the cluster's slot map did not come in time"),
                         None) from exc
        except PipelineError as exc:
            raise named(exc, None) from None
        if self.router.map is None:
            raise named(ClusterDown("no slot map yet (the cluster did not answer)"), None)

    def _refreshed(self, task: asyncio.Future[None]) -> None:
        self._refreshing = None
        if not task.cancelled() and task.exception() is not None:
            SLOT_MAP_LOG.log(logging.WARNING, "slot_map",
                             f"cannot read the Redis Cluster slot map: {task.exception()}")

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
                link = self._links.pop(gone)
                self._dropped += link.dropped  # still counted once the link is gone
                await link.close()
            return
        raise ClusterDown("no node answered CLUSTER SLOTS (" + "; ".join(failures) + ")")

    def _link(self, address: Address) -> PipelinedRedis:
        link = self._links.get(address)
        if link is None:
            link = self._links[address] = PipelinedRedis(self.router.endpoint(address))
        return link
