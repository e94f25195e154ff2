"""``recsvc report``: the retention scorecard from the decision log and the feedback streams,
as a self-contained HTML page (plots) and the same numbers as JSON."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.core.errors import RecsvcError
from recsvc.experiments.decision_log import as_columns
from recsvc.experiments.scorecard import Decisions, Events, Outcomes, scorecard
from recsvc.store.feedback.decisions import read_decisions
from recsvc.store.feedback.streams import last_ids, read_entries
from recsvc.store.reads.reader import connect


def add_command(sub: Any) -> None:
    report = sub.add_parser("report", help="the retention scorecard (HTML with plots, JSON)")
    report.add_argument("--out", required=True, help="the HTML page to write")
    report.add_argument("--json", help="also write the numbers as JSON here")
    report.add_argument("--window-days", type=float, default=30.0,
                        help="attribution window after a decision (default 30)")
    report.add_argument("--clip", type=float, default=100.0,
                        help="largest inverse-propensity weight in off-policy estimates")
    report.add_argument("--decisions", help="read the decisions from this Parquet export "
                        "(`recsvc decisions export`) instead of the Redis decision log")
    report.add_argument("--events", help="read the feedback from this Parquet file or directory "
                        "(`recsvc events export`) instead of the Redis event streams")
    report.set_defaults(run=run)


def events_columns(client: Any, keys: schema.Keys) -> dict[str, list[Any]]:
    """Every recorded feedback event of the streams, as column lists."""
    columns: dict[str, list[Any]] = {k: [] for k in ("customer_id", "offer_id", "event", "ts",
                                                     "decision_id", "value")}
    for _shard, _sid, fields in read_entries(client, keys, last_ids(client, keys)):
        columns["customer_id"].append(fields.get("customer", ""))
        columns["offer_id"].append(fields.get("offer", ""))
        columns["event"].append(fields.get("event", ""))
        columns["ts"].append(float(fields.get("ts") or 0.0))
        columns["decision_id"].append(fields.get("decision", ""))
        value = fields.get("value", "")
        columns["value"].append(float(value) if value else None)
    return columns


def _inputs(args: argparse.Namespace, settings: Settings) -> tuple[Decisions, Events | Outcomes]:
    """Decisions and events from Parquet exports or from Redis, whichever the flags name."""
    if args.decisions or args.events:
        try:
            from recsvc.experiments import parquet_log
        except ImportError as exc:
            raise RecsvcError(f"reading Parquet needs pyarrow ({exc.name}): "
                              "pip install 'recsvc[report]'") from None
    keys = schema.keys_for(settings)
    if args.decisions:
        decisions, ids = parquet_log.read_decisions(Path(args.decisions))
        if args.events:  # Redis is not asked at all
            return decisions, parquet_log.place_events(
                parquet_log.read_events(Path(args.events)), decisions, ids)
        return decisions, parquet_log.outcomes_from_columns(
            events_columns(connect(settings, timeout_ms=30_000), keys), decisions, ids)
    client = connect(settings, timeout_ms=30_000)
    try:
        logged = list(read_decisions(client, keys))
    except ValueError as exc:
        raise ValueError(f"the decision log holds a malformed entry: {exc}") from None
    if not logged:
        raise ValueError("the decision log is empty: serve some answers first "
                         "(RECSVC_DECISION_LOG=1, the default)")
    columns = parquet_log.events_columns(Path(args.events)) if args.events else \
        events_columns(client, keys)
    return Decisions.from_columns(as_columns(logged)), Events.from_columns(columns)


def _plain(value: Any) -> Any:
    """JSON has no NaN: missing estimates are null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.window_days <= 0 or args.clip < 1:
        raise RecsvcError("--window-days must be > 0 and --clip >= 1")
    try:
        import matplotlib  # noqa: F401  (the plots)

        from recsvc.experiments.report_html import render
    except ImportError as exc:
        raise RecsvcError(f"recsvc report needs matplotlib ({exc.name}): "
                          "pip install 'recsvc[report]'") from None
    try:
        card = scorecard(*_inputs(args, settings), args.window_days, args.clip)
    except ValueError as exc:
        raise RecsvcError(str(exc)) from None
    Path(args.out).write_text(render(card))
    if args.json:
        Path(args.json).write_text(json.dumps(_plain(card), indent=2))
    arms = ", ".join(f"{arm}: {m['customers']} customers" for arm, m in card["arms"].items())
    print(f"report: {card['decisions']:,} decisions ({arms}) -> {args.out}", file=sys.stdout)
    return 0
