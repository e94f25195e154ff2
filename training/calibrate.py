"""Fitting the score -> p_accept map of recsvc.core.calibration on held-out shown offers.

Isotonic regression (pool adjacent violators) over equal-count score bins: each bin gives a knot
(mean score, acceptance rate) and PAV makes the rates non-decreasing; knots that PAV pooled
collapse to one. Half the cells fit the map that is measured on the other half (the reported
reliability table and expected calibration error are out of sample); the published map is then
fit on all of them. Too few cells, or no accept at all: a constant map at the base rate.
Rates are smoothed, (accepts + 1) / (shown + 2), so no map claims a certain 0 or 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from recsvc.core.calibration import constant, p_accept
from training.matrix import Cells

MIN_CELLS = 200  # fewer held-out shown offers: the constant base-rate map
BINS = 20  # knots before pooling
TABLE_BINS = 10  # rows of the reliability table


def _pav(values: npt.NDArray[np.float64], weights: npt.NDArray[np.float64]
         ) -> npt.NDArray[np.float64]:
    """Weighted isotonic (non-decreasing) fit of ``values`` in the given order."""
    level: list[float] = []
    weight: list[float] = []
    size: list[int] = []
    for v, w in zip(values.tolist(), weights.tolist(), strict=True):
        level.append(v)
        weight.append(w)
        size.append(1)
        while len(level) > 1 and level[-2] > level[-1]:
            total = weight[-2] + weight[-1]
            merged = (level[-2] * weight[-2] + level[-1] * weight[-1]) / total
            level[-2:] = [merged]
            weight[-2:] = [total]
            size[-2:] = [size[-2] + size[-1]]
    return np.repeat(np.array(level), size)


def smoothed_rate(accepts: int, shown: int) -> float:
    """(accepts + 1) / (shown + 2): never a certain 0 or 1 from finite data (data with accepts
    and no impressions would otherwise say every shown offer is accepted)."""
    return (accepts + 1) / (shown + 2)


def fit_map(scores: npt.NDArray[np.float64], accepted: npt.NDArray[np.bool_],
            bins: int = BINS) -> dict[str, Any]:
    """The monotone piecewise-linear map from score to acceptance rate of these shown cells."""
    finite = np.isfinite(scores)
    scores, accepted = scores[finite], accepted[finite]
    if len(scores) < MIN_CELLS or not accepted.any():
        return constant(smoothed_rate(int(accepted.sum()), len(accepted)))
    order = np.argsort(scores, kind="stable")
    chunks = np.array_split(order, min(bins, len(order)))
    x = np.array([scores[c].mean() for c in chunks])
    y = np.array([smoothed_rate(int(accepted[c].sum()), len(c)) for c in chunks])
    y = _pav(y, np.array([len(c) for c in chunks], dtype=np.float64))
    # Pooled runs share a rate: keep the run's ends so the map stays flat across the run.
    keep = np.ones(len(x), dtype=bool)
    keep[1:-1] = ~((y[1:-1] == y[:-2]) & (y[1:-1] == y[2:]))
    x, y = x[keep], y[keep]
    unique = np.r_[True, np.diff(x) > 0]
    x, y = x[unique], y[unique]
    if len(x) < 2:  # every score equal: nothing to map but the rate
        return constant(float(y[0]), "isotonic")
    return {"method": "isotonic", "score": [round(float(v), 6) for v in x],
            "p_accept": [round(float(v), 6) for v in np.clip(y, 0.0, 1.0)]}


def reliability(scores: npt.NDArray[np.float64], accepted: npt.NDArray[np.bool_],
                calibration: dict[str, Any], bins: int = TABLE_BINS) -> dict[str, Any]:
    """Reliability table and expected calibration error: bins of about equal count by predicted
    p, cut at its quantiles (equal predictions always share a bin)."""
    predicted = p_accept(scores, calibration)
    if not len(predicted):
        return {"cells": 0, "ece": None, "table": []}
    edges = np.unique(np.quantile(predicted, np.linspace(0, 1, bins + 1)[1:-1]))
    which = np.searchsorted(edges, predicted, side="right")
    table = []
    ece = 0.0
    for b in np.unique(which):
        chunk = which == b
        count = int(chunk.sum())
        mean_p, rate = float(predicted[chunk].mean()), float(accepted[chunk].mean())
        ece += count * abs(mean_p - rate)
        table.append({"cells": count, "predicted": round(mean_p, 4),
                      "observed": round(rate, 4)})
    return {"cells": len(predicted), "ece": round(ece / len(predicted), 5), "table": table}


def calibrate(scores: npt.NDArray[np.float64], accepted: npt.NDArray[np.bool_],
              seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(published map fit on all cells, out-of-sample reliability of a map fit on half)."""
    halves = np.random.default_rng(seed).random(len(scores)) < 0.5
    half_map = fit_map(scores[halves], accepted[halves])
    measured = reliability(scores[~halves], accepted[~halves], half_map)
    return fit_map(scores, accepted), measured


def reliability_lines(name: str, measured: dict[str, Any] | None) -> list[str]:
    """The report's lines for one segment's calibration."""
    if not measured or not measured.get("cells"):
        return [f"  calibration {name}: no held-out shown offers (constant base-rate map)"]
    rows = " ".join(f"{r['predicted']:.3f}/{r['observed']:.3f}" for r in measured["table"])
    return [f"  calibration {name}: ECE {measured['ece']:.4f} on {measured['cells']:,} held-out "
            f"shown offers; predicted/observed by decile: {rows}"]


def base_rate(cells: list[Cells]) -> float:
    """Accepted over shown cells across every segment, smoothed (1/2 with no cell at all)."""
    return smoothed_rate(sum(int(c.accepted.sum()) for c in cells),
                         sum(len(c.rows) for c in cells))


def global_calibration(cells: list[Cells], offer_index: npt.NDArray[np.int64],
                       offer_popularity: npt.NDArray[np.float32], seed: int
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The map of global popularity (unknown customers): every shown cell of an offer open to
    every segment, scored with the published global popularity."""
    position = np.full(max([int(offer_index.max()) + 1 if len(offer_index) else 0]
                           + [int(c.offers.max()) + 1 for c in cells if len(c.offers)]),
                       -1, dtype=np.int64)
    position[offer_index] = np.arange(len(offer_index))
    scores, accepted = [], []
    for segment_cells in cells:
        at = position[segment_cells.offers[segment_cells.cols]] if len(position) else \
            np.empty(0, dtype=np.int64)
        open_cells = at >= 0
        scores.append(offer_popularity[at[open_cells]].astype(np.float64))
        accepted.append(segment_cells.accepted[open_cells])
    all_scores = np.concatenate(scores) if scores else np.empty(0)
    all_accepted = np.concatenate(accepted) if accepted else np.empty(0, dtype=bool)
    if not len(all_scores):
        return constant(base_rate(cells)), reliability(all_scores, all_accepted,
                                                        constant(base_rate(cells)))
    return calibrate(all_scores, all_accepted, seed)
