"""The exact one-customer ALS solve, and the record serving prefers.

implicit's ``recalculate_user`` solves ``(YtY + λI + Σ (|c|-1) y yᵀ) x = Σ_{c>0} c y`` with
``c = alpha * r`` over the customer's non-zero cells ``r`` (a negative cell means "not liked"
with confidence |c| and adds nothing to the right side). ``SegmentSolver.solve`` is that
equation on the customer's whole history: the confidence row they were trained on (carried by
record format 2) plus the confidences of their new events, so a fold-in is what a retrain would
give this customer with the item side held fixed, not a heuristic.

New events add their event weight (the training config's ``[events]``, stored in the version's
meta) to their cell, i.e. the ``sum`` rule; a first impression of an offer adds the
negative-impression weight when the segment was trained with it. The next training run applies
the configured rules (``duplicates``, recency) to the whole log again.

A segment served by the exposure model (training/exposure.py) is folded by its own exact solve,
``ExposureSolver``: the customer side of that model's last sweep, i.e. ridge least squares of
"accepted once shown" over every offer the customer was shown, with the published offer
factors and biases held fixed. Its records carry every shown cell (publish keeps them all for
such segments), and the accepted list says which of them were accepted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from recsvc.core import schema
from recsvc.core.meta import EVERY_SHOWN_CELL

POSITIVE = ("click", "accept", "redeem")
ACCEPTED = ("accept", "redeem")


def record_for(version: str, base_record: bytes | None,
               live_fields: Mapping[bytes, bytes]) -> bytes | None:
    """The record serving uses for ``version``: the fold-in's ``r:<version>`` from the live hash
    when there is one (it holds everything the base record held, plus the new events), else the
    version's own record (None: the model does not know the customer)."""
    folded = live_fields.get(schema.live_record_field(version).encode())
    return folded if folded is not None else base_record


@dataclass(frozen=True)
class SegmentSolver:
    """One segment's item side and ALS parameters, ready for per-customer solves."""

    offers: npt.NDArray[np.uint32]  # catalogue indices of the segment's offers
    local_of: npt.NDArray[np.int32]  # catalogue index -> row of ``items`` or -1
    items: npt.NDArray[np.float64]  # offers x factors
    yty: npt.NDArray[np.float64]  # items.T @ items, once per version
    regularization: float
    alpha: float
    negative_impression_weight: float | None  # None: the segment was trained without it

    @classmethod
    def build(cls, offers: npt.NDArray[np.uint32], items: npt.NDArray[np.float32],
              catalogue_size: int, regularization: float, alpha: float,
              negative_impression_weight: float | None) -> SegmentSolver:
        wide = np.asarray(items, dtype=np.float64)
        return cls(offers, _local_of(offers, catalogue_size), wide, wide.T @ wide,
                   regularization, alpha, negative_impression_weight)

    @property
    def factors(self) -> int:
        return int(self.items.shape[1])

    def solve(self, cell_offers: npt.NDArray[np.uint32],
              cell_confidence: npt.NDArray[np.float32],
              accepted: npt.NDArray[np.uint32] | None = None) -> npt.NDArray[np.float32]:
        """The customer's vector for their cells (catalogue indices and raw confidences); the
        confidences already say what was accepted, so ``accepted`` is not needed."""
        local = self.local_of[np.asarray(cell_offers, dtype=np.int64)]
        confidence = np.asarray(cell_confidence, dtype=np.float64)
        use = (local >= 0) & (confidence != 0)
        y = self.items[local[use]]
        c = self.alpha * confidence[use]
        a = self.yty + self.regularization * np.eye(self.factors)
        a += (y.T * (np.abs(c) - 1.0)) @ y
        b = y.T @ np.where(c > 0, c, 0.0)
        return np.linalg.solve(a, b).astype(np.float32)


@dataclass(frozen=True)
class ExposureSolver:
    """One exposure-model segment's offer side, ready for per-customer solves.

    The model (training/exposure.py) scores ``x_u . y_o + b_o`` and was fit by alternating
    ridge least squares on shown cells, target 1 when accepted; its last step solves every
    customer with the offers held fixed: ``(sum_o y_o y_o^T + reg I) x = sum_o (t_o - b_o) y_o``
    over the offers the customer was shown. The vector published, and returned here, is
    ``[x, 1]`` (the bias column rides in the offer factors)."""

    offers: npt.NDArray[np.uint32]  # catalogue indices of the segment's offers
    local_of: npt.NDArray[np.int32]  # catalogue index -> row of ``items`` or -1
    items: npt.NDArray[np.float64]  # offers x factors (without the bias column)
    bias: npt.NDArray[np.float64]  # per offer
    regularization: float
    negative_impression_weight: float | None  # how new cells' confidences are recorded

    @classmethod
    def build(cls, offers: npt.NDArray[np.uint32], published: npt.NDArray[np.float32],
              catalogue_size: int, regularization: float,
              negative_impression_weight: float | None) -> ExposureSolver:
        """``published``: the segment's offer factors as published, bias in the last column."""
        wide = np.asarray(published, dtype=np.float64)
        return cls(offers, _local_of(offers, catalogue_size), wide[:, :-1], wide[:, -1],
                   regularization, negative_impression_weight)

    def solve(self, cell_offers: npt.NDArray[np.uint32],
              cell_confidence: npt.NDArray[np.float32],
              accepted: npt.NDArray[np.uint32] | None = None) -> npt.NDArray[np.float32]:
        """The customer's vector: every cell is an offer shown (whatever its confidence),
        accepted when it is in ``accepted``."""
        cells = np.asarray(cell_offers, dtype=np.int64)
        local = self.local_of[cells]
        shown = local >= 0
        y = self.items[local[shown]]
        target = np.isin(cells[shown], np.asarray(
            accepted if accepted is not None else (), dtype=np.int64)).astype(np.float64)
        a = y.T @ y + self.regularization * np.eye(y.shape[1])
        x = np.linalg.solve(a, y.T @ (target - self.bias[local[shown]]))
        return np.append(x, 1.0).astype(np.float32)


