"""Reading and validation: every bad-row kind is counted and located exactly."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsvc.core.errors import DataError
from training.inputs import data

CUSTOMERS = """customer_id,segment,clv,churn_risk,extra
c1,gold,10,0.5,x
c2,gold,,,
c1,gold,1,0.1,
,gold,1,0.1,
c3,,1,0.1,
c4,silver,-5,0.1,
c5,silver,1,1.5,
c6,silver,abc,0.1,
c7,silver,1,0.2,
c8,silver,NaN,inf,
"""
OFFERS = """offer_id,segments,title,cost,value,channels,valid_from,valid_to
o1,*,One,1,2,email|app,,
o2,gold,Two,,,,,
o1,*,Dup,,,,,
,*,NoId,,,,,
o3,,NoSeg,,,,,
o4,*,BadCost,-1,,,,
o5,*,BadValue,,x,,,
o6,*,BadFrom,,,,yesterday,
o7,*,BadTo,,,,,2026-13-01
o8,*,Window,,,,2026-02-01,2026-01-01
o9,silver|gold,Ok,,,,2026-01-01T00:00:00Z,2027-01-01T00:00:00+01:00
"""
INTERACTIONS = """customer_id,offer_id,event,ts,weight
c1,o1,click,1700000000,
c1,o1,accept,2026-01-01T10:00:00Z,
c2,o2,accept,2026-01-01 10:00:00,2.5
zz,o1,click,1700000000,
c1,zz,click,1700000000,
c1,o1,purchase,1700000000,
c1,o1,click,not-a-time,
c1,o1,click,1700000000,inf
c1,o1,click,1700000000,1000
c1,o1,click,1700000000,abc
c7,o2,click,1700000000,
c7,o9,redeem,1700000000,
"""


def write(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


@pytest.fixture
def dataset(tmp_path: Path) -> data.Dataset:
    return data.load(write(tmp_path, "customers.csv", CUSTOMERS),
                     write(tmp_path, "offers.csv", OFFERS),
                     write(tmp_path, "interactions.csv", INTERACTIONS), weight_cap=100)


def rows_of(ds: data.Dataset, kind: str) -> list[int]:
    return [row for e in ds.bad.as_list() if e["kind"] == kind for row in e["rows"]]


def test_each_customer_bad_row_kind_is_reported_with_its_row_number(dataset: data.Dataset
                                                                    ) -> None:
    assert rows_of(dataset, "duplicate_customer_id") == [3]
    assert rows_of(dataset, "missing_customer_id") == [4]
    assert rows_of(dataset, "missing_segment") == [5]
    assert dataset.customer_ids.to_pylist() == ["c1", "c2", "c4", "c5", "c6", "c7", "c8"]


def test_an_invalid_optional_value_is_read_as_missing_and_counted_and_the_customer_stays(
        dataset: data.Dataset) -> None:
    """clv -5, "abc" and the literal NaN; churn_risk 1.5 and inf: counted per column, all kept."""
    by_kind = {e["kind"]: e for e in dataset.invalid_values.as_list()}
    assert by_kind["bad_clv"]["rows"] == [6, 8, 10] and by_kind["bad_clv"]["count"] == 3
    assert by_kind["bad_clv"]["lines"] == [7, 9, 11]
    assert by_kind["bad_churn_risk"]["rows"] == [7, 10]
    assert "bad_clv" not in {e["kind"] for e in dataset.bad.as_list()}
    # c4 (clv -5) keeps its segment and is a customer like any other
    ids = dataset.customer_ids.to_pylist()
    assert dataset.segment_names[dataset.customer_segment[ids.index("c4")]] == "silver"


def test_each_offer_bad_row_kind_is_reported_with_its_row_number(dataset: data.Dataset) -> None:
    assert rows_of(dataset, "duplicate_offer_id") == [3]
    assert rows_of(dataset, "missing_offer_id") == [4]
    assert rows_of(dataset, "missing_segments") == [5]
    assert rows_of(dataset, "bad_cost") == [6]
    assert rows_of(dataset, "bad_value") == [7]
    assert rows_of(dataset, "bad_valid_from") == [8]
    assert rows_of(dataset, "bad_valid_to") == [9]
    assert rows_of(dataset, "empty_validity_window") == [10]
    assert dataset.offer_ids == ["o1", "o2", "o9"]
    o9 = dataset.offers[2]
    assert o9["valid_from"] == 1767225600.0 and o9["valid_to"] == 1798758000.0


def test_each_interaction_bad_row_kind_is_reported_and_unknown_ids_never_become_entities(
        dataset: data.Dataset) -> None:
    assert rows_of(dataset, "unknown_customer") == [4]
    assert rows_of(dataset, "unknown_offer") == [5]
    assert rows_of(dataset, "unknown_event") == [6]
    assert rows_of(dataset, "bad_ts") == [7]
    assert rows_of(dataset, "bad_weight") == [8, 9, 10]
    assert dataset.bad.total == 3 + 8 + 7
    # c7 is silver; o2 is gold-only: ignored, not a new entity, and counted.
    assert dataset.ineligible == 1
    assert len(dataset.customer) == 4


def test_timestamps_accept_iso_8601_with_and_without_zone_and_unix_seconds(
        dataset: data.Dataset) -> None:
    assert dataset.ts.tolist() == [1700000000.0, 1767261600.0, 1767261600.0, 1700000000.0]
    assert np.isnan(dataset.weight[0]) and dataset.weight[2] == 2.5


def test_gzip_and_parquet_read_the_same_as_csv(tmp_path: Path, dataset: data.Dataset) -> None:
    gz = tmp_path / "interactions.csv.gz"
    with gzip.open(gz, "wt") as handle:
        handle.write(INTERACTIONS)
    table = pa.table({"customer_id": ["c1", "c2"], "offer_id": ["o1", "o2"],
                      "event": ["click", "accept"],
                      "ts": pa.array([1_700_000_000_000_000, 1_700_000_000_000_000],
                                     pa.timestamp("us"))})
    pq.write_table(table, tmp_path / "i.parquet")
    customers = write(tmp_path, "customers.csv", CUSTOMERS)
    offers = write(tmp_path, "offers.csv", OFFERS)
    from_gz = data.load(customers, offers, str(gz), 100)
    assert from_gz.ts.tolist() == dataset.ts.tolist()
    from_parquet = data.load(customers, offers, str(tmp_path / "i.parquet"), 100)
    assert from_parquet.ts.tolist() == [1_700_000_000.0] * 2


def test_a_missing_column_or_file_is_a_clear_error(tmp_path: Path) -> None:
    offers = write(tmp_path, "offers.csv", OFFERS)
    interactions = write(tmp_path, "i.csv", INTERACTIONS)
    with pytest.raises(DataError, match="missing required column"):
        data.load(write(tmp_path, "c.csv", "customer_id\nc1\n"), offers, interactions, 100)
    with pytest.raises(DataError, match="no such file"):
        data.load(str(tmp_path / "nope.csv"), offers, interactions, 100)
    with pytest.raises(DataError, match="unknown format"):
        data.load(write(tmp_path, "c.json", "{}"), offers, interactions, 100)


def test_a_malformed_csv_line_is_a_bad_row_with_its_line_number_and_later_rows_keep_theirs(
        tmp_path: Path) -> None:
    interactions = INTERACTIONS.replace("zz,o1,click,1700000000,\n",
                                        "zz,o1,click,1700000000,\nc1,o1\n", 1)
    ds = data.load(write(tmp_path, "customers.csv", CUSTOMERS),
                   write(tmp_path, "offers.csv", OFFERS),
                   write(tmp_path, "interactions.csv", interactions), weight_cap=100)
    (entry,) = [e for e in ds.bad.as_list() if e["kind"] == "malformed_line"]
    assert entry["lines"] == [6] and entry["rows"] == [5] and entry["seen"] == ["c1,o1"]
    assert rows_of(ds, "unknown_offer") == [6]  # was row 5 before the inserted line
    assert rows_of(ds, "bad_weight") == [9, 10, 11]
    assert ds.rows_read["interactions"] == 13
    assert len(ds.customer) == 4


def test_an_unknown_event_is_reported_with_the_values_seen(tmp_path: Path) -> None:
    interactions = INTERACTIONS + "c1,o1,Click,1700000000,\nc2,o2,Click,1700000000,\n"
    ds = data.load(write(tmp_path, "customers.csv", CUSTOMERS),
                   write(tmp_path, "offers.csv", OFFERS),
                   write(tmp_path, "interactions.csv", interactions), weight_cap=100)
    (entry,) = [e for e in ds.bad.as_list() if e["kind"] == "unknown_event"]
    assert entry["seen"] == {"Click": 2, "purchase": 1}
    assert entry["rows"] == [6, 13, 14]


def test_millisecond_microsecond_and_nanosecond_timestamps_are_converted_to_seconds(
        tmp_path: Path) -> None:
    rows = ["c1,o1,click,1700000000", "c1,o1,click,1700000000123", "c1,o1,click,1700000000123456",
            "c1,o1,click,1700000000123456789", "c1,o1,click,2026-01-01T00:00:00Z"]
    ds = data.load(write(tmp_path, "customers.csv", CUSTOMERS),
                   write(tmp_path, "offers.csv", OFFERS),
                   write(tmp_path, "i.csv", "customer_id,offer_id,event,ts\n"
                         + "\n".join(rows) + "\n"), weight_cap=100)
    assert ds.ts.round(3).tolist() == [1700000000.0, 1700000000.123, 1700000000.123,
                                       1700000000.123, 1767225600.0]
    assert ds.ts_converted == {"milliseconds": 1, "microseconds": 1, "nanoseconds": 1}
