"""Reading the input files and parsing their columns, vectorized (pyarrow/numpy).

CSV (every column read as text unless typed on purpose), CSV.gz or Parquet. A CSV line that does
not parse is skipped and returned with its line number; numbers, times and ids are parsed into
numpy arrays with a mask of unparseable values. What counts as a bad row is decided in
``training.inputs.data``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsvc.core.errors import DataError

MAX_LISTED_VALUES = 20  # distinct unknown values listed per kind (e.g. event names seen)
MAX_SAMPLE_CHARS = 200  # a malformed line is quoted up to this length
# Numeric timestamps at or above 1e11 are not seconds (1e11 s is the year 5138): by magnitude,
# milliseconds, microseconds or nanoseconds since the epoch, converted to seconds.
EPOCH_UNITS = (("milliseconds", 1e11, 1e14, 1e3), ("microseconds", 1e14, 1e17, 1e6),
               ("nanoseconds", 1e17, math.inf, 1e9))

_NUMBER = r"^\s*[-+]?((\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|inf|infinity|nan)\s*$"
_ZONED = r"(Z|z|[+-]\d\d:?\d\d)$"


def is_csv(path: str) -> bool:
    return path.lower().endswith((".csv", ".csv.gz"))


DICT = pa.dictionary(pa.int32(), pa.string())


@dataclass(frozen=True)
class Malformed:
    """CSV lines skipped because they do not parse: 1-based line numbers and their text."""

    lines: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


def read_table(path: str, required: tuple[str, ...],
               types: dict[str, pa.DataType] | None = None) -> tuple[pa.Table, Malformed]:
    """CSV (every column as text unless ``types`` says otherwise), CSV.gz or Parquet.

    ``types`` is a memory optimisation for big files: ids read as dictionaries, numbers as
    float64. When a typed column holds a value that is not of its type, the file is read again
    with that column as text, so the value is reported as a bad row instead of failing the run.
    A CSV line with the wrong number of fields is skipped and returned in ``Malformed``.
    """
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file")
    lowered = path.lower()
    malformed = Malformed()
    try:
        if lowered.endswith(".parquet"):
            table = pq.read_table(path)
        elif is_csv(lowered):
            opener = gzip.open if lowered.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8", newline="") as handle:
                header = next(csv.reader([handle.readline()]), [])
            if not header:
                raise DataError(f"{path}: empty file, expected a header line")
            column_types = {name: pa.string() for name in header}
            typed = {k: v for k, v in (types or {}).items() if k in column_types}
            try:
                table, malformed = _read_csv(path, {**column_types, **typed})
            except pa.ArrowInvalid:
                numeric = [k for k, v in typed.items() if pa.types.is_floating(v)]
                table, malformed = _read_csv(path, {**column_types, **{
                    k: v for k, v in typed.items() if k not in numeric}})
        else:
            raise DataError(f"{path}: unknown format; use .csv, .csv.gz or .parquet")
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing required column(s) {missing}; found "
                        f"{table.column_names}")
    return table, malformed


def _read_csv(path: str, column_types: dict[str, pa.DataType],
              threads: bool = True) -> tuple[pa.Table, Malformed]:
    """Read with malformed lines skipped; if there were any, read again on one thread, the only
    way Arrow tells their line numbers (a rare case: the fast path stays parallel)."""
    found = Malformed()

    def skip(row: Any) -> str:
        if row.number is not None:
            found.lines.append(int(row.number))
        if len(found.texts) < MAX_LISTED_VALUES:
            found.texts.append(str(row.text)[:MAX_SAMPLE_CHARS])
        return "skip"

    table = pacsv.read_csv(
        path, read_options=pacsv.ReadOptions(use_threads=threads),
        parse_options=pacsv.ParseOptions(invalid_row_handler=skip),
        convert_options=pacsv.ConvertOptions(
            column_types=column_types, strings_can_be_null=False,
            quoted_strings_can_be_null=False, null_values=[""]))
    if found.texts and threads:
        return _read_csv(path, column_types, threads=False)
    return table, found


def lookup(table: pa.Table, name: str, values: pa.Array) -> npt.NDArray[np.int32]:
    """Position of each row's (trimmed) value in ``values``, -1 when absent.

    Dictionary columns are looked up once per distinct value, not once per row.
    """
    column = table.column(name)
    if pa.types.is_dictionary(column.type):
        column = column.unify_dictionaries()  # one dictionary shared by every chunk
        if not column.num_chunks:
            return np.empty(0, dtype=np.int32)
        mapping = pc.index_in(pc.utf8_trim_whitespace(column.chunk(0).dictionary),
                              value_set=values)
        codes = np.asarray(pc.fill_null(mapping, -1).to_numpy(zero_copy_only=False),
                           dtype=np.int32)
        parts = []
        for chunk in column.chunks:
            indices = chunk.indices
            found = codes[np.asarray(pc.fill_null(indices, 0).to_numpy(zero_copy_only=False))]
            if indices.null_count:
                found[mask(pc.is_null(indices))] = -1
            parts.append(found)
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int32)
    position = pc.index_in(text(table, name), value_set=values)
    return np.asarray(pc.fill_null(position, -1).to_numpy(zero_copy_only=False), dtype=np.int32)


def text(table: pa.Table, name: str) -> pa.Array:
    """A column as trimmed text ('' for null); absent columns read as all ''."""
    if name not in table.column_names:
        return pa.array([""] * table.num_rows, type=pa.string())
    column = table.column(name).combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        column = pc.cast(column, pa.string())
    return pc.utf8_trim_whitespace(pc.fill_null(column, ""))


def mask(array: pa.Array) -> npt.NDArray[np.bool_]:
    return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)


def _column(table: pa.Table, name: str) -> tuple[
        pa.Array | None, tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]]:
    """The column, or None and what an absent optional column parses to (all NaN, none bad)."""
    n = table.num_rows
    absent = (np.full(n, np.nan), np.zeros(n, dtype=bool))
    if name not in table.column_names:
        return None, absent
    return table.column(name).combine_chunks(), absent


def parse_float(table: pa.Table, name: str) -> tuple[npt.NDArray[np.float64],
                                                       npt.NDArray[np.bool_]]:
    """Values (NaN when empty) and a mask of unparseable ones."""
    column, nothing = _column(table, name)
    if column is None:
        return nothing
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        values = np.array(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False),
                          dtype=np.float64)  # nulls become NaN
        return values, nothing[1]  # nothing is bad in a numeric column
    strings = text(table, name)
    empty = mask(pc.equal(strings, ""))
    numeric = mask(pc.match_substring_regex(strings, _NUMBER, ignore_case=True))
    safe = pc.if_else(pa.array(numeric), strings, "nan")
    values = np.array(pc.cast(safe, pa.float64()).to_numpy(zero_copy_only=False),
                      dtype=np.float64)
    return values, ~numeric & ~empty


def parse_time(table: pa.Table, name: str) -> tuple[npt.NDArray[np.float64],
                                                      npt.NDArray[np.bool_]]:
    """Epoch seconds (NaN when empty) from ISO-8601 text or Unix seconds; and a bad mask."""
    values, bad, _ = _parse_time(table, name)
    return values, bad


def parse_epoch_time(table: pa.Table, name: str) -> tuple[
        npt.NDArray[np.float64], npt.NDArray[np.bool_], dict[str, int]]:
    """As parse_time, but numbers in milliseconds, microseconds or nanoseconds since the epoch
    are converted to seconds (by magnitude, see EPOCH_UNITS); returns the count per unit."""
    values, bad, numeric = _parse_time(table, name)
    converted: dict[str, int] = {}
    for unit, low, high, divisor in EPOCH_UNITS:
        rows = numeric & (values >= low) & (values < high)
        if rows.any():
            values[rows] /= divisor
            converted[unit] = int(rows.sum())
    return values, bad, converted


def _parse_time(table: pa.Table, name: str) -> tuple[
        npt.NDArray[np.float64], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Values, bad mask, and the mask of values that were given as numbers."""
    column, nothing = _column(table, name)
    n = table.num_rows
    if column is None:
        return nothing[0], nothing[1], np.zeros(n, dtype=bool)
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        micros = pc.cast(pc.cast(column, pa.timestamp("us")), pa.int64())
        values = np.asarray(micros.to_numpy(zero_copy_only=False), dtype=np.float64) / 1e6
        return values, np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        values, bad = parse_float(table, name)
        return values, bad, ~np.isnan(values)
    strings = text(table, name)
    values, not_number = parse_float(table, name)
    empty = mask(pc.equal(strings, ""))
    iso_rows = np.flatnonzero(not_number)
    bad = np.zeros(n, dtype=bool)
    if len(iso_rows):
        subset = strings.take(pa.array(iso_rows))
        zoned = mask(pc.match_substring_regex(subset, _ZONED))
        for rows, tz in ((iso_rows[zoned], "UTC"), (iso_rows[~zoned], None)):
            if len(rows):
                parsed, failed = _parse_iso(strings.take(pa.array(rows)), tz)
                values[rows] = parsed
                bad[rows] = failed
    values[empty] = np.nan
    return values, bad, ~not_number & ~empty


