"""`python -m bench.servers [--customers N] [--seconds S] [--rounds R]`: the bare sync and aio
echoes and Recommend on each server model of recsvc, driven by h2load, pinned (bench/servers/
plan.py says how). Trains the bench data into its own redis-server first; writes
bench/results/servers.json and the tables of docs/PERFORMANCE.md between its markers.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from bench.servers import before, plan
from training import localredis


def main() -> int:
    from bench.__main__ import bench_train, dataset, machine

    parser = argparse.ArgumentParser(prog="python -m bench.servers")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="per h2load run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds per server start")
    parser.add_argument("--sync-threads", type=int, help="RECSVC_SYNC_THREADS for sync")
    parser.add_argument("--no-workers", action="store_true", help="skip 2 workers vs 1")
    parser.add_argument("--before", metavar="REF", action="append", default=[],
                        help="also Recommend of this earlier commit (its own train and serve); "
                             "repeat it to pair two commits (a move against its parent: the "
                             "later ones are also compared with the first)")
    parser.add_argument("--log-cost", action="store_true",
                        help="also each model without the decision log (what logging costs)")
    parser.add_argument("--ceiling", action="store_true",
                        help="also the sync server with its decision replayed: the most a "
                             "native decision could reach (bench/servers/ceiling.py)")
    parser.add_argument("--out", type=Path, default=plan.RESULTS)
    parser.add_argument("--no-docs", action="store_true",
                        help="leave docs/PERFORMANCE.md alone (for trial runs)")
    args = parser.parse_args()
    for name in ("seconds", "rounds"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive")
    server = localredis.start()
    try:
        with contextlib.ExitStack() as stack:
            bench_train(server.url, args.customers)
            extra = []
            for ref in args.before:
                tree, commit = stack.enter_context(before.checkout(ref))
                extra.append(before.target(tree, commit, server.url, dataset(args.customers),
                                           plan.base_env(server.url)))
            results: dict[str, Any] = {
                "machine": machine(), "customers": args.customers,
                "command": "python -m bench.servers " + " ".join(sys.argv[1:])}
            results.update(plan.run(server.url, server.process.pid, dataset(args.customers),
                                    args.seconds, args.rounds, args.warmup, args.sync_threads,
                                    not args.no_workers, extra, args.log_cost,
                                    args.ceiling))
    finally:
        server.stop()
    plan.publish(results, args.out, not args.no_docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
