"""`recsvc campaign --customers FILE --out FILE.parquet`: a whole campaign's decisions at once
(recsvc/campaign/), one JSON summary line on stdout."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from recsvc.core.config import Settings
from recsvc.core.errors import InvalidRequestError
from recsvc.serving.questions import DEFAULT_LIMIT

EXIT_USAGE = 2


def _context(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def add_command(sub: Any) -> None:
    campaign = sub.add_parser(
        "campaign", help="decide offers for every customer of a file (budgets by value)")
    campaign.add_argument("--customers", type=Path, required=True,
                          help="CSV with a customer_id column, Parquet with one, or one id "
                          "per line")
    campaign.add_argument("--out", type=Path, required=True, help="the Parquet file to write")
    campaign.add_argument("--channel", default="", help="as a Recommend's channel")
    campaign.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                          help=f"offers per customer (default {DEFAULT_LIMIT})")
    campaign.add_argument("--context", type=_context, action="append", default=[],
                          metavar="KEY=VALUE", help="as a Recommend's context (repeatable)")
    campaign.add_argument("--dry-run", action="store_true",
                          help="decide and write the file; reserve no budget, log nothing")
    campaign.set_defaults(run=campaign_command)


def campaign_command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        from recsvc.campaign.run import Options, run
    except ImportError as exc:  # pyarrow: the `report` extra
        print(f"recsvc campaign: needs pyarrow (pip install 'recsvc[report]'): {exc}",
              file=sys.stderr)
        return 1
    options = Options(args.customers, args.out, args.channel, args.limit,
                      dict(args.context), args.dry_run)
    try:
        summary = run(settings, options)
    except InvalidRequestError as exc:
        print(f"recsvc campaign: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps({**summary.__dict__, "out": str(args.out)}))
    return 0
