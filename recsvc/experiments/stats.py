"""The statistics of the scorecard: rates, uplift of treatment over control with 95% confidence
intervals, NPS, and off-policy estimates (IPS, self-normalised IPS) of a candidate policy.

Methods (normal approximations; fine at the sample sizes a retention programme has, stated in
every report):
- a rate: Wilson score interval;
- absolute uplift of rates or means: the difference with a Wald (Welch) standard error;
- relative lift ``t / c - 1``: the delta method, ``se = (t / c) sqrt(se_t² / t² + se_c² / c²)``;
- NPS (% promoters 9-10 minus % detractors 0-6, in [-100, 100]): per answer a score of +1, 0 or
  -1, whose mean has variance ``(p + d - (p - d)²) / n``;
- IPS: the mean of ``min(q / p, clip) r`` over logged decisions (p: the logging policy's
  probability of what it showed, q: the candidate's); SNIPS divides by the sum of the clipped
  weights instead of n (lower variance, a small bias), its standard error by the delta method.
Tests on synthetic data with a known lift and a known policy value check the estimates and that
the intervals cover the truth at about their nominal rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% interval and the number of units behind it."""

    value: float
    low: float
    high: float
    n: int
    method: str

    @classmethod
    def normal(cls, value: float, se: float, n: int, method: str) -> Estimate:
        return cls(value, value - Z95 * se, value + Z95 * se, n, method)

    def covers(self, truth: float) -> bool:
        return self.low <= truth <= self.high

    def as_dict(self) -> dict[str, float | int | str]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n,
                "method": self.method}


def _nan(n: int, method: str) -> Estimate:
    return Estimate(math.nan, math.nan, math.nan, n, method)


def rate(successes: int, n: int) -> Estimate:
    """A proportion with its Wilson score interval."""
    if n <= 0:
        return _nan(0, "wilson")
    p = successes / n
    denominator = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denominator
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denominator
    return Estimate(p, centre - half, centre + half, n, "wilson")


def _rate_se(successes: int, n: int) -> tuple[float, float]:
    p = successes / n
    return p, math.sqrt(p * (1 - p) / n)


def rate_uplift(treated: tuple[int, int], control: tuple[int, int]) -> Estimate:
    """Treatment minus control rate, each given as (successes, n)."""
    if treated[1] <= 0 or control[1] <= 0:
        return _nan(max(treated[1], 0) + max(control[1], 0), "difference, Wald")
    pt, st = _rate_se(*treated)
    pc, sc = _rate_se(*control)
    return Estimate.normal(pt - pc, math.hypot(st, sc), treated[1] + control[1],
                           "difference, Wald")


def relative_lift(t: float, se_t: float, c: float, se_c: float, n: int) -> Estimate:
    """``t / c - 1`` with the delta method (NaN when the control mean is 0)."""
    if c == 0 or not math.isfinite(c):
        return _nan(n, "relative lift, delta method")
    ratio = t / c
    se = abs(ratio) * math.sqrt((se_t / t) ** 2 + (se_c / c) ** 2) if t else abs(se_t / c)
    return Estimate.normal(ratio - 1, se, n, "relative lift, delta method")


def rate_relative_lift(treated: tuple[int, int], control: tuple[int, int]) -> Estimate:
    """Relative lift of rates, each given as (successes, n)."""
    if treated[1] <= 0 or control[1] <= 0:
        return _nan(max(treated[1], 0) + max(control[1], 0), "relative lift, delta method")
    pt, st = _rate_se(*treated)
    pc, sc = _rate_se(*control)
    return relative_lift(pt, st, pc, sc, treated[1] + control[1])


def _mean_se(values: npt.NDArray[np.float64]) -> tuple[float, float]:
    n = len(values)
    mean = float(values.mean())
    return mean, float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf


def mean(values: npt.ArrayLike) -> Estimate:
    data = np.asarray(values, dtype=np.float64)
    if not len(data):
        return _nan(0, "mean, normal")
    value, se = _mean_se(data)
    return Estimate.normal(value, se, len(data), "mean, normal")


def mean_uplift(treated: npt.ArrayLike, control: npt.ArrayLike) -> Estimate:
    """Difference of means (e.g. value retained net of cost per customer), Welch's error."""
    t, c = np.asarray(treated, dtype=np.float64), np.asarray(control, dtype=np.float64)
    if len(t) < 2 or len(c) < 2:
        return _nan(len(t) + len(c), "difference of means, Welch")
    mt, st = _mean_se(t)
    mc, sc = _mean_se(c)
    return Estimate.normal(mt - mc, math.hypot(st, sc), len(t) + len(c),
                           "difference of means, Welch")


def nps(scores: npt.ArrayLike) -> Estimate:
    """Net Promoter Score in [-100, 100] from 0-10 answers."""
    data = np.asarray(scores, dtype=np.float64)
    n = len(data)
    if not n:
        return _nan(0, "nps, normal")
    promoters = float((data >= 9).mean())
    detractors = float((data <= 6).mean())
    value = promoters - detractors
    se = math.sqrt(max(promoters + detractors - value**2, 0.0) / n)
    return Estimate.normal(100 * value, 100 * se, n, "nps, normal")


def nps_uplift(treated: npt.ArrayLike, control: npt.ArrayLike) -> Estimate:
    t, c = nps(treated), nps(control)
    if t.n == 0 or c.n == 0:
        return _nan(t.n + c.n, "nps difference, normal")
    se = math.hypot((t.high - t.value) / Z95, (c.high - c.value) / Z95)
    return Estimate.normal(t.value - c.value, se, t.n + c.n, "nps difference, normal")


def clipped_weights(target: npt.ArrayLike, logging: npt.ArrayLike,
                    clip: float) -> npt.NDArray[np.float64]:
    """``min(q / p, clip)``; a logged probability of 0 (never shown by design) weighs 0."""
    q = np.asarray(target, dtype=np.float64)
    p = np.asarray(logging, dtype=np.float64)
    if np.any((p < 0) | (p > 1)) or np.any((q < 0) | (q > 1)):
        raise ValueError("propensities must lie in [0, 1]")
    ratio = np.divide(q, p, out=np.zeros_like(q), where=p > 0)
    return np.minimum(ratio, clip)


def ips(rewards: npt.ArrayLike, target: npt.ArrayLike, logging: npt.ArrayLike,
        clip: float = 100.0) -> Estimate:
    """Inverse propensity scoring of the candidate's value per decision."""
    r = np.asarray(rewards, dtype=np.float64)
    weighted = clipped_weights(target, logging, clip) * r
    if len(r) < 2:
        return _nan(len(r), f"ips, clip {clip:g}")
    value, se = _mean_se(weighted)
    return Estimate.normal(value, se, len(r), f"ips, clip {clip:g}")


def snips(rewards: npt.ArrayLike, target: npt.ArrayLike, logging: npt.ArrayLike,
          clip: float = 100.0) -> Estimate:
    """Self-normalised IPS: the weighted mean of rewards, weights clipped."""
    r = np.asarray(rewards, dtype=np.float64)
    w = clipped_weights(target, logging, clip)
    total = float(w.sum())
    if len(r) < 2 or total <= 0:
        return _nan(len(r), f"snips, clip {clip:g}")
    value = float((w * r).sum() / total)
    se = float(np.sqrt(np.sum(w**2 * (r - value) ** 2)) / total)
    return Estimate.normal(value, se, len(r), f"snips, clip {clip:g}")
