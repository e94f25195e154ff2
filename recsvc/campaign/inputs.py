"""The campaign's input: customer ids from CSV (a ``customer_id`` column), Parquet (the same
column) or a plain list (one id per line). Every bad id is named by its line (row for Parquet)
before anything is read from Redis: empty, longer than a Recommend allows
(``serving/questions.py``), or repeated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsvc.core.errors import InvalidRequestError
from recsvc.serving.questions import validate_customer_id

COLUMN = "customer_id"
SHOWN = 20  # bad lines named in the message


def read_ids(path: Path) -> list[str]:
    """The ids in file order; InvalidRequestError naming the bad lines."""
    if not path.is_file():
        raise InvalidRequestError(f"--customers: {path} is not a file")
    if path.suffix.lower() in (".parquet", ".pq"):
        if COLUMN not in pq.read_schema(path).names:
            raise InvalidRequestError(f"--customers: {path} has no {COLUMN!r} column")
        column = pq.read_table(path, columns=[COLUMN]).column(COLUMN).cast(pa.string())
        first, unit = 1, "row"
    else:
        with path.open("rb") as handle:
            head = handle.readline().decode("utf-8", "replace").strip()
        if COLUMN in [name.strip().strip('"') for name in head.split(",")]:
            table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(),
                                   parse_options=pacsv.ParseOptions(ignore_empty_lines=False),
                                   convert_options=pacsv.ConvertOptions(
                                       column_types={COLUMN: pa.string()},
                                       include_columns=[COLUMN], strings_can_be_null=False))
            column = table.column(COLUMN)
            first, unit = 2, "line"
        else:
            text = path.read_bytes().decode("utf-8")
            lines = text.split("\n")
            if lines and lines[-1] == "":
                lines.pop()
            column = pa.chunked_array([pa.array([line.rstrip("\r") for line in lines],
                                                pa.string())])
            first, unit = 1, "line"
    column = pc.fill_null(column, "")
    ids: list[str] = column.to_pylist()
    _check(ids, column, first, unit, path)
    return ids


def _check(ids: list[str], column: pa.ChunkedArray, first: int, unit: str, path: Path) -> None:
    from recsvc.serving.questions import MAX_ID_BYTES

    if not ids:
        raise InvalidRequestError(f"--customers: {path} holds no customer id")
    lengths = pc.binary_length(column).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero((lengths == 0) | (lengths > MAX_ID_BYTES))
    problems: list[tuple[int, str]] = []
    for i in bad.tolist():
        try:
            validate_customer_id(ids[i], "customer id")
        except InvalidRequestError as exc:
            problems.append((i, str(exc)))
    codes = pc.dictionary_encode(column).combine_chunks().indices.to_numpy()
    counts = np.bincount(codes)
    if (counts > 1).any():
        first_of: dict[int, int] = {}
        for i in np.flatnonzero(counts[codes] > 1).tolist():
            code = int(codes[i])
            if code in first_of:
                problems.append((i, f"customer id {ids[i][:60]!r} repeats {unit} "
                                    f"{first_of[code] + first}"))
            else:
                first_of[code] = i
    if problems:
        problems.sort()
        named = "; ".join(f"{unit} {i + first}: {why}" for i, why in problems[:SHOWN])
        more = f" (and {len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""
        raise InvalidRequestError(f"--customers: {len(problems)} bad customer id(s) in "
                                  f"{path}: {named}{more}")
