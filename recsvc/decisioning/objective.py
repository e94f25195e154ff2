"""The arbitration objective: p_accept from the served score, then what an offer is worth.

Objectives (``[decisioning] objective`` of the training config, or ``RECSVC_OBJECTIVE``):

- ``relevance`` (the default): ``p_accept``. The ranking is the model's (p_accept is monotone in
  the served score), which is what the quality gate validated; right when value and cost are
  not filled in, and the only sound choice while p_accept is an uncalibrated prior.
- ``expected_value``: ``p_accept x value - cost``, the expected net value of making the offer.
- ``retention``: ``p_accept x churn_risk x clv - cost``: the customer value an accepted offer is
  expected to save; a customer at low risk gets the cheap offers first.

Levers (per offer: the ``lever`` column or ``recsvc offers set --lever``; per segment:
``[decisioning.segment_levers]``) multiply: a lever > 1 always promotes, so a negative objective
is divided by it instead. Levers must be > 0.

p_accept: a segment's published ``calibration`` (``recsvc/core/calibration.py``: a monotone
piecewise-linear map from the served score, fitted on held-out data by the training job) when the
version has one and the answer is ranked by the score it was fitted on; otherwise a
documented prior, ``logit(p) = logit(base rate) + z`` with z the score standardized over the
segment's offers and the base rate the segment's share of accepted cells in training. New offers
(added live, no training data) get the segment's base rate: an average offer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from recsvc.core import calibration

RELEVANCE, EXPECTED_VALUE, RETENTION = "relevance", "expected_value", "retention"
OBJECTIVES = (RELEVANCE, EXPECTED_VALUE, RETENTION)
DEFAULT_BASE_RATE = 0.05  # a version without a measured base rate (published before issue 9)
_EPS = 1e-6

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Calibration:
    """A segment's published score -> p_accept map (``recsvc.core.calibration``), with its knots
    converted once: ``apply`` is ``recsvc.core.calibration.p_accept`` without the per-call
    conversion of the knot lists."""

    method: str
    score: F64
    p_accept: F64

    @classmethod
    def from_meta(cls, raw: Mapping[str, Any] | None, segment: str = "") -> Calibration | None:
        """None when the version has none; ValueError (naming the segment) when malformed."""
        if not raw:
            return None
        checked = calibration.validate(dict(raw), segment)
        return cls(str(checked["method"]), np.asarray(checked["score"], dtype=np.float64),
                   np.asarray(checked["p_accept"], dtype=np.float64))

    def apply(self, scores: npt.NDArray[np.floating[Any]]) -> F64:
        result: F64 = np.clip(np.interp(scores, self.score, self.p_accept), 0.0, 1.0)
        return result


def logit(p: float) -> float:
    p = min(max(p, _EPS), 1 - _EPS)
    return float(np.log(p / (1 - p)))


def prior_p_accept(scores: npt.NDArray[np.floating[Any]], base_rate: float) -> F64:
    """``sigmoid(logit(base_rate) + z)``, z the scores standardized over the row."""
    row = np.asarray(scores, dtype=np.float64)
    n = len(row)
    if not n:
        return row
    mean = row.sum() / n
    variance = float(np.dot(row, row)) / n - mean * mean
    z = (row - mean) / np.sqrt(variance) if variance > 1e-18 else row * 0.0
    result: F64 = 1.0 / (1.0 + np.exp(-(z + logit(base_rate))))
    return result


def prior_of(scores: npt.NDArray[np.floating[Any]], chosen: npt.NDArray[np.intp],
             logit_base: float) -> list[float]:
    """``prior_p_accept(scores, base rate)[chosen]`` (``logit_base`` = logit(base rate)),
    computing the sigmoid for ``chosen`` only."""
    n = len(scores)
    if not n or not len(chosen):
        return []
    row = scores.astype(np.float64)
    mean = float(row.sum()) / n
    variance = float(np.dot(row, row)) / n - mean * mean
    shift = logit_base
    if variance <= 1e-18:
        return [1.0 / (1.0 + math.exp(-shift))] * len(chosen)
    scale = 1.0 / math.sqrt(variance)
    return [1.0 / (1.0 + math.exp(-((s - mean) * scale + shift)))
            for s in scores[chosen].tolist()]


def apply_levers(objective: F64, levers: F64) -> F64:
    """A lever > 1 promotes whatever the sign: multiply a gain, divide a loss."""
    result: F64 = np.where(objective >= 0, objective * levers, objective / levers)
    return result


def evaluate(kind: str, p_accept: F64, value: F64, cost: F64, levers: F64 | None,
             churn_risk: float | F64, clv: float | F64) -> F64:
    """The objective per offer (arrays aligned with ``p_accept``; a campaign passes n x
    offers p_accept with churn_risk and clv as n x 1 columns)."""
    if kind == RELEVANCE:
        raw = p_accept
    elif kind == EXPECTED_VALUE:
        raw = p_accept * value - cost
    elif kind == RETENTION:
        raw = p_accept * (churn_risk * clv) - cost
    else:
        raise ValueError(f"unknown objective {kind!r}; one of {OBJECTIVES}")
    return raw if levers is None else apply_levers(raw, levers)
