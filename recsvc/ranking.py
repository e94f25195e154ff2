"""Pure ranking: scores, business-rule eligibility and top-k. numpy on float32, no I/O.

Training evaluates with these same functions, so what was validated is what is served.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recsvc.model import STRATEGY_BLENDED, STRATEGY_POPULAR, Catalogue, SegmentModel

NO_SCORE = np.float32(-np.inf)


@dataclass(frozen=True)
class Ranked:
    """One ranking: catalogue indices best first, with their scores."""

    offers: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]


@dataclass(frozen=True)
class Rules:
    """Business rules of one request that do not depend on the customer."""

    limit: int
    now: float  # epoch seconds
    channel: str = ""
    excluded: npt.NDArray[np.int64] | None = None  # catalogue indices


def segment_scores(
    segment: SegmentModel, vectors: npt.NDArray[np.float32] | None
) -> npt.NDArray[np.float32]:
    """Scores of the segment's offers, one row per vector (or one popularity row).

    Personal scores are the plain dot product over every factor column, bias columns included,
    which is exactly what implicit's ``recommend`` computes.
    """
    if segment.strategy == STRATEGY_POPULAR or vectors is None or segment.factors is None:
        return segment.popularity[np.newaxis, :]
    if segment.strategy == STRATEGY_BLENDED and segment.factor_cov is not None:
        return _blend(segment, vectors)
    return (vectors @ segment.factors.T).astype(np.float32, copy=False)


def _blend(segment: SegmentModel, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``w * standardize(F v) + (1 - w) * standardize(popularity)``, as one matrix product.

    The mean and spread of a customer's personal scores over the segment's offers come from the
    factor statistics precomputed per version, so no per-request reduction over offers is needed.
    """
    assert segment.factors is not None and segment.factor_mean is not None
    assert segment.factor_cov is not None and segment.blend_offset is not None
    mean = vectors @ segment.factor_mean
    spread = np.sqrt(np.maximum(((vectors @ segment.factor_cov) * vectors).sum(axis=1), 0.0))
    scale = np.divide(np.float32(segment.blend_weight), spread,
                      out=np.zeros_like(spread), where=spread > 1e-12)
    scores = (vectors * scale[:, np.newaxis]) @ segment.factors.T
    scores += segment.blend_offset
    scores -= (scale * mean)[:, np.newaxis]
    result: npt.NDArray[np.float32] = scores.astype(np.float32, copy=False)
    return result


def eligible(segment: SegmentModel, catalogue: Catalogue, rules: Rules) -> npt.NDArray[np.bool_]:
    """Offers of the segment valid now, open to the channel and not excluded by the caller."""
    offers = segment.offers
    mask = (catalogue.valid_from[offers] <= rules.now) & (rules.now < catalogue.valid_to[offers])
    if rules.channel:
        mask &= catalogue.channel_mask(rules.channel)[offers]
    if rules.excluded is not None and len(rules.excluded):
        drop_local(mask, segment, rules.excluded)
    return mask


def drop_local(
    mask: npt.NDArray[np.bool_], segment: SegmentModel, catalogue_indices: npt.ArrayLike
) -> None:
    """Clear the mask at the segment positions of ``catalogue_indices`` (others are ignored)."""
    local = segment.local_of[np.asarray(catalogue_indices, dtype=np.int64)]
    mask[local[local >= 0]] = False


def top_k(
    segment: SegmentModel,
    scores: npt.NDArray[np.float32],
    mask: npt.NDArray[np.bool_],
    limit: int,
) -> Ranked:
    """The best ``limit`` eligible offers of one score row; ties broken by catalogue order."""
    masked = np.where(mask, scores, NO_SCORE)
    count = min(limit, int(mask.sum()))
    if count <= 0:
        return Ranked(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32))
    if count < len(masked):
        candidates = np.argpartition(-masked, count - 1)[:count]
    else:
        candidates = np.arange(len(masked))
    order = np.lexsort((candidates, -masked[candidates]))
    best = candidates[order]
    return Ranked(segment.offers[best].astype(np.int64), masked[best])


def rank(
    segment: SegmentModel,
    catalogue: Catalogue,
    rules: Rules,
    vector: npt.NDArray[np.float32] | None = None,
    accepted: npt.NDArray[np.uint32] | None = None,
) -> Ranked:
    """One customer's ranking in ``segment`` (popularity when ``vector`` is None)."""
    mask = eligible(segment, catalogue, rules)
    if accepted is not None and len(accepted):
        drop_local(mask, segment, accepted)
    vectors = None if vector is None or not len(vector) else vector[np.newaxis, :]
    return top_k(segment, segment_scores(segment, vectors)[0], mask, rules.limit)


def rank_many(
    segment: SegmentModel,
    catalogue: Catalogue,
    rules: Rules,
    vectors: npt.NDArray[np.float32] | None,
    accepted: list[npt.NDArray[np.uint32]],
) -> list[Ranked]:
    """Rankings of several customers of one segment, scored as one matrix product."""
    base = eligible(segment, catalogue, rules)
    scores = segment_scores(segment, vectors)
    results = []
    for row, taken in enumerate(accepted):
        mask = base
        if len(taken):
            mask = base.copy()
            drop_local(mask, segment, taken)
        results.append(top_k(segment, scores[min(row, len(scores) - 1)], mask, rules.limit))
    return results
