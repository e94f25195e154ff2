"""Per segment: choose hyperparameters and a serving strategy on a validation split, measure the
choice against the popularity baseline on a held-out test split, then refit on all data.

    all cells --holdout--> test split:  train_T | test_T        (reported metrics)
    train_T   --holdout--> validation:  train_V | val_V         (choices)

Strategies compared on val_V: the model alone, popularity alone, and blends of the two
(``tuning.blend_weights``); a small segment where the model loses serves popularity. Models are
implicit's (``algorithm``) and the exposure model of shown cells (training/exposure.py), as
``[exposure] model`` says; the choice maximises the de-biased precision@10, then ndcg@10
(``select_on``). On the test split the report also measures implicit ALS with implicit's
default settings, a competitor that is never served. A share of the validation sample's shown
cells is held out of the validation fits: the chosen candidate's fit scores them to calibrate
p_accept (training/calibrate.py). The de-biased metrics weigh a held-out pair by the inverse of the
propensity its decision logged when the decision log joins it (``--decisions``), else by the one
estimated from impressions; customers shown an explored answer also get the exploration slice's
metrics (training/evaluate.py), reported next to naive and de-biased, never selected on.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from recsvc.core.calibration import constant
from recsvc.core.model import STRATEGY_POPULAR
from training.calibrate import calibrate, smoothed_rate
from training.config import TrainConfig
from training.evaluate import (
    Metrics,
    Split,
    cell_scores,
    clipped_inverse,
    holdout_split,
    inverse_propensity,
    score_metrics,
    segment_model,
    strategy_for,
    top10,
    with_exploration,
)
from training.exposure import ExposureParams, fit_exposure
from training.fit import Factors, Params, fit
from training.matrix import Cells

# implicit's AlternatingLeastSquares defaults (0.7.3): the competitor "implicit used directly".
IMPLICIT_DEFAULTS = Params(factors=100, regularization=0.01, alpha=1.0, iterations=15,
                           negative_impressions=False)
EXPOSURE = "exposure"

log = logging.getLogger(__name__)


@dataclass
class SegmentResult:
    name: str
    customers: int
    offers: int
    interactions: int
    strategy: str
    blend_weight: float
    params: Params | None
    factors: Factors | None  # fit on all data; None when served by popularity
    popularity: npt.NDArray[np.float32]
    evaluated: int = 0
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # model/baseline/served
    trials: list[dict[str, Any]] = field(default_factory=list)
    evaluation: dict[str, Any] = field(default_factory=dict)  # what chose, which propensities
    calibration: dict[str, Any] | None = None  # score -> p_accept (recsvc.core.calibration)
    # The map of segment popularity for a modelled segment's customers without a vector.
    popularity_calibration: dict[str, Any] | None = None
    reliability: dict[str, Any] | None = None  # out-of-sample reliability table and ECE
    notes: list[str] = field(default_factory=list)
    fit_seconds: float = 0.0
    evaluate_seconds: float = 0.0
    competitor_seconds: float = 0.0  # fitting and measuring the never-served competitor

    @property
    def served_ndcg(self) -> float:
        return self.metrics.get("served", {}).get("ndcg_at_10", 0.0)


def candidate_params(config: TrainConfig) -> list[Params]:
    tuning, exposure = config.tuning, config.exposure
    sweeps = tuning.bpr_epochs if config.algorithm == "bpr" else tuning.iterations
    negative = config.negative_impressions == "true"
    implicit = [Params(f, r, a, i, negative) for f, r, a, i in
                itertools.product(tuning.factors, tuning.regularization, tuning.alpha, sweeps)]
    # The exposure model always reads shown-not-accepted cells as evidence (alpha unused).
    ours = [Params(f, r, 0.0, exposure.iterations, True, EXPOSURE) for f, r in
            itertools.product(exposure.factors, exposure.regularization)]
    if exposure.model == "implicit":
        return implicit
    return ours if exposure.model == EXPOSURE else implicit + ours


class _Evaluator:
    """Scores strategies for one split's evaluated customers, naive and de-biased."""

    def __init__(self, cells: Cells, split: Split, sample: npt.NDArray[np.int64],
                 weights: npt.NDArray[np.float64] | None = None) -> None:
        self.rows = sample
        position = np.full(cells.shape[0], -1, dtype=np.int64)
        position[sample] = np.arange(len(sample))
        at = position[cells.rows]
        seen = (at >= 0) & split.train & cells.accepted
        self.exclude_rows, self.exclude_cols = at[seen], cells.cols[seen].astype(np.int64)
        held = (at >= 0) & split.heldout
        self.relevant_rows, self.relevant_cols = at[held], cells.cols[held].astype(np.int64)
        self.weights = None if weights is None else weights[held]  # one per held-out pair
        logged = cells.logged_propensity
        self.logged_pairs = 0 if logged is None else int(np.isfinite(logged[held]).sum())
        self.explored = np.zeros(len(self.relevant_rows), dtype=bool)
        self.slice_rows = np.empty(0, dtype=np.int64)
        if cells.explored is not None:  # the slice: customers shown an explored answer
            self.explored = cells.explored[held]
            self.slice_rows = np.unique(at[(at >= 0) & cells.explored])
        self.popularity = cells.popularity(keep=split.train)
        self.n_offers = cells.shape[1]

    def metrics(self, items: npt.NDArray[np.float32] | None,
                users: npt.NDArray[np.float32] | None, weight: float) -> Metrics:
        """Held-out metrics of the model blended with popularity at ``weight`` (0: popularity)."""
        strategy = strategy_for(weight) if items is not None else STRATEGY_POPULAR
        model = segment_model(strategy, items, self.popularity, weight)
        vectors = None if users is None or strategy == STRATEGY_POPULAR else users[self.rows]
        top = top10(model, vectors, len(self.rows), self.exclude_rows, self.exclude_cols)
        metrics = score_metrics(top, self.relevant_rows, self.relevant_cols, self.n_offers,
                                pair_weights=self.weights)
        return with_exploration(metrics, top, self.relevant_rows, self.relevant_cols,
                                self.explored, self.slice_rows, self.n_offers)


