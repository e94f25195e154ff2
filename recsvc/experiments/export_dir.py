"""The directory ``recsvc decisions export`` fills: partitioned Parquet files and one commit file.

Layout (hive-style partitions, readable by any Parquet engine)::

    DIR/_export.json                      the commit: run number, per-shard cursor, counts
    DIR/day=YYYY-MM-DD/run-RRRRRRRR-PPPP.parquet   decisions of run R (part P) made that UTC day

Exactly once, across crashes: a run writes its files first, then commits by replacing
``_export.json`` in one ``os.replace`` (atomic on POSIX) with the new run number and, per shard,
the last stream id it wrote. Files of a run above the committed one belong to a run that died
before its commit: readers ignore them and the next run deletes them, then reads the stream
again from the committed cursor. So an entry is in a committed file once, or not yet. One run at
a time: an exclusive ``flock`` on ``DIR/_export.lock``. No Redis here (the cli drives both).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

COMMIT = "_export.json"
FORMAT = 1
_FILE = re.compile(r"run-(\d{8})-(\d{4})\.parquet$")


@dataclass
class Committed:
    run: int = 0  # the last committed run (0: nothing yet)
    cursor: dict[int, str] = field(default_factory=dict)  # shard -> last exported stream id
    exported: dict[int, int] = field(default_factory=dict)  # shard -> entries exported, all runs
    # shard -> the stream's entries-added when it was last read through: entries added since,
    # less those then read, were trimmed before the export saw them (counted as lost).
    added: dict[int, int] = field(default_factory=dict)
    lost: dict[int, int] = field(default_factory=dict)  # shard -> entries lost, all runs

    def after(self, shard: int) -> str:
        return self.cursor.get(shard, "0-0")


def read_commit(directory: Path) -> Committed:
    """The committed state; ValueError naming the file when it is not ours or is damaged."""
    path = directory / COMMIT
    if not path.exists():
        return Committed()
    try:
        raw = json.loads(path.read_text())
        if raw.get("format") != FORMAT:
            raise ValueError(f"format {raw.get('format')!r}, expected {FORMAT}")
        return Committed(int(raw["run"]), {int(k): str(v) for k, v in raw["cursor"].items()},
                         {int(k): int(v) for k, v in raw["exported"].items()},
                         {int(k): int(v) for k, v in raw["added"].items()},
                         {int(k): int(v) for k, v in raw["lost"].items()})
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a decision-log export commit ({exc})") from None


def commit(directory: Path, state: Committed) -> None:
    """Makes a run's files visible: write aside, fsync, rename over the old commit."""
    path = directory / COMMIT
    tmp = path.with_suffix(".json.tmp")
    body = {"format": FORMAT, "run": state.run,
            "cursor": {str(k): v for k, v in sorted(state.cursor.items())},
            "exported": {str(k): v for k, v in sorted(state.exported.items())},
            "added": {str(k): v for k, v in sorted(state.added.items())},
            "lost": {str(k): v for k, v in sorted(state.lost.items())},
            "rows": sum(state.exported.values())}
    with open(tmp, "w") as out:
        out.write(json.dumps(body, indent=1))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def data_files(directory: Path) -> Iterator[tuple[int, Path]]:
    """(run, path) of every Parquet file of the layout, committed or not."""
    for path in sorted(directory.glob("day=*/run-*.parquet")):
        match = _FILE.search(path.name)
        if match:
            yield int(match.group(1)), path


def committed_files(directory: Path) -> list[Path]:
    """The files readers may read: those of committed runs."""
    run = read_commit(directory).run
    return [path for r, path in data_files(directory) if r <= run]


def readable_files(directory: Path) -> list[Path]:
    """What a reader takes: the committed files of an export, or, in a directory without a
    commit file (Parquet files of this schema from elsewhere), every Parquet file except those of
    the export's layout (a first run's that has not committed)."""
    if (directory / COMMIT).exists():
        return committed_files(directory)
    uncommitted = {path for _, path in data_files(directory)}
    return [p for p in sorted(directory.glob("**/*.parquet")) if p not in uncommitted]


def part_path(directory: Path, day: str, run: int, part: int) -> Path:
    folder = directory / f"day={day}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"run-{run:08d}-{part:04d}.parquet"


def remove_uncommitted(directory: Path, state: Committed) -> int:
    """Deletes the files of a run that died before committing; returns how many."""
    removed = 0
    for run, path in data_files(directory):
        if run > state.run:
            path.unlink()
            removed += 1
    return removed


@contextmanager
def exclusive(directory: Path) -> Iterator[None]:
    """One export run per directory at a time; a second fails at once with a clear line."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "_export.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{directory}: another export is running into it") from None
        yield
