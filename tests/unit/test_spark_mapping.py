"""The parameter mapping of the spark engine, checked on both libraries' normal equations.

implicit 0.7.3 (implicit/cpu/_als.pyx, least_squares): for each stored cell v, c = alpha*|v|,
A += (c - 1) y y', b += c y when v > 0; A = YtY + lambda I + ...
Spark 4 (ml/recommendation/ALS.scala, computeFactors, implicitPrefs): c1 = alpha_s*|r|,
A += c1 y y', b += (1 + c1) y when r > 0; lambda = regParam * (number of r > 0).
No pyspark needed: the mapping is pure numpy.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix

from training.engines.spark import WEAKEST_PREFERENCE, reg_param, spark_ratings


def implicit_solve(yy: npt.NDArray[np.float64], cols: npt.NDArray[np.int64],
                   values: npt.NDArray[np.float64], alpha: float, lam: float
                   ) -> npt.NDArray[np.float64]:
    a = yy.T @ yy + lam * np.eye(yy.shape[1])
    b = np.zeros(yy.shape[1])
    for col, value in zip(cols, values, strict=True):
        c = alpha * abs(value)
        a += (c - 1) * np.outer(yy[col], yy[col])
        if value > 0:
            b += c * yy[col]
    return np.linalg.solve(a, b)


def spark_solve(yy: npt.NDArray[np.float64], cols: npt.NDArray[np.int64],
                ratings: npt.NDArray[np.float32], reg: float) -> npt.NDArray[np.float64]:
    a = yy.T @ yy
    b = np.zeros(yy.shape[1])
    explicit = 0
    for col, rating in zip(cols, ratings.astype(np.float64), strict=True):
        c1 = 1.0 * abs(rating)  # the engine sets Spark's alpha to 1
        a += c1 * np.outer(yy[col], yy[col])
        if rating > 0:
            explicit += 1
            b += (1 + c1) * yy[col]
    return np.linalg.solve(a + explicit * reg * np.eye(yy.shape[1]), b)


def test_spark_solves_implicits_equation_for_a_customer_with_the_mean_positive_count() -> None:
    rng = np.random.default_rng(1)
    items = rng.normal(size=(30, 6))
    alpha, lam = 5.0, 0.3
    # Three customers with 4 positive cells each (so mean n+ = 4) plus declines.
    rows, cols, values = [], [], []
    for user in range(3):
        picked = rng.choice(30, size=6, replace=False)
        rows += [user] * 6
        cols += picked.tolist()
        values += [1.0, 4.0, 6.0, 2.5, -2.0, -1.0]
    matrix = csr_matrix((np.array(values, np.float32), (rows, cols)), shape=(3, 30))
    reg = reg_param(matrix, lam)
    assert reg == lam / 4
    for user in range(3):
        start, end = matrix.indptr[user], matrix.indptr[user + 1]
        row_cols, row_values = matrix.indices[start:end], matrix.data[start:end]
        expected = implicit_solve(items, row_cols, row_values.astype(np.float64), alpha, lam)
        got = spark_solve(items, row_cols, spark_ratings(row_values, alpha), reg)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_regularization_scales_with_the_positive_count_as_in_als_wr() -> None:
    matrix = csr_matrix(np.array([[1, 1, 0, -2], [1, 1, 1, 1], [0, 0, 0, 0]], np.float32))
    assert reg_param(matrix, 0.3) == 0.3 / 3  # (2 + 4) / 2 customers with a positive cell
    assert reg_param(csr_matrix((2, 2), dtype=np.float32), 0.3) == 0.3


def test_weak_cells_become_sparks_weakest_preference_or_drop_out() -> None:
    values = np.array([0.1, 0.2, -0.1, -2.0, 3.0], np.float32)
    ratings = spark_ratings(values, 2.0)
    # alpha*v < 1: a positive stays a preference (c = 1), a negative adds nothing.
    assert ratings[0] == np.float32(WEAKEST_PREFERENCE)
    assert ratings[1] == np.float32(WEAKEST_PREFERENCE)
    assert ratings[2] == 0
    assert ratings[3] == -3.0 and ratings[4] == 5.0