def _sample(rows: npt.NDArray[np.int64], limit: int, rng: np.random.Generator
            ) -> npt.NDArray[np.int64]:
    if len(rows) <= limit:
        return rows
    return np.sort(rng.choice(rows, size=limit, replace=False))


def exposure_weights(cells: Cells, max_weight: float) -> npt.NDArray[np.float64]:
    """Per cell: inverse propensity of exposure, the logged one where the decision log joins the
    cell, else the offer's share of the segment's customers it was shown to; both clipped."""
    shown = np.bincount(cells.cols, minlength=cells.shape[1]).astype(np.float64)
    weights = inverse_propensity(shown, cells.shape[0], max_weight)[cells.cols]
    if cells.logged_propensity is not None:
        logged = np.isfinite(cells.logged_propensity)
        weights[logged] = clipped_inverse(cells.logged_propensity[logged], max_weight)
    return weights


def train_segment(name: str, cells: Cells, config: TrainConfig,
                  on_step: Callable[[str], None] = lambda s: None) -> SegmentResult:
    """Choose, measure and fit one segment's model (see the module docstring)."""
    customers, offers = cells.shape
    popularity = cells.popularity()
    result = SegmentResult(name, customers, offers, cells.interactions, STRATEGY_POPULAR, 0.0,
                           None, None, popularity)
    if len(cells.rows):
        result.calibration = constant(smoothed_rate(int(cells.accepted.sum()),
                                                    len(cells.rows)))
    if cells.interactions == 0 or offers == 0:
        result.notes.append("no interactions: served by segment popularity")
        return result
    evaluation, tuning, exposure = config.evaluation, config.tuning, config.exposure
    select_on = exposure.select_on
    rng = np.random.default_rng(config.seed)
    everything = np.ones(len(cells.rows), dtype=bool)
    test = holdout_split(cells.rows, cells.cols, cells.accepted_at, everything,
                         evaluation.holdout, evaluation.min_history)
    validation = holdout_split(cells.rows, cells.cols, cells.accepted_at, test.train,
                               evaluation.holdout, evaluation.min_history)
    weights = exposure_weights(cells, exposure.max_weight)
    if len(validation.rows) < evaluation.min_evaluated:
        result.notes.append(
            f"only {len(validation.rows)} customers with {evaluation.min_history}+ accepted "
            f"offers (need {evaluation.min_evaluated}) to validate a model: served by popularity")
        _calibrate(result, cells, None, None, test.train, config)
        return result
    negative_weight = config.negative_impression_weight

    def fit_on(params: Params, keep: npt.NDArray[np.bool_] | None) -> Factors:
        started = time.perf_counter()
        if params.model == EXPOSURE:
            use = np.ones(len(cells.rows), dtype=bool) if keep is None else keep
            factors = fit_exposure(
                cells.rows[use], cells.cols[use], cells.accepted[use], cells.shape,
                ExposureParams(params.factors, params.regularization,
                               exposure.bias_regularization, params.iterations), config.seed)
        else:
            matrix = cells.matrix(negative_weight if params.negative_impressions else None,
                                  keep, config.positive_cells_only)
            factors, _ = fit(matrix, config.algorithm, params, config.seed,
                             tuning.learning_rate, name, config.engine, config.spark)
        result.fit_seconds += time.perf_counter() - started
        return factors

    def timed(work: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        value = work()
        result.evaluate_seconds += time.perf_counter() - started
        return value

    # Validation fits see a sample of customers: the search costs a bounded time at any size.
    tuning_rows = _sample(np.arange(customers), evaluation.max_tuning_customers, rng)
    in_sample = np.zeros(customers, dtype=bool)
    in_sample[tuning_rows] = True
    # Shown cells held out of every validation fit: the calibration set of p_accept. Drawn
    # from their own generator, so the evaluation samples are those of a run without them.
    held_for_calibration = validation.train & in_sample[cells.rows] & (
        np.random.default_rng([config.seed, 1]).random(len(cells.rows))
        < exposure.calibration_share)
    tuning_train = validation.train & in_sample[cells.rows] & ~held_for_calibration
    val_rows = validation.rows[in_sample[validation.rows]]
    val_eval = timed(lambda: _Evaluator(cells, validation,
                                        _sample(val_rows, evaluation.max_customers, rng),
                                        weights))
    candidates = candidate_params(config)
    best: tuple[tuple[float, float], Params, float] | None = None
    best_factors: dict[Params, Factors] = {}

    def try_params(params: Params) -> None:
        nonlocal best
        on_step(f"{name}: validating {params}")
        factors = fit_on(params, tuning_train)
        for weight in tuning.blend_weights:
            if weight <= 0:
                continue
            metrics: Metrics = timed(partial(val_eval.metrics, factors.items, factors.users,
                                             weight))
            result.trials.append({"params": params.as_dict(), "blend_weight": weight,
                                  "validation": metrics.as_dict()})
            if best is None or metrics.key(select_on) > best[0]:
                best = (metrics.key(select_on), params, weight)
                best_factors.clear()
                best_factors[params] = factors

    for params in candidates:
        try_params(params)
    assert best is not None
    if config.negative_impressions == "auto" and best[1].model != EXPOSURE \
            and not best[1].negative_impressions:
        # Let validation decide whether "seen, not clicked" helps this segment.
        try_params(Params(**{**best[1].as_dict(), "negative_impressions": True}))
    popular_val = timed(lambda: val_eval.metrics(None, None, 0.0))
    result.trials.append({"params": None, "blend_weight": 0.0,
                          "validation": popular_val.as_dict()})
    _, params, weight = best
    if 0.0 in tuning.blend_weights and popular_val.key(select_on) >= best[0]:
        weight = 0.0
        result.notes.append(
            f"popularity validated better than every model ({select_on} key "
            f"{popular_val.key(select_on)[0]:.4f} vs {best[0][0]:.4f}): served by segment "
            "popularity")
    result.params = params
    result.blend_weight = weight
    result.strategy = strategy_for(weight)
    result.notes.append("chosen on the debiased precision@10 (then ndcg@10) of the validation "
                        "split" if select_on == "debiased" else
                        "chosen on the naive ndcg@10 (then precision@10) of the validation split")

    on_step(f"{name}: measuring {params} on the test split")
    test_eval = timed(lambda: _Evaluator(cells, test,
                                         _sample(test.rows, evaluation.max_customers, rng),
                                         weights))
    # Shown cells held out of the test fit: the calibration set of p_accept.
    factors = fit_on(params, test.train)
    result.evaluated = len(test_eval.rows)
    result.metrics = {
        "model": timed(lambda: test_eval.metrics(factors.items, factors.users, 1.0)).as_dict(),
        "baseline": timed(lambda: test_eval.metrics(None, None, 0.0)).as_dict(),
    }
    result.evaluation = _evaluation(select_on, test_eval)
    result.metrics["served"] = (
        result.metrics["baseline"] if weight <= 0 else result.metrics["model"] if weight >= 1
        else timed(lambda: test_eval.metrics(factors.items, factors.users, weight)).as_dict())
    result.evaluation["served"] = side_by_side(result.metrics["served"])
    if exposure.competitors:
        on_step(f"{name}: measuring implicit ALS with its default settings")
        chosen = np.zeros(customers, dtype=bool)
        chosen[_sample(np.arange(customers), exposure.competitor_customers, rng)] = True
        chosen[test_eval.rows] = True
        started = time.perf_counter()
        direct, _ = fit(cells.matrix(None, test.train & chosen[cells.rows]), "als",
                        IMPLICIT_DEFAULTS, config.seed, tuning.learning_rate, name)
        result.metrics["implicit_default"] = test_eval.metrics(direct.items, direct.users,
                                                               1.0).as_dict()
        result.competitor_seconds += time.perf_counter() - started
    if held_for_calibration.any():
        _calibrate(result, cells, best_factors[params] if weight > 0 else None, tuning_train,
                   held_for_calibration, config)
    if result.strategy != STRATEGY_POPULAR:
        on_step(f"{name}: fitting on all data")
        result.factors = fit_on(params, None)
    return result


def _evaluation(select_on: str, test: _Evaluator) -> dict[str, Any]:
    """What the report and the metadata say of the evaluation: which metric chose, where the
    propensities of the de-biased metric came from, the exploration slice's size."""
    held = len(test.relevant_rows)
    return {"selected_on": "debiased_precision_at_10" if select_on == "debiased"
            else "ndcg_at_10",
            "held_out_pairs": held, "logged_propensity_pairs": test.logged_pairs,
            "estimated_propensity_pairs": held - test.logged_pairs,
            "exploration_customers": len(test.slice_rows),
            "exploration_pairs": int(test.explored.sum()),
            "exploration_note": "reported, not selected on: exposure there is uniform"}


def side_by_side(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """A metrics dict as {naive, debiased, exploration} -> {precision_at_10, ndcg_at_10}."""
    out = {"naive": {k: metrics[k] for k in ("precision_at_10", "ndcg_at_10")}}
    for kind in ("debiased", "exploration"):
        if f"{kind}_precision_at_10" in metrics:
            out[kind] = {k: metrics[f"{kind}_{k}"] for k in ("precision_at_10", "ndcg_at_10")}
    return out


def _calibrate(result: SegmentResult, cells: Cells, factors: Factors | None,
               train: npt.NDArray[np.bool_] | None, held: npt.NDArray[np.bool_],
               config: TrainConfig) -> None:
    """Fit the score -> p_accept map of the served strategy on held-out shown cells.

    Popularity is scored with the published popularity (its scale grows with the data, so the
    map must read the served numbers); a model with the test fit's factors and the popularity
    it was blended with.
    """
    rows, cols = cells.rows[held].astype(np.int64), cells.cols[held].astype(np.int64)
    popular = segment_model(STRATEGY_POPULAR, None, cells.popularity(), 0.0)
    popular_scores = cell_scores(popular, None, rows, cols)
    if factors is None:
        result.calibration, result.reliability = calibrate(popular_scores, cells.accepted[held],
                                                           config.seed)
        return
    model = segment_model(result.strategy, factors.items, cells.popularity(keep=train),
                          result.blend_weight)
    scores = cell_scores(model, factors.users, rows, cols)
    result.calibration, result.reliability = calibrate(scores, cells.accepted[held], config.seed)
    result.popularity_calibration, _ = calibrate(popular_scores, cells.accepted[held],
                                                 config.seed)
