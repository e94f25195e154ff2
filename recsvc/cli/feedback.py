"""``recsvc feedback consume``: the fold-in consumer until SIGTERM/SIGINT (the batch in hand
finishes first)."""

from __future__ import annotations

import argparse

from recsvc.core.config import Settings
from recsvc.core.stopping import SignalStop
from recsvc.foldin.consumer import consume


def consume_command(args: argparse.Namespace, settings: Settings) -> int:
    stop = SignalStop().install()  # its handler takes no lock (recsvc/core/stopping.py)
    stats = consume(settings, stop, args.name, args.batch, args.claim_idle_seconds)
    print(f"fold-in: {stats.entries} entries, {stats.folded} records written, "
          f"{stats.replayed} replayed, {stats.claimed} taken over")
    return 0