def _local_of(offers: npt.NDArray[np.uint32], catalogue_size: int) -> npt.NDArray[np.int32]:
    """Catalogue index -> the segment's row of it, -1 for offers outside the segment."""
    local_of = np.full(catalogue_size, -1, dtype=np.int32)
    local_of[offers] = np.arange(len(offers), dtype=np.int32)
    return local_of


class CustomerSolver(Protocol):
    """A segment's exact one-customer solve: implicit's ALS or the exposure model."""

    @property
    def negative_impression_weight(self) -> float | None:
        """What a first impression adds to a new cell (None: nothing)."""

    def solve(self, cell_offers: npt.NDArray[np.uint32],
              cell_confidence: npt.NDArray[np.float32],
              accepted: npt.NDArray[np.uint32] | None = None) -> npt.NDArray[np.float32]: ...


@dataclass(frozen=True)
class NewEvent:
    """An interaction event, reduced to what the fold-in needs."""

    offer: int  # catalogue index
    event: str


def add_events(cell_offers: npt.NDArray[np.uint32], cell_confidence: npt.NDArray[np.float32],
               events: Sequence[NewEvent], weights: Mapping[str, float],
               negative_impression_weight: float | None
               ) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.float32]]:
    """The customer's cells after ``events``: each adds its event weight to its cell."""
    cells: dict[int, float] = dict(zip(np.asarray(cell_offers).tolist(),
                                       np.asarray(cell_confidence, dtype=np.float64).tolist(),
                                       strict=True))
    for e in events:
        weight = float(weights.get(e.event, 0.0))
        if e.offer not in cells:
            first_look = e.event == "impression" and negative_impression_weight is not None
            cells[e.offer] = weight + (negative_impression_weight  # type: ignore[operator]
                                       if first_look else 0.0)
        else:
            cells[e.offer] += weight
    offers = np.fromiter(cells.keys(), dtype=np.uint32, count=len(cells))
    values = np.fromiter(cells.values(), dtype=np.float32, count=len(cells))
    return offers, values


@dataclass(frozen=True)
class FoldModel:
    """Everything the fold-in needs of one published version (built once per version)."""

    version: str
    algorithm: str
    weights: dict[str, float]  # event -> confidence, from the training config
    segment_names: list[str]
    solvers: list[CustomerSolver | None]  # None: the segment has no model to fold into
    offer_index: dict[str, int]

    @classmethod
    def from_version(cls, version: str, meta: dict[str, Any], offer_ids: list[str],
                     segments: Sequence[tuple[npt.NDArray[np.uint32],
                                              npt.NDArray[np.float32] | None]]) -> FoldModel:
        """``segments``: per segment (in meta order) its catalogue indices and item factors."""
        parameters = meta.get("parameters") or {}
        config = parameters.get("config") or {}
        algorithm = str(parameters.get("algorithm", config.get("algorithm", "als")))
        weights = {k: float(v) for k, v in (config.get("events") or {}).items()}
        negative = float(config.get("negative_impression_weight", -1.0))
        solvers: list[CustomerSolver | None] = []
        for seg, (offers, items) in zip(meta["segments"], segments, strict=True):
            params = seg.get("params")
            if items is None or not params:
                solvers.append(None)
                continue
            negative_weight = negative if params.get("negative_impressions") else None
            if params.get("model", "implicit") == "exposure":
                # Versions published before their records held every shown cell are left
                # alone: solving on part of what a customer was shown would skew the vector.
                solvers.append(ExposureSolver.build(
                    offers, items, len(offer_ids), float(params["regularization"]),
                    negative_weight) if params.get(EVERY_SHOWN_CELL) else None)
            elif algorithm == "als":  # BPR has no closed-form one-customer solve
                solvers.append(SegmentSolver.build(
                    offers, items, len(offer_ids), float(params["regularization"]),
                    float(params["alpha"]), negative_weight))
            else:
                solvers.append(None)
        return cls(version, algorithm, weights, [s["name"] for s in meta["segments"]],
                   solvers, {o: i for i, o in enumerate(offer_ids)})
