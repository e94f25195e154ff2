"""The one typed adapter around implicit. BLAS runs one thread (set before numpy loads).

``fit(..., engine="spark")`` hands the same matrix to Spark MLlib instead
(training/engines/spark.py) and returns the same ``Factors``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

from recsvc.core.errors import RecsvcError

if TYPE_CHECKING:
    from training.config import Spark


class FitError(RecsvcError):
    """A segment's model could not be fit (for example non-finite factors)."""


@dataclass(frozen=True)
class Params:
    factors: int
    regularization: float
    alpha: float
    iterations: int
    negative_impressions: bool
    model: str = "implicit"  # or "exposure": training.exposure's model of shown cells

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Factors:
    """Published as is: every column, bias columns of BPR included."""

    users: npt.NDArray[np.float32]
    items: npt.NDArray[np.float32]


def make_model(algorithm: str, params: Params, seed: int, learning_rate: float) -> Any:
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    if algorithm == "als":
        return AlternatingLeastSquares(
            factors=params.factors, regularization=params.regularization, alpha=params.alpha,
            iterations=params.iterations, random_state=seed, num_threads=0)
    # BPR's Hogwild updates are only reproducible on one thread.
    return BayesianPersonalizedRanking(
        factors=params.factors, regularization=params.regularization,
        learning_rate=learning_rate, iterations=params.iterations, random_state=seed,
        num_threads=1)


def fit(matrix: csr_matrix, algorithm: str, params: Params, seed: int, learning_rate: float,
        segment: str, engine: str = "implicit", spark: Spark | None = None
        ) -> tuple[Factors, Any]:
    """Fit one model; raise FitError naming the segment when any factor is not finite.

    The second value is implicit's model object (None from the spark engine)."""
    if engine == "spark":
        from training.engines.spark import fit_spark
        return fit_spark(matrix, params, seed, segment, spark), None
    from implicit.recommender_base import ModelFitError

    model = make_model(algorithm, params, seed, learning_rate)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            model.fit(matrix, show_progress=False)
    except ModelFitError as exc:  # implicit's own NaN check
        raise FitError(f"segment {segment!r}: the {algorithm} fit failed ({exc}; {params}); "
                       "lower alpha or raise regularization") from exc
    users = np.ascontiguousarray(model.user_factors, dtype=np.float32)
    items = np.ascontiguousarray(model.item_factors, dtype=np.float32)
    if not (np.isfinite(users).all() and np.isfinite(items).all()):
        raise FitError(f"segment {segment!r}: the {algorithm} fit produced non-finite factors "
                       f"({params}); lower alpha or raise regularization")
    return Factors(users, items), model
