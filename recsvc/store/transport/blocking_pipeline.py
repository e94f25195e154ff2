"""One Redis connection per server thread: the hot path's reads for the thread-pool server model.

Each thread of the sync gRPC server owns a plain blocking socket whose replies hiredis parses, so
a read is one ``send`` and (usually) one ``recv`` with no lock, no pool and no event loop: the
GIL is released while the thread waits on the socket. Timeouts are the kernel's
(``SO_RCVTIMEO``/``SO_SNDTIMEO``) rather than Python's socket timeout, which would add a
``poll`` per read; over TLS they are Python's (OpenSSL retries a read the kernel interrupted).
Either restarts with every read, so a reply in several pieces gets what is left of the call's.

Writes after the answer (the decision log, contacts) are sent on the same connection without
waiting: their replies are owed, and read (and dropped, a failure counted in ``dropped``)
before the next read's replies on that thread; Redis answers one connection in order.

Failure model as in ``redis_pipeline``: a timeout or a broken stream closes the thread's
connection (what was owed is counted as dropped); the next call reconnects.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import ssl
import struct
import threading
import time
from typing import Any

import hiredis

from recsvc.store.transport.redis_pipeline import ConnectionLost, Endpoint, ErrorReply, ReplyTimeout

_TICK = 0.005  # the kernel rounds socket timeouts up to its timer tick (1-4 ms)
_TIMEOUT_ERRNOS = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ETIMEDOUT)


def _pack(command: tuple[bytes | str, ...]) -> bytes:
    # hiredis's type stub declares a one-element tuple; any number of arguments works.
    packed: bytes = hiredis.pack_command(command)  # type: ignore[arg-type]
    return packed


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("ll", whole, max(int((seconds - whole) * 1e6), 1 if not whole else 0))


class Connection:
    """A connected socket, its reply parser and the replies owed for unread writes (public: the
    per-thread pipelines, the cluster batch and the campaign's bulk store each hold them)."""

    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        try:
            if endpoint.path:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                sock.connect(endpoint.path)
            else:
                sock = socket.create_connection((endpoint.host, endpoint.port), timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if endpoint.ssl is not None:
                    sock = endpoint.ssl.wrap_socket(sock, server_hostname=endpoint.host)
        except OSError as exc:
            raise ConnectionLost(f"cannot connect to Redis: {exc or 'timed out'}") from exc
        sock.settimeout(None)  # blocking; the kernel's timeouts below bound every call
        self.sock = sock
        self.reader = hiredis.Reader()
        self.owed = 0
        self.failed_writes = 0  # owed replies read that were errors, not yet in ``dropped``
        self.timeout = 0.0
        self._until = 0.0  # when the current exchange times out
        self._reads = 0  # socket reads in the current exchange
        try:
            self.set_timeout(timeout)
            for command in endpoint.handshake:
                self.exchange([_pack(command)])
        except (ErrorReply, ConnectionLost, OSError) as exc:
            self.close()
            raise ConnectionLost(f"Redis refused the connection setup: {exc}") from exc

    def set_timeout(self, seconds: float) -> None:
        if seconds != self.timeout:
            if isinstance(self.sock, ssl.SSLSocket):
                # OpenSSL retries a read the kernel's timeout interrupted (WANT_READ on a
                # blocking socket): over TLS only Python's own timeout bounds a call.
                self.sock.settimeout(max(seconds, 0.001))
                self.timeout = seconds
                return
            value = _timeval(max(seconds, 0.001))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
            self.timeout = seconds

    def exchange(self, packed: list[bytes]) -> list[Any]:
        """Send ``packed`` in one write; read the owed replies, then one reply per command.
        An error reply fails the call after every reply arrived (the stream stays in step)."""
        self._until, self._reads = time.monotonic() + self.timeout, 0
        self._send(b"".join(packed))
        while self.owed:  # counted down as read: what a failure leaves unread was lost
            if isinstance(self._reply(), hiredis.ReplyError):
                self.failed_writes += 1
            self.owed -= 1
        replies = [self._reply() for _ in packed]
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                raise ErrorReply(str(reply))
        return replies

    def begin(self, packed: list[bytes]) -> None:
        """``exchange`` in two halves, for a cluster's batch (every master's commands written
        before any reply is read): the write here, the reads in ``finish``."""
        self._until, self._reads = time.monotonic() + self.timeout, 0
        self._send(b"".join(packed))

    def finish(self, count: int) -> list[Any]:
        """The owed replies, then ``count`` replies, an error reply in its place."""
        while self.owed:
            if isinstance(self._reply(), hiredis.ReplyError):
                self.failed_writes += 1
            self.owed -= 1
        return [self._reply() for _ in range(count)]

    def send_owed(self, packed: bytes) -> None:
        self._send(packed)
        self.owed += 1

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise self._lost(exc) from exc

    def _reply(self) -> Any:
        reader = self.reader
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                raise ConnectionLost(f"Redis protocol error: {exc}") from exc
            if reply is not False:
                return reply
            if self._reads:  # the kernel's timeout restarts per read: the call's is what is left
                left = self._until - time.monotonic()
                if left <= 0:
                    raise ReplyTimeout("Redis did not answer in time")
                # A second read is the rule when writes are owed (their replies came first):
                # re-arm only past the kernel's timer tick, not with 4 syscalls per call.
                if left < self.timeout - _TICK:
                    self.set_timeout(left)
            self._reads += 1
            try:
                data = self.sock.recv(65536)
            except OSError as exc:
                raise self._lost(exc) from exc
            if not data:
                raise ConnectionLost("connection to Redis lost: closed")
            reader.feed(data)

    @staticmethod
    def _lost(exc: OSError) -> ConnectionLost:
        if isinstance(exc, TimeoutError) or exc.errno in _TIMEOUT_ERRNOS:
            return ReplyTimeout("Redis did not answer in time")
        return ConnectionLost(f"connection to Redis lost: {exc}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class ThreadPipelines:
    """``execute_many(commands, timeout)`` on the calling thread's own connection."""

    def __init__(self, url: str | Endpoint) -> None:
        self.endpoint = url if isinstance(url, Endpoint) else Endpoint.of(url)
        self.dropped = 0  # writes sent without waiting that failed (or were lost unanswered)
        self._local = threading.local()
        self._all: list[Connection] = []  # every thread's, to close them at shutdown
        self._lock = threading.Lock()  # only around connecting and closing
        self._closed = False

    def execute_many(self, commands: list[tuple[bytes | str, ...]],
                     timeout: float) -> list[Any]:
        """Several commands in one write, replies in order; raises ConnectionLost,
        ReplyTimeout (the connection is closed) or ErrorReply (it stays usable)."""
        connection = self._connection(timeout)
        connection.set_timeout(timeout)
        try:
            replies = connection.exchange([_pack(c) for c in commands])
        except ErrorReply:
            self._count(connection)
            raise
        except ConnectionLost:
            self._drop(connection)
            raise
        self._count(connection)
        return replies

    def begin(self, commands: list[tuple[bytes | str, ...]], timeout: float) -> Connection:
        """Write ``commands`` on this thread's connection; ``finish`` reads their replies."""
        return self.begin_packed([_pack(c) for c in commands], timeout)

    def begin_packed(self, packed: list[bytes], timeout: float) -> Connection:
        """``begin`` of commands packed already (a batch job packs its own)."""
        connection = self._connection(timeout)
        connection.set_timeout(timeout)
        try:
            connection.begin(packed)
        except ConnectionLost:
            self._drop(connection)
            raise
        return connection

    def finish(self, connection: Connection, count: int) -> list[Any]:
        """The replies of ``begin``'s commands, an error reply as an ErrorReply in its place."""
        try:
            replies = connection.finish(count)
        except ConnectionLost:
            self._drop(connection)
            raise
        self._count(connection)
        return [ErrorReply(str(r)) if isinstance(r, hiredis.ReplyError) else r for r in replies]

    def send_nowait(self, command: tuple[bytes | str, ...], timeout: float) -> None:
        """Fire and forget on this thread's connection; its reply is read before the next
        call's. A failure is counted in ``dropped``, never raised."""
        try:
            connection = self._connection(timeout)
            connection.send_owed(_pack(command))
        except ConnectionLost:
            with self._lock:
                self.dropped += 1
            broken: Connection | None = getattr(self._local, "connection", None)
            if broken is not None:
                self._drop(broken)

    def _count(self, connection: Connection) -> None:
        if connection.failed_writes:
            with self._lock:
                self.dropped += connection.failed_writes
            connection.failed_writes = 0

    def _connection(self, timeout: float) -> Connection:
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        if self._closed:
            raise ConnectionLost("client closed")
        connection = Connection(self.endpoint, timeout)
        with self._lock:
            closed = self._closed  # closed while connecting: ``close`` never saw this one
            if not closed:
                self._all.append(connection)
        if closed:
            connection.close()
            raise ConnectionLost("client closed")
        self._local.connection = connection
        return connection

    def _drop(self, connection: Connection) -> None:
        connection.close()
        self._local.connection = None
        with self._lock:
            self.dropped += connection.owed + connection.failed_writes
            connection.owed = connection.failed_writes = 0
            if connection in self._all:
                self._all.remove(connection)

    def close(self) -> None:
        """Close every thread's connection (at shutdown, after the threads stopped)."""
        with self._lock:
            self._closed = True
            connections, self._all = self._all, []
        for connection in connections:
            connection.close()

