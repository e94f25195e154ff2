"""``recsvc experiments ...``: champion / challenger and shadow (docs/DESIGN.md section 6).

    recsvc experiments start --challenger VERSION --share 0.1 [--shadow] [--salt S]
    recsvc experiments status
    recsvc experiments promote
    recsvc experiments stop

Every replica follows a change within one model poll. Refusals are one line on stderr (exit 1;
a malformed flag exits 2): an unknown or incomplete version, a share outside (0, 1], an
experiment already running, none running.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

import redis

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.core.errors import RecsvcError
from recsvc.experiments.challenger import Experiment, parse_share
from recsvc.store.control.experiments import Experiments
from recsvc.store.control.registry import redis_problem
from recsvc.store.reads.reader import connect


def _share(text: str) -> float:
    try:
        return parse_share(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_command(sub: Any) -> None:
    experiments = sub.add_parser(
        "experiments", help="champion / challenger and shadow: start, status, promote, stop")
    esub = experiments.add_subparsers(dest="experiments_command", required=True)
    start = esub.add_parser("start", help="serve (or shadow) a challenger version beside the "
                            "active one for a share of customers")
    start.add_argument("--challenger", required=True, help="a published version (models list)")
    start.add_argument("--share", required=True, type=_share,
                       help="share of customers, 0 < share <= 1 (salted customer hash)")
    start.add_argument("--shadow", action="store_true",
                       help="decide and log the challenger's offers, never serve them")
    start.add_argument("--salt", default="", help="the customer hash's salt (default: random)")
    esub.add_parser("status", help="the running experiment, if any")
    esub.add_parser("promote", help="make the challenger the active version and end the "
                    "experiment, atomically")
    esub.add_parser("stop", help="end the experiment: the active version answers everyone")
    experiments.set_defaults(run=run)


def describe(experiment: Experiment) -> str:
    started = datetime.fromtimestamp(experiment.started_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    served = "shadowed (logged, not served)" if experiment.mode == "shadow" else "served"
    return (f"challenger {experiment.challenger}: {experiment.mode}, share "
            f"{experiment.share:g} of customers {served}, salt {experiment.salt}, "
            f"started {started}")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """A Redis failure is one line (RecsvcError), never a traceback."""
    try:
        return _run(args, settings)
    except redis.RedisError as exc:
        raise RecsvcError(redis_problem(exc, settings.redis_url)) from None


def _run(args: argparse.Namespace, settings: Settings) -> int:
    experiments = Experiments(connect(settings, timeout_ms=5000),
                              schema.keys_for(settings))
    command = args.experiments_command
    if command == "start":
        experiment = experiments.start(args.challenger, args.share, args.shadow, args.salt)
        print(f"experiment started: {describe(experiment)}")
    elif command == "status":
        running = experiments.status()
        active, _ = experiments.registry.pointers()
        print(f"active version (champion): {active or '-'}")
        print(f"experiment: {describe(running)}" if running else "no experiment is running")
    elif command == "promote":
        experiment, previous = experiments.promote()
        print(f"promoted: active version is now {experiment.challenger} (previous: "
              f"{previous or '-'}); experiment ended")
    else:
        experiment = experiments.stop()
        print(f"experiment stopped: {describe(experiment)}")
    return 0
