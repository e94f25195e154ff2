"""One pipelined Redis connection on the event loop: the per-request read of the hot path.

Commands asked during one turn of the event loop go out in one write at the end of the turn,
without waiting for earlier replies, and replies are matched to callers in order (Redis answers
one connection's commands in order), parsed by hiredis. So 32 requests in flight cost a few
writes and reads, with no connection pool, no locks and no threads. redis.asyncio does the same
job with far more Python per command: on the bench machine, with its HGET the gRPC server held
2.0-2.2k Recommend/s where this held 2.6k (docs/PERFORMANCE.md). Only the hot path uses this;
everything else uses redis-py.

Failure model: a reply that does not come within the caller's timeout closes the connection and
fails every command waiting on it (their replies could no longer be matched once one is skipped
on a dead server); the next command reconnects.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from dataclasses import dataclass
from typing import Any

import hiredis
from redis.connection import SSLConnection, parse_url


class PipelineError(Exception):
    """Base of the errors of this module."""

    # On a cluster, the master the failed call went to (its breaker opens): set by
    # ``cluster_pipeline``; a class attribute, so a single Redis's errors cost nothing more.
    address: tuple[str, int] | None = None


class ConnectionLost(PipelineError):
    """Redis could not be reached, or the connection closed before the reply."""


class ReplyTimeout(ConnectionLost):
    """No reply within the caller's timeout (the connection is closed)."""


class ErrorReply(PipelineError):
    """Redis answered with an error (wrong type, NOAUTH, ...)."""


