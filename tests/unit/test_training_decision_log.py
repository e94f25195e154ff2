"""The exported decision log as a training input: read, validated, joined to interactions, and
carried into the cells' propensities (training/inputs/decisions.py, training/matrix.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsvc.core.errors import DataError
from recsvc.experiments.decision_log import Decision
from recsvc.experiments.parquet_log import table_of
from training.config import TrainConfig
from training.inputs import data as data_module
from training.inputs import decisions
from training.matrix import build_cells
from training.tune import exposure_weights


def _decision(decision_id: str, offers: tuple[str, ...], propensities: list[float],
              explored: bool = False) -> Decision:
    zeros = np.zeros(len(offers), np.float32)
    return Decision(decision_id, 1_790_000_000.0, "c1", "s", "v1", "treatment", "personalized",
                    "email", offers, zeros, np.asarray(propensities, np.float32), zeros, zeros,
                    zeros, explored=explored)


def _export(directory: Path, *entries: Decision) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(table_of([(0, f"{i}-0", d) for i, d in enumerate(entries)]),
                   directory / "part.parquet")
    return directory


def test_read_and_join_place_each_interaction_by_decision_and_offer(tmp_path: Path) -> None:
    logged = decisions.read(str(_export(
        tmp_path / "log", _decision("d1", ("o1", "o2"), [0.9, 0.05]),
        _decision("d2", ("o3",), [0.25], explored=True))))
    assert logged.decisions == 2 and logged.propensity.tolist() == pytest.approx(
        [0.9, 0.05, 0.25])
    joined = decisions.join(pa.array(["d1", "d1", "d2", "", "d9", "d2"]),
                            pa.array(["o2", "o1", "o3", "o1", "o1", "o1"]), logged)
    assert joined.propensity[:3].tolist() == pytest.approx([0.05, 0.9, 0.25])
    assert np.isnan(joined.propensity[3:]).all()  # no id, unknown decision, offer not shown
    assert joined.explored.tolist() == [False, False, True, False, False, False]


def test_an_export_without_the_explored_column_reads_as_not_explored(tmp_path: Path) -> None:
    table = table_of([(0, "1-0", _decision("d1", ("o1",), [0.5], explored=True))])
    (tmp_path / "old").mkdir()
    pq.write_table(table.drop(["explored"]), tmp_path / "old" / "a.parquet")
    assert decisions.read(str(tmp_path / "old")).explored.tolist() == [False]


def test_explored_round_trips_through_the_stream_fields() -> None:
    entry = _decision("d1", ("o1",), [0.2], explored=True)
    raw = {k.encode() if isinstance(k, str) else k: v.encode() if isinstance(v, str) else v
           for k, v in zip(entry.fields()[::2], entry.fields()[1::2], strict=True)}
    assert Decision.from_fields(raw).explored
    raw.pop(b"x")  # an entry logged before the field existed
    assert not Decision.from_fields(raw).explored


@pytest.mark.parametrize(("entries", "message"), [
    ((_decision("d1", ("o1", "o2"), [0.5]),), "decision 'd1' (row 1): 1 propensities for 2"),
    ((_decision("d1", ("o1",), [0.5]), _decision("d2", ("o1", "o2"), [0.5, 0.0])),
     "decision 'd2' (row 2): propensity 0.0 is not in (0, 1]"),
    ((_decision("d1", ("o1",), [1.5]),), "propensity 1.5 is not in (0, 1]"),
    ((_decision("", ("o1",), [0.5]),), "decision '' (row 1): no decision_id"),
])
def test_bad_decisions_are_refused_naming_the_file_and_the_decision(
        tmp_path: Path, entries: tuple[Decision, ...], message: str) -> None:
    directory = _export(tmp_path / "log", *entries)
    with pytest.raises(DataError, match=r"part\.parquet") as caught:
        decisions.read(str(directory))
    assert message in str(caught.value)


def test_a_directory_that_is_not_an_export_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such directory"):
        decisions.read(str(tmp_path / "missing"))
    (tmp_path / "file.parquet").write_bytes(b"x")
    with pytest.raises(DataError, match="not a directory"):
        decisions.read(str(tmp_path / "file.parquet"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no exported decisions"):
        decisions.read(str(tmp_path / "empty"))
    (tmp_path / "other").mkdir()
    pq.write_table(pa.table({"decision_id": ["d1"]}), tmp_path / "other" / "x.parquet")
    with pytest.raises(DataError, match=r"missing column.*offers, propensities"):
        decisions.read(str(tmp_path / "other"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        decisions.read(str(tmp_path / "broken"))


def _tables(tmp_path: Path, with_decision_id: bool = True) -> tuple[str, str, str]:
    customers = tmp_path / "customers.csv"
    customers.write_text("customer_id,segment\nc1,s\nc2,s\nc3,s\n")
    offers = tmp_path / "offers.csv"
    offers.write_text("offer_id,segments\no1,*\no2,*\n")
    rows = [("c1", "o1", "impression", 1, "d1"), ("c1", "o1", "accept", 2, "d1"),
            ("c1", "o1", "impression", 3, "d3"), ("c2", "o2", "impression", 1, "d2"),
            ("c3", "o1", "impression", 1, "")]
    interactions = tmp_path / "interactions.csv"
    header = "customer_id,offer_id,event,ts" + (",decision_id" if with_decision_id else "")
    interactions.write_text(header + "\n" + "".join(
        ",".join(map(str, r if with_decision_id else r[:4])) + "\n" for r in rows))
    return str(customers), str(offers), str(interactions)


def test_cells_take_the_largest_logged_propensity_and_weigh_by_it(tmp_path: Path) -> None:
    """c1/o1 was shown by d1 (p 0.1) and d3 (p 0.4): weight 1 / 0.4. c2/o2 explored (p 0.5):
    weight 2. c3/o1 is not in the log: o1's estimated weight, 3 customers / 2 shown."""
    log = _export(tmp_path / "log", _decision("d1", ("o1",), [0.1]),
                  _decision("d3", ("o1", "o2"), [0.4, 0.4]),
                  _decision("d2", ("o2",), [0.5], explored=True))
    data = data_module.load(*_tables(tmp_path), weight_cap=100.0, decision_ids=True)
    counts = decisions.attach(data, str(log))
    assert counts == {"decisions_read": 3, "offers_shown": 4, "interactions_with_decision_id": 4,
                      "interactions_joined": 4, "interactions_explored": 1}
    [cells] = build_cells(data, TrainConfig())
    assert cells.logged_propensity is not None and cells.explored is not None
    by_cell = {(int(r), int(c)): (p, bool(x), w) for r, c, p, x, w in zip(
        cells.rows, cells.cols, cells.logged_propensity, cells.explored,
        exposure_weights(cells, max_weight=20.0), strict=True)}
    assert by_cell[(0, 0)][:2] == (pytest.approx(0.4), False)
    assert by_cell[(0, 0)][2] == pytest.approx(2.5)
    assert by_cell[(1, 1)][1:] == (True, pytest.approx(2.0))
    assert np.isnan(by_cell[(2, 0)][0]) and by_cell[(2, 0)][2] == pytest.approx(1.5)


def test_decisions_without_a_decision_id_column_are_refused(tmp_path: Path) -> None:
    log = _export(tmp_path / "log", _decision("d1", ("o1",), [0.1]))
    data = data_module.load(*_tables(tmp_path, with_decision_id=False), weight_cap=100.0,
                            decision_ids=True)
    assert data_module.load(*_tables(tmp_path), weight_cap=100.0).decision_id is None
    assert data.decision_id is None
    with pytest.raises(DataError, match="no decision_id column"):
        decisions.attach(data, str(log))
