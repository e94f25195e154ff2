"""Stopping on SIGTERM or SIGINT without a lock in the signal handler.

A Python signal handler runs in the main thread between two bytecodes, possibly while that
thread holds a lock; a handler that takes the same lock waits for itself forever. That is what
``threading.Event.set`` in a handler did to a `recsvc serve --workers` worker (seen in the bench,
2026-12-06): its main thread was in ``Event.wait``, re-acquiring the Event's lock after the
supervisor's first SIGTERM woke it, when the supervisor's second SIGTERM ran the handler, whose
``set`` then waited for that lock. The worker never stopped. Logging from a handler has the same
hazard (handlers' locks). Here the handler only appends to a list; waiting polls it.
"""

from __future__ import annotations

import signal
import time
from types import FrameType
from typing import Protocol

POLL_SECONDS = 0.05  # how late a wait may notice a stop


class StopRequest(Protocol):
    """What a loop that runs until asked to stop needs (``threading.Event`` is one)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class SignalStop:
    """Set by SIGTERM or SIGINT (once ``install``ed) or by ``set``; ``is_set`` and ``wait`` as
    ``threading.Event`` has them, so a loop written for an Event takes it."""

    def __init__(self) -> None:
        self.received: list[int] = []  # signal numbers; 0 for ``set``

    def install(self) -> SignalStop:
        """Handle SIGTERM and SIGINT from now on (main thread only, as ``signal.signal``)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)  # no lock, no logging: see the module's docstring

    def set(self) -> None:
        self.received.append(0)

    def is_set(self) -> bool:
        return bool(self.received)

    def wait(self, timeout: float | None = None) -> bool:
        """True once stopped (at most ``POLL_SECONDS`` after the signal), False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.received:
            left = POLL_SECONDS if deadline is None else min(POLL_SECONDS,
                                                             deadline - time.monotonic())
            if left <= 0:
                return False
            time.sleep(left)
        return True

    @property
    def signal_name(self) -> str:
        """The first signal's name ("SIGTERM"), or "a stop request" when ``set`` came first."""
        first = self.received[0] if self.received else 0
        return signal.Signals(first).name if first else "a stop request"