def optional_float(table: pa.Table, name: str, low: float,
                   high: float) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """An optional number in [low, high]: values with anything invalid (unparseable, NaN,
    infinite, out of range) set to NaN, i.e. missing; and the mask of those invalid values."""
    values, unparseable = parse_float(table, name)
    column, _ = _column(table, name)
    if column is None:
        return values, unparseable
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        present = ~mask(pc.is_null(column))
    else:
        present = ~mask(pc.equal(text(table, name), ""))
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(values) & (values >= low) & (values <= high)
    invalid = unparseable | (present & ~valid)
    values[invalid] = np.nan
    return values, invalid


def _parse_iso(strings: pa.Array, tz: str | None) -> tuple[npt.NDArray[np.float64],
                                                           npt.NDArray[np.bool_]]:
    try:
        stamps = pc.cast(strings, pa.timestamp("us", tz=tz))
        micros = np.asarray(pc.cast(stamps, pa.int64()).to_numpy(zero_copy_only=False))
        return micros.astype(np.float64) / 1e6, np.zeros(len(strings), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass  # at least one value is not ISO-8601 for Arrow: decide row by row
    values = np.full(len(strings), np.nan)
    bad = np.zeros(len(strings), dtype=bool)
    for i, raw in enumerate(strings.to_pylist()):
        try:
            moment = datetime.fromisoformat(raw.replace("z", "Z"))
        except ValueError:
            bad[i] = True
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        values[i] = moment.timestamp()
    return values, bad


def first_occurrence(ids: pa.Array) -> npt.NDArray[np.bool_]:
    """True at the first row of each distinct id."""
    codes = np.asarray(pc.dictionary_encode(ids).indices.to_numpy(zero_copy_only=False))
    first = np.zeros(len(ids), dtype=bool)
    first[np.unique(codes, return_index=True)[1]] = True
    return first


def fingerprint(paths: list[str]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).name.encode())
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()
