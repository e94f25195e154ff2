"""Per-segment ALS with implicit preferences on Spark MLlib: a drop-in for implicit's ALS.

The job reads and validates the tables and builds each segment's matrix in our own code (the
same rules for every engine); this module hands the matrix's cells to Spark as an Arrow table of
(user, item, rating) and takes the factors back the same way, so evaluation, tuning and
publishing cannot tell which engine fit them.

The two engines solve the same normal equations except for the regularization:

    implicit 0.7.3, c = alpha*|v|:  (YtY + sum (c - 1) y y' + lambda I) x = sum_{v>0} c y
    Spark 4, c1 = alpha_s*|r|:      (YtY + sum c1 y y' + n+ regParam I) x = sum_{r>0} (1 + c1) y
                                    (n+ = the row's positive ratings: "ALS-WR")

so Spark gets ``r = sign(v) * (alpha*|v| - 1)`` with ``alpha_s = 1``: the same terms whenever
alpha*|v| >= 1 (a weaker positive cell becomes Spark's weakest preference, c = 1; a weaker
negative one drops out), and ``regParam = lambda / mean n+`` over customers with a positive cell,
which equals implicit's lambda for a customer with the mean number of positive cells (lighter
customers get less, heavier ones and offers more). The solvers (Cholesky vs three
conjugate-gradient steps) and initialisations differ too; tests/integration/test_spark.py states
and checks how closely the rankings agree.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix

from recsvc.core.errors import RecsvcError
from training.config import Spark
from training.fit import Factors, FitError, Params

log = logging.getLogger(__name__)

APP_NAME = "recsvc-train"
WEAKEST_PREFERENCE = 1e-6  # a positive cell must stay > 0 to count as a preference in Spark
# The job prints its own progress; Spark's console bar would interleave with it.
DEFAULT_CONF = {"spark.ui.showConsoleProgress": "false"}


class SparkUnavailableError(RecsvcError):
    """pyspark is not installed or Spark could not start (no Java, bad master URL)."""


def spark_ratings(values: npt.NDArray[np.float32], alpha: float) -> npt.NDArray[np.float32]:
    """Our cell confidences -> Spark ratings whose terms (with Spark's alpha = 1) are implicit's."""
    minus_one = np.maximum(alpha * np.abs(values.astype(np.float64)) - 1.0, 0.0)
    positive = values > 0
    magnitude = np.where(positive, np.maximum(minus_one, WEAKEST_PREFERENCE), minus_one)
    return np.where(positive, magnitude, -magnitude).astype(np.float32)


def reg_param(matrix: csr_matrix, regularization: float) -> float:
    """Spark's regParam for implicit's lambda: lambda / mean positive cells per customer."""
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    per_row = np.bincount(rows[matrix.data > 0], minlength=matrix.shape[0])
    counted = per_row[per_row > 0]
    return float(regularization / counted.mean()) if len(counted) else float(regularization)


def session(options: Spark | None = None) -> Any:
    """The process's SparkSession, created once and reused by every fit.

    An active session wins (a test's, or one spark-submit made); otherwise the master is
    ``[spark] master``, else what spark-submit was given, else ``local[*]``.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise SparkUnavailableError(
            "engine = \"spark\" needs pyspark: pip install 'recsvc[spark]'") from exc
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    options = options or Spark()
    builder = SparkSession.builder.appName(APP_NAME)
    if options.master:
        builder = builder.master(options.master)
    for key, value in {**DEFAULT_CONF, **options.conf}.items():
        builder = builder.config(key, str(value))
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # pyspark raises its own runtime errors when the JVM cannot start
        raise SparkUnavailableError(
            f"cannot start Spark ({type(exc).__name__}: {_first_line(exc)}); Spark 4 needs "
            "Java 17 or 21 (Debian: apt-get install openjdk-17-jre-headless)") from exc
    spark.sparkContext.setLogLevel("ERROR")
    log.info("Spark %s, master %s", spark.version, spark.sparkContext.master)
    return spark


def fit_spark(matrix: csr_matrix, params: Params, seed: int, segment: str,
              options: Spark | None = None) -> Factors:
    """Fit one segment's ALS on Spark; the same ``Factors`` (users x F, offers x F) as implicit."""
    import pyarrow as pa

    spark = session(options)
    from pyspark.ml.recommendation import ALS

    coo = matrix.tocoo()
    cells = pa.table({"user": coo.row.astype(np.int32), "item": coo.col.astype(np.int32),
                      "rating": spark_ratings(coo.data, params.alpha)})
    blocks = (options.blocks if options else 0) or spark.sparkContext.defaultParallelism
    als = ALS(rank=params.factors, maxIter=params.iterations,
              regParam=reg_param(matrix, params.regularization), implicitPrefs=True, alpha=1.0,
              nonnegative=False, seed=seed, userCol="user", itemCol="item", ratingCol="rating",
              numUserBlocks=blocks, numItemBlocks=blocks)
    n_users, n_items = matrix.shape
    try:
        model = als.fit(spark.createDataFrame(cells))
        users = _dense(model.userFactors.toArrow(), n_users, params.factors)
        items = _dense(model.itemFactors.toArrow(), n_items, params.factors)
    except Exception as exc:  # the JVM's errors arrive as Py4J/PySpark exceptions
        raise FitError(f"segment {segment!r}: the Spark ALS fit failed ({type(exc).__name__}: "
                       f"{_first_line(exc)}; {params})") from exc
    if not (np.isfinite(users).all() and np.isfinite(items).all()):
        raise FitError(f"segment {segment!r}: the Spark ALS fit produced non-finite factors "
                       f"({params}); lower alpha or raise regularization")
    return Factors(users, items)


def _dense(table: Any, n: int, rank: int) -> npt.NDArray[np.float32]:
    """Spark's (id, features) rows -> an n x rank array; ids Spark never saw stay zero."""
    out = np.zeros((n, rank), dtype=np.float32)
    if table.num_rows:
        ids = table.column("id").to_numpy()
        flat = table.column("features").combine_chunks().flatten()
        out[ids] = flat.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, rank)
    return np.ascontiguousarray(out)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"
