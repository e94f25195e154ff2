"""Fire-and-forget writes gathered off the request threads: one thread, one connection, one
write per batch (the thread-pool server model's decision log).

An answering thread that sent its own decision-log entry paid a ``sendall`` per answer: a
loopback send costs the sender ~20 µs of CPU and hands the GIL to a waiting thread. Here the
answering thread packs the command and appends the bytes to a queue (the writer is woken only
when it sleeps); the writer lets ``gather`` seconds of entries pile up, sends them in one write
and reads their replies in order.

Failure model as for the per-thread writes: an error reply, a timeout or a lost connection
counts the commands concerned in ``dropped`` (a metric), never raises; the next batch connects
afresh. More than ``max_pending`` commands waiting (Redis stalled) drops the newest. ``close``
sends what is pending, bounded by the timeout.
"""

from __future__ import annotations

import collections
import threading

import hiredis

from recsvc.store.transport.blocking_pipeline import Connection
from recsvc.store.transport.redis_pipeline import ConnectionLost, Endpoint

GATHER_SECONDS = 0.002  # a Recommend every ~0.4 ms on one core: a handful of entries per write
MAX_PENDING = 10_000
MAX_BATCH = 1_000  # commands per write: a backlog after a stall leaves in bounded pieces


class BackgroundWriter:
    def __init__(self, endpoint: Endpoint, timeout: float, gather: float = GATHER_SECONDS,
                 max_pending: int = MAX_PENDING, name: str = "recsvc-writes") -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.gather = gather
        self.max_pending = max_pending
        self.dropped = 0  # only the writer thread adds, but for ``submit``'s overflow: locked
        self._pending: collections.deque[bytes] = collections.deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._stopping = False
        self._stopped = threading.Event()  # ends a gathering pause at once
        self._connection: Connection | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, command: tuple[bytes | str, ...]) -> None:
        """Queue ``command``; sent within about ``gather`` seconds."""
        if self._stopping or len(self._pending) >= self.max_pending:
            with self._lock:
                self.dropped += 1
            return
        # hiredis's type stub declares a one-element tuple; any number of arguments works.
        self._pending.append(hiredis.pack_command(command))  # type: ignore[arg-type]
        if not self._wake.is_set():  # an attribute read; the Event's lock only once per batch
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._stopped.wait(self.gather)
            # Cleared before draining: an entry appended from here on sets it again.
            self._wake.clear()
            while self._pending:
                batch = [self._pending.popleft()
                         for _ in range(min(len(self._pending), MAX_BATCH))]
                self._send(batch)
            if self._stopping:
                return

    def _send(self, batch: list[bytes]) -> None:
        try:
            if self._connection is None:
                self._connection = Connection(self.endpoint, self.timeout)
            self._connection.begin(batch)
            failed = sum(isinstance(r, hiredis.ReplyError)
                         for r in self._connection.finish(len(batch)))
        except ConnectionLost:  # a timeout too: what was sent may or may not have landed
            if self._connection is not None:
                self._connection.close()
                self._connection = None
            failed = len(batch)
        if failed:
            with self._lock:
                self.dropped += failed

    def close(self) -> None:
        """Send what is pending (at most about the timeout), then stop the writer."""
        self._stopping = True
        self._stopped.set()
        self._wake.set()
        self._thread.join(self.timeout + 1.0)
        if self._connection is not None:
            self._connection.close()
