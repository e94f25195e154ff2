"""A log that cannot flood: one line per kind of failure and interval, the rest counted.

Stdlib only. Hostile or broken input (undecodable requests, corrupt records) can fail every
call; a traceback per call filled 1.2 MB in a 10,000-call fuzz. ``counts`` keeps each kind's
total for metrics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

LOG_INTERVAL_SECONDS = 10.0


class RateLimitedLog:
    """At most one line per kind of failure every ``interval`` seconds; the others are counted
    and the next line says how many there were. ``counts`` keeps every kind's total (for
    metrics). Thread-safe: a synchronous server calls it from its worker threads."""

    def __init__(self, logger: logging.Logger, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self.logger = logger
        self.interval = interval
        self.counts: Counter[str] = Counter()
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def log(self, level: int, kind: str, message: str,
            exc_info: bool | BaseException = False) -> None:
        now = time.monotonic()
        with self._lock:
            self.counts[kind] += 1
            if now - self._last.get(kind, -self.interval) < self.interval:
                self._suppressed[kind] += 1
                return
            self._last[kind] = now
            suppressed, self._suppressed[kind] = self._suppressed[kind], 0
        if suppressed:
            message += f" ({suppressed} more like it since the last such line, not logged)"
        self.logger.log(level, "%s", message, exc_info=exc_info)
