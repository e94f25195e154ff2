"""The ``recsvc train`` and ``recsvc datagen`` sub-commands, added to the ``recsvc`` console
script through its ``recsvc.commands`` entry-point group (see pyproject.toml).

Only argparse at import time: ``recsvc --help`` must work in a serving-only install. The
training stack (the ``train`` extra) is imported when a command runs, and its absence is one
clear line.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from recsvc.core.config import Settings

EXIT_FAILURE = 1


def _missing_stack(command: str, exc: ImportError) -> int:
    print(f"recsvc {command}: the training stack is not installed ({exc.name}); "
          "install it with: pip install 'recsvc[train]'", file=sys.stderr)
    return EXIT_FAILURE


def run_train(args: argparse.Namespace, settings: Settings) -> int:
    try:
        from training import job
    except ImportError as exc:
        return _missing_stack("train", exc)
    return job.main(args, settings)


def run_datagen(args: argparse.Namespace, settings: Settings) -> int:
    try:
        from training.synth import datagen
    except ImportError as exc:
        return _missing_stack("datagen", exc)
    return datagen.main(args)


def add_train(sub: Any) -> None:
    train: argparse.ArgumentParser = sub.add_parser(
        "train", help="train per-segment models and publish a version")
    train.add_argument("--customers", required=True)
    train.add_argument("--offers", required=True)
    train.add_argument("--interactions", required=True)
    train.add_argument("--config", help="TOML file (see docs/DESIGN.md for every key)")
    train.add_argument("--report", help="write the run report as JSON here")
    train.add_argument("--metrics-file", help="write the run's Prometheus metrics here (a "
                       "node-exporter textfile, e.g. .../textfile/recsvc_train.prom)")
    train.add_argument("--no-activate", action="store_true",
                       help="publish the version but leave the active one in place")
    train.add_argument("--strict", action="store_true", help="any bad row fails the run")
    train.add_argument("--force", action="store_true",
                       help="activate even if the quality gate says the new version is worse")
    train.add_argument("--seed", type=int, help="overrides the config's seed")
    train.add_argument("--decisions", metavar="DIR",
                       help="an exported decision log (`recsvc decisions export --out DIR`): "
                       "its logged propensities de-bias the held-out metrics of the "
                       "interactions whose decision_id it holds, its explored answers make the "
                       "exploration slice")
    train.set_defaults(run=run_train)


def add_datagen(sub: Any) -> None:
    gen: argparse.ArgumentParser = sub.add_parser(
        "datagen", help="write a synthetic data set with planted preferences")
    gen.add_argument("--out", required=True)
    gen.add_argument("--customers", type=int, default=10_000)
    gen.add_argument("--offers", type=int, default=200)
    gen.add_argument("--segments", type=int, default=4)
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--format", choices=("csv", "parquet"), default="csv")
    gen.add_argument("--world", choices=("default", "biased"), default="default",
                     help="biased: exposure by an incumbent policy, with ground truth "
                          "(truth.parquet, truth.json)")
    gen.add_argument("--explore-share", type=float, default=0.0,
                     help="biased world: this share of customers also get one explored answer "
                          "(uniform exposure) in the last week, logged with decision ids and a "
                          "decision log export in OUT/decisions (recsvc train --decisions)")
    gen.set_defaults(run=run_datagen)


def run_events(args: argparse.Namespace, settings: Settings) -> int:
    try:
        from recsvc.core import schema
        from recsvc.store.reads.reader import connect
        from training.inputs import events
    except ImportError as exc:
        return _missing_stack("events", exc)
    client = connect(settings, timeout_ms=30_000)
    keys = schema.keys_for(settings)
    if args.events_command == "export":
        exported = events.export(client, keys, args.out)
        print(f"{exported.table.num_rows} events written to {args.out} (from "
              f"{len(exported.cutoff)} shard streams; they are trimmed only by training)")
        return 0
    removed = events.trim(client, keys)
    print(f"{removed} events trimmed (held by every kept model version and the consumers)")
    return 0


def add_events(sub: Any) -> None:
    events: argparse.ArgumentParser = sub.add_parser(
        "events", help="the logged feedback events: export them, trim what is safe")
    esub = events.add_subparsers(dest="events_command", required=True)
    export = esub.add_parser("export", help="write every logged event to a file")
    export.add_argument("--out", required=True, help="FILE.parquet or FILE.csv")
    esub.add_parser("trim", help="drop events every kept version was trained on")
    events.set_defaults(run=run_events)
