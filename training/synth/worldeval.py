"""Scoring rankings against the ground truth of ``recsvc datagen --world biased``.

precision@10 on the unbiased window: the share of a customer's 10 recommended offers that they
accepted in the counterfactual window where every eligible offer was shown (truth.parquet),
averaged over the evaluated customers; ``expected``: the mean true p of the 10 instead. The
competitors every evaluation reports are ranked here offline, excluding what each customer
accepted in the logged window (as serving does): segment popularity (what recsvc serves without
a model) and implicit ALS used directly (implicit's default settings, one model per segment on
recsvc's default confidence matrix).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq

from training.config import TrainConfig
from training.evaluate import K, segment_model, top10
from training.exposure import ExposureParams, fit_exposure
from training.fit import fit
from training.inputs import data as data_module
from training.matrix import Cells, build_cells
from training.tune import IMPLICIT_DEFAULTS


@dataclass(frozen=True)
class Truth:
    customer_ids: list[str]  # evaluated customers
    accepted: dict[str, set[str]]  # customer id -> offers accepted in the unbiased window
    p_true: dict[tuple[str, str], float]
    summary: dict[str, Any]

    @classmethod
    def load(cls, directory: Path) -> Truth:
        table = pq.read_table(directory / "truth.parquet")
        customers = table["customer_id"].to_pylist()
        offers = table["offer_id"].to_pylist()
        took = table["accepted"].to_pylist()
        p = table["p_true"].to_pylist()
        accepted: dict[str, set[str]] = {c: set() for c in dict.fromkeys(customers)}
        for c, o, t in zip(customers, offers, took, strict=True):
            if t:
                accepted[c].add(o)
        return cls(list(accepted), accepted, dict(zip(zip(customers, offers, strict=True), p,
                                                      strict=True)),
                   json.loads((directory / "truth.json").read_text()))

    def score(self, rankings: dict[str, list[str]]) -> dict[str, float]:
        """precision@10 and expected precision@10 of top-10 lists (missing customers: 0)."""
        hits = expected = 0.0
        for customer in self.customer_ids:
            top = rankings.get(customer, [])[:K]
            hits += sum(o in self.accepted[customer] for o in top)
            expected += sum(self.p_true.get((customer, o), 0.0) for o in top)
        n = max(1, len(self.customer_ids)) * K
        return {"precision_at_10": round(hits / n, 6), "expected_precision_at_10":
                round(expected / n, 6)}


def _tables(directory: Path) -> tuple[str, str, str]:
    ext = "parquet" if (directory / "interactions.parquet").exists() else "csv"
    return tuple(str(directory / f"{name}.{ext}")  # type: ignore[return-value]
                 for name in ("customers", "offers", "interactions"))


@dataclass(frozen=True)
class World:
    """A world's logged data as training sees it (every segment's cells), and which of its
    customers the truth evaluates."""

    cells: list[Cells]
    ids: list[str]  # customer ids by index
    offer_ids: list[str]
    wanted: npt.NDArray[np.bool_]  # by customer index: evaluated

    @classmethod
    def load(cls, directory: Path, customer_ids: list[str]) -> World:
        dataset = data_module.load(*_tables(directory), TrainConfig().weight_cap)
        ids = dataset.customer_ids.to_pylist()
        wanted = np.zeros(len(ids), dtype=bool)
        index = {c: i for i, c in enumerate(ids)}
        wanted[[index[c] for c in customer_ids if c in index]] = True
        return cls(build_cells(dataset, TrainConfig()), ids, dataset.offer_ids, wanted)

    def segments(self) -> Iterator[tuple[Cells, npt.NDArray[np.int64]]]:
        """Each segment with offers, and its evaluated customers' local rows (some)."""
        for cells in self.cells:
            rows = np.flatnonzero(self.wanted[cells.customers])
            if len(rows) and cells.shape[1]:
                yield cells, rows


def competitor_rankings(directory: Path, customer_ids: list[str], seed: int = 42
                        ) -> dict[str, dict[str, list[str]]]:
    """Top 10 of segment popularity and of implicit ALS used directly, per customer id."""
    world = World.load(directory, customer_ids)
    ids, offer_ids = world.ids, world.offer_ids
    result: dict[str, dict[str, list[str]]] = {"segment_popularity": {}, "implicit_default": {}}
    for segment_cells, rows in world.segments():
        popular = segment_model("popular", None, segment_cells.popularity(), 0.0)
        _rank_into(result["segment_popularity"], segment_cells, rows, popular, None, ids,
                   offer_ids)
        if len(segment_cells.rows):
            direct, _ = fit(segment_cells.matrix(None), "als", IMPLICIT_DEFAULTS, seed, 0.05,
                            "competitor")
            model = segment_model("personalized", direct.items, segment_cells.popularity(), 1.0)
            # As recsvc serves them: customers the fit saw no cell of get segment popularity.
            seen = segment_cells.trained_rows(None)[rows]
            _rank_into(result["implicit_default"], segment_cells, rows[seen], model,
                       direct.users, ids, offer_ids)
            _rank_into(result["implicit_default"], segment_cells, rows[~seen], popular, None,
                       ids, offer_ids)
    return result


def exposure_rankings(world: World, params: ExposureParams, seed: int = 42
                      ) -> dict[str, list[str]]:
    """Top 10 of the exposure model fit with ``params`` on every shown cell of each segment
    (no validation, no calibration: the model alone), per evaluated customer id."""
    out: dict[str, list[str]] = {}
    for cells, rows in world.segments():
        factors = fit_exposure(cells.rows, cells.cols, cells.accepted, cells.shape, params, seed)
        model = segment_model("personalized", factors.items, cells.popularity(), 1.0)
        _rank_into(out, cells, rows, model, factors.users, world.ids, world.offer_ids)
    return out


def _rank_into(out: dict[str, list[str]], cells: Cells, rows: npt.NDArray[np.int64],
               model: Any, users: npt.NDArray[np.float32] | None, ids: list[str],
               offer_ids: list[str]) -> None:
    if not len(rows):
        return
    position = np.full(cells.shape[0], -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    at = position[cells.rows]
    taken = (at >= 0) & cells.accepted
    top = top10(model, None if users is None else users[rows], len(rows), at[taken],
                cells.cols[taken].astype(np.int64))
    for r, local in enumerate(rows.tolist()):
        out[ids[cells.customers[local]]] = [offer_ids[cells.offers[c]] for c in top[r] if c >= 0]
