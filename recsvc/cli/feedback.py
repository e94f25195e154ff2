"""``recsvc feedback consume``: the fold-in consumer until SIGTERM/SIGINT (the batch in hand
finishes first)."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from recsvc.core.config import Settings
from recsvc.foldin.consumer import consume


def consume_command(args: argparse.Namespace, settings: Settings) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stats = consume(settings, stop, args.name, args.batch, args.claim_idle_seconds)
    print(f"fold-in: {stats.entries} entries, {stats.folded} records written, "
          f"{stats.replayed} replayed, {stats.claimed} taken over")
    return 0
