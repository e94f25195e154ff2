"""Calibrated acceptance: the served score of an offer -> p_accept, the probability that the
customer accepts it if shown.

The meeting point between training (writes it) and serving (reads it), one dict per segment in
the version metadata (``segments[i]["calibration"]``) and one for global popularity
(``meta["global_calibration"]``)::

    {"method": "isotonic", "score": [x0, x1, ...], "p_accept": [y0, y1, ...]}

a monotone piecewise-linear map: ``score`` strictly increasing, ``p_accept`` non-decreasing in
[0, 1], at least two knots (a constant, e.g. a segment's base acceptance rate, is two knots with
the same p). Between knots the map is linear; outside them it is flat. Pure: numpy only.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import numpy.typing as npt

KEYS = ("method", "score", "p_accept")


def validate(calibration: Any, segment: str) -> dict[str, Any]:
    """``calibration`` if it is a well-formed map; else ValueError naming ``segment``."""
    where = f"segment {segment!r}: calibration"
    if not isinstance(calibration, dict):
        raise ValueError(f"{where} must be an object with {', '.join(KEYS)}")
    missing = [k for k in KEYS if k not in calibration]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)}")
    if not isinstance(calibration["method"], str) or not calibration["method"]:
        raise ValueError(f"{where}: method must be a non-empty string")
    score, p = calibration["score"], calibration["p_accept"]
    if not isinstance(score, list) or not isinstance(p, list):
        raise ValueError(f"{where}: score and p_accept must be lists")
    if len(score) < 2 or len(score) != len(p):
        raise ValueError(f"{where}: score and p_accept need the same number (>= 2) of knots, "
                         f"got {len(score)} and {len(p)}")
    for name, values in (("score", score), ("p_accept", p)):
        for i, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value):
                raise ValueError(f"{where}: {name}[{i}] = {value!r} is not a finite number")
    if any(b <= a for a, b in itertools.pairwise(score)):
        raise ValueError(f"{where}: score must be strictly increasing")
    if any(b < a for a, b in itertools.pairwise(p)):
        raise ValueError(f"{where}: p_accept must be non-decreasing")
    if p[0] < 0 or p[-1] > 1:
        raise ValueError(f"{where}: p_accept must lie in [0, 1]")
    return calibration


def p_accept(scores: npt.ArrayLike, calibration: dict[str, Any]) -> npt.NDArray[np.float64]:
    """The calibrated probability of acceptance of each served score (any shape)."""
    values = np.asarray(scores, dtype=np.float64)
    mapped = np.interp(values, np.asarray(calibration["score"], dtype=np.float64),
                       np.asarray(calibration["p_accept"], dtype=np.float64))
    result: npt.NDArray[np.float64] = np.clip(mapped, 0.0, 1.0)
    return result


def constant(rate: float, method: str = "base_rate") -> dict[str, Any]:
    """A map that gives every score the same probability (a segment without usable data)."""
    p = float(min(1.0, max(0.0, rate)))
    return {"method": method, "score": [0.0, 1.0], "p_accept": [p, p]}
