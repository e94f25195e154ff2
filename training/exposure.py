"""Acceptance given exposure: a factor model fit on SHOWN cells only, with an offer bias.

Implicit's ALS reads every cell it was not given as "preference 0 with confidence 1", so an
offer the incumbent rarely showed looks disliked by everyone who never saw it: its scores
replay the old targeting. Here the unknown stays unknown. For each shown cell (customer u,
offer o) the target is y = 1 if accepted (accept or redeem), else 0, and

    minimize  sum_shown (y - b_o - x_u . y_o)^2 + reg * (|x_u|^2 + |y_o|^2) + reg_bias * b_o^2

by alternating exact least squares (one small F x F solve per customer and per offer, batched
in numpy). The bias b_o is the offer's acceptance rate once shown, shrunk towards zero; a
customer without history scores b_o alone. The model is published as implicit's are: customer
vectors [x_u, 1] and offer factors [y_o, b_o], so serving's dot product is the estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix

from training.fit import Factors

CHUNK = 65_536  # customers per batched solve: bounds the (chunk x F x F) temporaries


@dataclass(frozen=True)
class ExposureParams:
    factors: int = 8
    regularization: float = 4.0
    bias_regularization: float = 20.0
    iterations: int = 8


def _gram_rows(shown: csr_matrix, side: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Per row r of ``shown`` (0/1): sum of outer(side[c], side[c]) over its columns c."""
    f = side.shape[1]
    outer = np.einsum("ij,ik->ijk", side, side).reshape(len(side), f * f)
    result: npt.NDArray[np.float64] = np.asarray(shown @ outer).reshape(shown.shape[0], f, f)
    return result


def _solve(shown: csr_matrix, target: csr_matrix, side: npt.NDArray[np.float64],
           ridge: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Ridge least squares per row: (sum side side^T + diag(ridge)) x = sum target * side."""
    n, f = shown.shape[0], side.shape[1]
    out = np.zeros((n, f))
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        gram = _gram_rows(shown[lo:hi], side)
        gram[:, np.arange(f), np.arange(f)] += ridge
        rhs = np.asarray(target[lo:hi] @ side)
        out[lo:hi] = np.linalg.solve(gram, rhs[:, :, np.newaxis])[:, :, 0]
    return out


def fit_exposure(rows: npt.NDArray[np.int32], cols: npt.NDArray[np.int32],
                 accepted: npt.NDArray[np.bool_], shape: tuple[int, int],
                 params: ExposureParams, seed: int) -> Factors:
    """Fit on the given shown cells (one per customer and offer); factors as published."""
    n_users, n_items = shape
    f = params.factors
    y = accepted.astype(np.float64)
    shown = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)
    shown_t = shown.T.tocsr()
    rng = np.random.default_rng(seed)
    items = rng.normal(0.0, 0.1, size=(n_items, f))
    views = np.asarray(shown.sum(axis=0)).ravel()
    bias = np.bincount(cols, weights=y, minlength=n_items) / (views + params.bias_regularization)
    users = np.zeros((n_users, f))
    user_ridge = np.full(f, params.regularization)
    item_ridge = np.r_[np.full(f, params.regularization), params.bias_regularization]
    for _ in range(params.iterations):
        residual = csr_matrix((y - bias[cols], (rows, cols)), shape=shape)
        users = _solve(shown, residual, items, user_ridge)
        augmented = np.hstack((users, np.ones((n_users, 1))))
        target_t = csr_matrix((y, (cols, rows)), shape=(n_items, n_users))
        solved = _solve(shown_t, target_t, augmented, item_ridge)
        items, bias = solved[:, :f], solved[:, f]
    residual = csr_matrix((y - bias[cols], (rows, cols)), shape=shape)
    users = _solve(shown, residual, items, user_ridge)
    return Factors(
        users=np.ascontiguousarray(np.hstack((users, np.ones((n_users, 1)))), dtype=np.float32),
        items=np.ascontiguousarray(np.hstack((items, bias[:, np.newaxis])), dtype=np.float32))