class _Protocol(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # The loop is kept: asyncio.get_running_loop() costs a getpid() system call per use on
        # Python 3.11, twice per request here.
        self.loop = loop
        self.reader = hiredis.Reader()
        # Callers in the order their commands were written, each with its timeout's timer, and
        # for a batch (``send_many``) the replies gathered so far and how many it waits for.
        self.waiting: collections.deque[
            tuple[asyncio.Future[Any], asyncio.TimerHandle, list[Any] | None, int]] = \
            collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self._unsent: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self.close(ConnectionLost(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not self.waiting:  # a reply nobody asked for: the stream cannot be trusted
                self.close(ConnectionLost("Redis sent a reply no command was waiting for"))
                return
            waiter, timer, gathered, count = self.waiting[0]
            if gathered is not None:  # one reply of a batch: the caller gets all at once
                gathered.append(ErrorReply(str(reply)) if isinstance(reply, hiredis.ReplyError)
                                else reply)
                if len(gathered) < count:
                    continue
            self.waiting.popleft()
            timer.cancel()
            if waiter.done():  # its caller gave up (cancelled); the reply is dropped
                continue
            if gathered is not None:
                waiter.set_result(gathered)
            elif isinstance(reply, hiredis.ReplyError):
                waiter.set_exception(ErrorReply(str(reply)))
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail_waiting(ConnectionLost(f"connection to Redis lost: {exc or 'closed'}"))

    def send(self, command: bytes, deadline: float) -> asyncio.Future[Any]:
        """Queue ``command``; its reply arrives on the future, or ReplyTimeout at ``deadline``."""
        waiter: asyncio.Future[Any] = self.loop.create_future()
        self.waiting.append((waiter, self.loop.call_at(deadline, self._expire, waiter), None, 0))
        if not self._unsent:
            self.loop.call_soon(self._flush)
        self._unsent.append(command)
        return waiter

    def send_many(self, commands: bytes, count: int, deadline: float) -> asyncio.Future[Any]:
        """Queue ``count`` packed commands; the list of their replies (an error reply as an
        ErrorReply in its place) arrives on one future: one future and one timer per batch."""
        waiter: asyncio.Future[Any] = self.loop.create_future()
        self.waiting.append((waiter, self.loop.call_at(deadline, self._expire, waiter), [],
                             count))
        if not self._unsent:
            self.loop.call_soon(self._flush)
        self._unsent.append(commands)
        return waiter

    def _expire(self, waiter: asyncio.Future[Any]) -> None:
        if not waiter.done():
            self.close(ReplyTimeout("Redis did not answer in time"))

    def _flush(self) -> None:
        commands, self._unsent = self._unsent, []
        if self.transport is not None and not self.lost:
            self.transport.write(b"".join(commands))

    def close(self, error: PipelineError) -> None:
        self.lost = True
        self._fail_waiting(error)
        if self.transport is not None:
            self.transport.abort()

    def _fail_waiting(self, error: PipelineError) -> None:
        while self.waiting:
            waiter, timer, _, _ = self.waiting.popleft()
            timer.cancel()
            if not waiter.done():
                waiter.set_exception(error)


def tls_context(params: dict[str, Any]) -> ssl.SSLContext:
    """The TLS settings of a ``rediss://`` URL, read as redis-py reads them (query arguments
    ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``,
    ``ssl_check_hostname``), so the hot path and redis-py connect the same way."""
    context = ssl.create_default_context(cafile=params.get("ssl_ca_certs"))
    reqs = str(params.get("ssl_cert_reqs", "required")).lower()
    if reqs in ("none", "optional"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE if reqs == "none" else ssl.CERT_OPTIONAL
    elif params.get("ssl_check_hostname") is False:
        context.check_hostname = False
    if params.get("ssl_certfile"):
        context.load_cert_chain(params["ssl_certfile"], params.get("ssl_keyfile"))
    return context


@dataclass(frozen=True)
class Endpoint:
    """Where a Redis URL points and what a new connection sends first (AUTH, SELECT)."""

    path: str | None  # a unix socket
    host: str
    port: int
    ssl: ssl.SSLContext | None
    handshake: list[tuple[bytes | str, ...]]

    @classmethod
    def of(cls, url: str) -> Endpoint:
        params = parse_url(url)  # type: ignore[no-untyped-call]
        handshake: list[tuple[bytes | str, ...]] = []
        if params.get("password"):
            user = params.get("username")
            handshake.append(("AUTH", user, params["password"]) if user
                             else ("AUTH", params["password"]))
        if int(params.get("db", 0)):
            handshake.append(("SELECT", str(params["db"])))
        return cls(params.get("path"), params.get("host", "localhost"),
                   int(params.get("port", 6379)),
                   tls_context(params) if params.get("connection_class") is SSLConnection
                   else None, handshake)


class PipelinedRedis:
    """``await execute("HGET", key, field, timeout=0.025)``; reconnects lazily after a failure."""

    def __init__(self, url: str | Endpoint) -> None:
        self.dropped = 0  # fire-and-forget writes that failed
        endpoint = url if isinstance(url, Endpoint) else Endpoint.of(url)
        self._path, self._host, self._port = endpoint.path, endpoint.host, endpoint.port
        self._ssl, self._handshake = endpoint.ssl, endpoint.handshake
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    async def execute(self, *args: bytes | str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout  # the loop's clock (asyncio uses monotonic)
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = await self._connect(deadline)
        # hiredis's type stub declares a one-element tuple; any number of arguments works.
        command = hiredis.pack_command(args)  # type: ignore[arg-type]
        return await protocol.send(command, deadline)

    async def execute_many(self, commands: list[tuple[bytes | str, ...]],
                           timeout: float) -> list[Any]:
        """Several commands in one write (one round trip); replies in order. An error reply
        fails the call after every reply arrived, so the connection stays in step."""
        results = await self.execute_all(commands, timeout=timeout)
        for reply in results:
            if isinstance(reply, ErrorReply):
                raise reply
        return results

    async def execute_all(self, commands: list[tuple[bytes | str, ...]],
                          timeout: float) -> list[Any]:
        """Several commands in one write (one round trip); every reply in order, an error reply
        as an ErrorReply in its place (the caller decides per command). ConnectionLost or
        ReplyTimeout when the connection fails before every reply arrived."""
        if not commands:
            return []
        deadline = time.monotonic() + timeout
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = await self._connect(deadline)
        packed = b"".join(hiredis.pack_command(c)  # type: ignore[arg-type]
                          for c in commands)
        replies: list[Any] = await protocol.send_many(packed, len(commands), deadline)
        return replies

    def send_nowait(self, *args: bytes | str, timeout: float) -> None:
        """Fire and forget: for writes after the answer that nobody awaits. On the open
        connection the command leaves with the loop turn's others; without one it connects
        first (a task). The reply is read and dropped in order; a failure is counted in
        ``dropped``."""
        protocol = self._protocol
        if protocol is None or protocol.lost:
            task = asyncio.ensure_future(self.execute(*args, timeout=timeout))
            task.add_done_callback(self._count_failure)
            return
        waiter = protocol.send(hiredis.pack_command(args),  # type: ignore[arg-type]
                               time.monotonic() + timeout)
        waiter.add_done_callback(self._count_failure)

    def _count_failure(self, waiter: asyncio.Future[Any]) -> None:
        if not waiter.cancelled() and waiter.exception() is not None:
            self.dropped += 1

    async def close(self) -> None:
        if self._protocol is not None:
            self._protocol.close(ConnectionLost("client closed"))
            self._protocol = None

    async def _connect(self, deadline: float) -> _Protocol:
        # Callers arriving while a connection is being made share it.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open(deadline))
            self._connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, attempt: asyncio.Future[_Protocol]) -> None:
        self._connecting = None
        if not attempt.cancelled() and attempt.exception() is None:
            self._protocol = attempt.result()

    async def _open(self, deadline: float) -> _Protocol:
        loop = asyncio.get_running_loop()
        remaining = max(deadline - time.monotonic(), 0.0)

        def protocol_factory() -> _Protocol:
            return _Protocol(loop)

        try:
            if self._path:
                _, protocol = await asyncio.wait_for(
                    loop.create_unix_connection(protocol_factory, self._path), remaining)
            else:
                _, protocol = await asyncio.wait_for(
                    loop.create_connection(protocol_factory, self._host, self._port,
                                           ssl=self._ssl), remaining)
        except (TimeoutError, OSError) as exc:
            raise ConnectionLost(f"cannot connect to Redis: {exc or 'timed out'}") from exc
        try:
            for command in self._handshake:
                packed = hiredis.pack_command(command)  # type: ignore[arg-type]
                await protocol.send(packed, deadline)
        except PipelineError as exc:
            protocol.close(ConnectionLost("handshake failed"))
            raise ConnectionLost(f"Redis refused the connection setup: {exc}") from exc
        return protocol
