"""The exported decision log as a training input (``recsvc train --decisions DIR``): per shown
offer, the probability the serving policy had of showing it and whether its answer explored.

``read`` takes the directory ``recsvc decisions export`` writes (its committed files; without a
commit file, every Parquet file under it) and flattens it to one row per (decision, offer).
``join`` places the interactions that carry a ``decision_id`` against it: an interaction whose
decision and offer are in the log gets that propensity and explored flag; any other gets NaN and
False, and its cell keeps the propensity estimated from impressions (training/evaluate.py).
Every bad input is refused with the file or the decision named.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from recsvc.core.errors import DataError
from recsvc.experiments import export_dir
from training.inputs.data import Dataset

REQUIRED = ("decision_id", "offers", "propensities")
SEPARATOR = "\x1f"  # between decision id and offer id in a join key (never in either)


@dataclass(frozen=True)
class LoggedShows:
    """One row per offer shown by a logged decision."""

    keys: pa.Array  # "decision_id \\x1f offer_id", text
    propensity: npt.NDArray[np.float64]  # in (0, 1]
    explored: npt.NDArray[np.bool_]
    decisions: int  # decisions read


@dataclass(frozen=True)
class Joined:
    """Per interaction: the logged propensity (NaN: none) and whether its answer explored."""

    propensity: npt.NDArray[np.float64]
    explored: npt.NDArray[np.bool_]

    def report(self, logged: LoggedShows, with_id: int) -> dict[str, int]:
        return {"decisions_read": logged.decisions, "offers_shown": len(logged.propensity),
                "interactions_with_decision_id": with_id,
                "interactions_joined": int(np.isfinite(self.propensity).sum()),
                "interactions_explored": int(self.explored.sum())}


def _files(directory: Path) -> list[Path]:
    if not directory.exists():
        raise DataError(f"--decisions {directory}: no such directory")
    if not directory.is_dir():
        raise DataError(f"--decisions {directory}: not a directory (give the directory "
                        "`recsvc decisions export --out` wrote)")
    files = export_dir.readable_files(directory)
    if not files:
        raise DataError(f"--decisions {directory}: no exported decisions (run "
                        "`recsvc decisions export`)")
    return files


def _read_file(path: Path) -> pa.Table:
    try:
        table = ds.dataset(str(path), format="parquet").to_table()
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"--decisions {path}: not a readable Parquet file ({exc})") from exc
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise DataError(f"--decisions {path}: missing column(s) {', '.join(missing)} (a "
                        "decision log export has decision_id, offers, propensities)")
    explored = table["explored"] if "explored" in table.column_names else \
        pa.array(np.zeros(table.num_rows, dtype=bool))
    try:
        return pa.table({"decision_id": pc.cast(table["decision_id"], pa.string()),
                         "offers": pc.cast(table["offers"], pa.list_(pa.string())),
                         "propensities": pc.cast(table["propensities"], pa.list_(pa.float64())),
                         "explored": pc.fill_null(pc.cast(explored, pa.bool_()), False)})
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"--decisions {path}: decision_id must be text, offers a list of text, "
                        f"propensities a list of numbers, explored true/false ({exc})") from exc


def _bad(path: Path, table: pa.Table, row: int, message: str) -> DataError:
    return DataError(f"--decisions {path}: decision {table['decision_id'][row].as_py()!r} "
                     f"(row {row + 1}): {message}")


def read(directory: str) -> LoggedShows:
    keys, propensities, explored, decisions = [], [], [], 0
    for path in _files(Path(directory)):
        table = _read_file(path)
        decisions += table.num_rows
        ids = pc.fill_null(table["decision_id"], "")
        empty = np.flatnonzero(np.asarray(pc.equal(ids, "").to_numpy(zero_copy_only=False)))
        if len(empty):
            raise _bad(path, table, int(empty[0]), "no decision_id")
        shown = np.asarray(pc.fill_null(pc.list_value_length(table["offers"]), 0)
                           .to_numpy(zero_copy_only=False), dtype=np.int64)
        logged = np.asarray(pc.fill_null(pc.list_value_length(table["propensities"]), 0)
                            .to_numpy(zero_copy_only=False), dtype=np.int64)
        wrong = np.flatnonzero(shown != logged)
        if len(wrong):
            r = int(wrong[0])
            raise _bad(path, table, r, f"{logged[r]} propensities for {shown[r]} offers")
        p = np.asarray(pc.list_flatten(table["propensities"]).to_numpy(zero_copy_only=False),
                       dtype=np.float64)
        outside = np.flatnonzero(~((p > 0) & (p <= 1)))
        if len(outside):
            r = int(np.searchsorted(np.cumsum(shown), outside[0], side="right"))
            value = float(p[outside[0]])
            raise _bad(path, table, r, f"propensity {value!r} is not in (0, 1]")
        row = np.repeat(np.arange(table.num_rows), shown)
        offers = pc.fill_null(pc.list_flatten(table["offers"]), "")
        keys.append(pc.binary_join_element_wise(ids.take(pa.array(row)), offers, SEPARATOR))
        propensities.append(p)
        explored.append(np.asarray(table["explored"].to_numpy(zero_copy_only=False),
                                   dtype=bool)[row])
    return LoggedShows(pa.concat_arrays([k.combine_chunks() if isinstance(k, pa.ChunkedArray)
                                         else k for k in keys]),
                       np.concatenate(propensities), np.concatenate(explored), decisions)


def join(decision_ids: pa.Array, offer_ids: pa.Array, logged: LoggedShows) -> Joined:
    """Per interaction (its decision id, "" when none, and its offer id, both text)."""
    keys = pc.binary_join_element_wise(decision_ids, offer_ids, SEPARATOR)
    at = np.asarray(pc.fill_null(pc.index_in(keys, value_set=logged.keys), -1)
                    .to_numpy(zero_copy_only=False), dtype=np.int64)
    found = at >= 0
    propensity = np.full(len(at), np.nan)
    propensity[found] = logged.propensity[at[found]]
    explored = np.zeros(len(at), dtype=bool)
    explored[found] = logged.explored[at[found]]
    return Joined(propensity, explored)


def attach(data: Dataset, directory: str) -> dict[str, int]:
    """Joins the decision log to ``data``'s interactions (sets ``logged_propensity`` and
    ``explored``); returns the counts the run report shows."""
    if data.decision_id is None:
        raise DataError(f"--decisions {directory}: the interactions have no decision_id column "
                        "to join the decision log by (feedback events merged from the stream "
                        "carry one)")
    logged = read(directory)
    offer_ids = pa.array(data.offer_ids, type=pa.string()).take(pa.array(data.offer))
    joined = join(data.decision_id, offer_ids, logged)
    data.logged_propensity, data.explored = joined.propensity, joined.explored
    with_id = int(np.asarray(pc.not_equal(data.decision_id, "").to_numpy(
        zero_copy_only=False)).sum())
    return joined.report(logged, with_id)
