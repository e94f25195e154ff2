"""``recsvc decisions export --out DIR``: the decision log drained into partitioned Parquet,
incrementally (``recsvc/experiments/export_dir.py``: layout, commit, exactly once).

Per shard it reads the stream after the committed cursor, writes the rows (one file per UTC
day and part), commits the new cursors in one atomic rename, and only then trims the exported
entries from Redis (``XTRIM MINID``: the stream keeps just what is not exported yet). A crash
before the commit leaves files nobody reads and the next run redoes them; a crash after it
leaves entries the next run trims. Serving's ``MAXLEN ~ RECSVC_DECISION_LOG_MAX_PER_SHARD``
stays as the memory backstop: if the export falls that far behind, unexported entries are
dropped, and the next export counts them (the stream's ``entries-added`` grew by more than the
entries it could read since the last run), names the shard and exits 3. Run it often enough
that a shard's backlog stays below that bound (docs/DESIGN.md, "The decision log export").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.core.errors import RecsvcError
from recsvc.experiments import export_dir
from recsvc.experiments.decision_log import Decision
from recsvc.store.feedback.decisions import added, read_after, trim_upto
from recsvc.store.reads.reader import connect

EXIT_LOST = 3  # exported, but entries were trimmed before any export could read them


def add_command(sub: Any) -> None:
    decisions = sub.add_parser("decisions", help="the decision log: export it to Parquet")
    dsub = decisions.add_subparsers(dest="decisions_command", required=True)
    export = dsub.add_parser("export", help="drain the decision log into partitioned Parquet "
                             "(incremental, exactly once)")
    export.add_argument("--out", required=True, help="the export directory")
    export.add_argument("--page", type=int, default=50_000,
                        help="entries read per call and written per file part")
    export.add_argument("--keep", action="store_true",
                        help="leave exported entries in Redis (default: trim them)")
    export.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.page < 1:
        raise RecsvcError("--page must be at least 1")
    try:
        from recsvc.experiments import parquet_log
    except ImportError as exc:
        raise RecsvcError(f"recsvc decisions export needs pyarrow ({exc.name}): "
                          "pip install 'recsvc[report]'") from None
    client = connect(settings, timeout_ms=30_000)
    keys = schema.keys_for(settings)
    directory = Path(args.out)
    try:
        with export_dir.exclusive(directory):
            state = export_dir.read_commit(directory)
            export_dir.remove_uncommitted(directory, state)
            new = export_dir.Committed(state.run + 1, dict(state.cursor), dict(state.exported),
                                       dict(state.added), dict(state.lost))
            batch: list[tuple[int, str, Decision]] = []
            part = 0
            lost: list[str] = []
            for shard in range(schema.SHARDS):
                stream = added(client, keys, shard)
                if stream is None:
                    continue
                total, newest = stream
                before = state.added.get(shard, 0)
                if total < before:  # the stream was deleted and began again
                    before = 0
                after, read = state.after(shard), 0
                while True:  # everything up to the newest id seen above, page by page
                    entries = read_after(client, keys, shard, after, newest, args.page)
                    for stream_id, fields in entries:
                        try:
                            batch.append((shard, stream_id, Decision.from_fields(fields)))
                        except ValueError as exc:
                            raise RecsvcError(f"decision log shard {shard}, entry {stream_id}: "
                                              f"{exc}") from None
                    if entries:
                        after = new.cursor[shard] = entries[-1][0]
                        read += len(entries)
                    if len(batch) >= args.page:
                        parquet_log.write_run(directory, parquet_log.table_of(batch), new.run,
                                              part)
                        part, batch = part + 1, []
                    if len(entries) < args.page:
                        break
                new.exported[shard] = new.exported.get(shard, 0) + read
                new.added[shard] = total
                if total - before > read:
                    missed = total - before - read
                    new.lost[shard] = new.lost.get(shard, 0) + missed
                    lost.append(f"shard {shard}: {missed:,} entries after {state.after(shard)}")
            if batch:
                parquet_log.write_run(directory, parquet_log.table_of(batch), new.run, part)
            rows = sum(new.exported.values()) - sum(state.exported.values())
            changed = (new.cursor, new.exported, new.added, new.lost) != (
                state.cursor, state.exported, state.added, state.lost)
            if changed:
                export_dir.commit(directory, new)
            trimmed = 0 if args.keep else sum(
                trim_upto(client, keys, shard, cursor) for shard, cursor in new.cursor.items())
    except ValueError as exc:
        raise RecsvcError(str(exc)) from None
    print(f"decisions export: {rows:,} decisions in run {new.run if changed else state.run} -> "
          f"{directory} ({sum(new.exported.values()):,} in all); {trimmed:,} trimmed from Redis")
    for line in lost:
        print(f"recsvc: decision log trimmed before export (RECSVC_DECISION_LOG_MAX_PER_SHARD "
              f"outran it; export more often): {line} lost", file=sys.stderr)
    return EXIT_LOST if lost else 0
