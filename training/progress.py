"""Progress of long phases: a bar on a terminal, a log line every few seconds otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("training.progress")


class Progress:
    def __init__(self, total: int, unit: str, every_seconds: float = 5.0) -> None:
        self.total = total
        self.unit = unit
        self.done = 0
        self.every = every_seconds
        self._last = time.monotonic()
        self._bar: Any = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit=f" {unit}", unit_scale=True, leave=False)

    def advance(self, count: int) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
        elif time.monotonic() - self._last >= self.every:
            self._last = time.monotonic()
            log.info("%s: %d of %d", self.unit, self.done, self.total)

    def note(self, message: str) -> None:
        if self._bar is not None:
            self._bar.set_description(message[:60])
        else:
            log.info("%s", message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
