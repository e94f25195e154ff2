"""The job's bulk record encoder writes exactly what ``schema.encode_customer_record`` writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsvc.core import schema
from training.config import TrainConfig
from training.fit import Factors, Params
from training.inputs import data as data_module
from training.job import customer_batches
from training.matrix import build_cells
from training.tune import SegmentResult


def _tiny_dataset(tmp: Path) -> data_module.Dataset:
    rng = np.random.default_rng(3)
    customers = ["customer_id,segment"] + [f"c{i},{'ab'[i % 2]}" for i in range(40)]
    offers = ["offer_id,segments"] + [f"o{j},{'*' if j < 6 else 'ab'[j % 2]}" for j in range(12)]
    events = ["impression", "click", "accept", "redeem", "decline"]
    rows = ["customer_id,offer_id,event,ts"]
    for n in range(400):
        rows.append(f"c{rng.integers(40)},o{rng.integers(12)},{events[rng.integers(5)]},"
                    f"{1_700_000_000 + n}")
    for name, lines in (("customers", customers), ("offers", offers), ("interactions", rows)):
        (tmp / f"{name}.csv").write_text("\n".join(lines) + "\n")
    return data_module.load(str(tmp / "customers.csv"), str(tmp / "offers.csv"),
                            str(tmp / "interactions.csv"), 100.0)


def test_bulk_records_equal_encode_customer_record_byte_for_byte(tmp_path: Path) -> None:
    data = _tiny_dataset(tmp_path)
    config = TrainConfig()
    cells = build_cells(data, config)
    rng = np.random.default_rng(5)
    results = []
    for s, (name, seg) in enumerate(zip(data.segment_names, cells, strict=True)):
        modelled = s == 0  # one modelled segment (with negatives), one served by popularity
        factors = Factors(rng.normal(size=(seg.shape[0], 3)).astype(np.float32),
                          rng.normal(size=(seg.shape[1], 3)).astype(np.float32))
        results.append(SegmentResult(
            name, seg.shape[0], seg.shape[1], seg.interactions,
            "personalized" if modelled else "popular", 1.0,
            Params(3, 0.1, 2.0, 5, True) if modelled else None,
            factors if modelled else None, seg.popularity()))
    attributes = rng.integers(0, 2**32, size=(len(data.customer_segment), 2), dtype=np.uint32)
    bulk = dict(pair for batch in customer_batches(data, cells, results, 7, -1.0,
                                                   attributes=attributes) for pair in batch)
    ids = data.customer_ids.to_pylist()
    checked_cells = 0
    for s, (seg, result) in enumerate(zip(cells, results, strict=True)):
        negative = -1.0 if result.params is not None else None
        values = seg.values(negative)
        for row, customer in enumerate(seg.customers.tolist()):
            mine = np.flatnonzero((seg.rows == row) & (values != 0))
            accepted = seg.offers[seg.cols[(seg.rows == row) & seg.accepted]]
            modelled = result.factors is not None and len(mine) > 0
            vector = result.factors.users[row] if modelled and result.factors else \
                np.empty(0, np.float32)
            expected = schema.encode_customer_record(
                s, vector, accepted.tolist(),
                cell_offers=seg.offers[seg.cols[mine]] if modelled else [],
                cell_confidence=values[mine] if modelled else [],
                attributes=attributes[customer])
            assert bulk[ids[customer]] == expected, ids[customer]
            checked_cells += len(mine) if modelled else 0
    assert len(bulk) == len(ids) and checked_cells > 20
