"""One model version held in process memory: the item side of every segment.

Pure: built from the blobs the store read (``ModelVersion.from_blobs``), never does I/O. The
service swaps whole ``ModelVersion`` objects, so a request that took a reference sees one version.
Customer vectors are not here: they stay in Redis and are read per request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from recsvc.core import schema
from recsvc.core.display import Display, display_of
from recsvc.core.meta import (
    SEGMENT_STRATEGIES,
    STRATEGY_BLENDED,
    STRATEGY_PERSONALIZED,
    STRATEGY_POPULAR,
    ModelMeta,
)

__all__ = ["SEGMENT_STRATEGIES", "STRATEGY_BLENDED", "STRATEGY_PERSONALIZED", "STRATEGY_POPULAR",
           "Catalogue", "ModelVersion", "SegmentModel", "standardize"]


def standardize(values: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Zero mean, unit spread along the last axis (a constant row becomes zeros)."""
    mean = values.mean(axis=-1, keepdims=True)
    spread = values.std(axis=-1, keepdims=True)
    spread = np.where(spread > 0, spread, np.float32(1.0))
    result: npt.NDArray[np.float32] = ((values - mean) / spread).astype(np.float32, copy=False)
    return result


@dataclass(frozen=True)
class Catalogue:
    """The offer catalogue of a version, in index order (indices are what records store)."""

    offer_ids: list[str]
    titles: list[str]
    valid_from: npt.NDArray[np.float64]  # epoch seconds, -inf when open
    valid_to: npt.NDArray[np.float64]  # epoch seconds, +inf when open
    channel_open: dict[str, npt.NDArray[np.bool_]]  # channel -> offer is offered there
    open_to_all_channels: npt.NDArray[np.bool_]  # offers with an empty channel list
    index_of: dict[str, int] = field(repr=False)
    # Per offer, its valid non-empty display fields (core/display.py), keyword arguments of a
    # RankedOffer; {} for most offers and for every offer of a version published before them.
    display: list[Display] = field(default_factory=list, repr=False)

    @classmethod
    def from_json(cls, offers: list[dict[str, Any]]) -> Catalogue:
        n = len(offers)
        valid_from = np.full(n, -np.inf)
        valid_to = np.full(n, np.inf)
        channels_of: list[list[str]] = []
        for i, offer in enumerate(offers):
            if offer.get("valid_from") is not None:
                valid_from[i] = float(offer["valid_from"])
            if offer.get("valid_to") is not None:
                valid_to[i] = float(offer["valid_to"])
            channels_of.append(list(offer.get("channels") or []))
        open_to_all = np.array([not chans for chans in channels_of], dtype=bool)
        channel_open: dict[str, npt.NDArray[np.bool_]] = {}
        for name in sorted({c for chans in channels_of for c in chans}):
            listed = np.array([name in chans for chans in channels_of], dtype=bool)
            channel_open[name] = listed | open_to_all
        ids = [str(o["offer_id"]) for o in offers]
        return cls(
            offer_ids=ids,
            titles=[str(o.get("title") or "") for o in offers],
            valid_from=valid_from,
            valid_to=valid_to,
            channel_open=channel_open,
            open_to_all_channels=open_to_all,
            index_of={offer_id: i for i, offer_id in enumerate(ids)},
            display=[display_of(o) for o in offers],
        )

    def channel_mask(self, channel: str) -> npt.NDArray[np.bool_]:
        """Offers open to ``channel``; an unknown channel gets only the offers open to all."""
        if not channel:
            return np.ones(len(self.offer_ids), dtype=bool)
        return self.channel_open.get(channel, self.open_to_all_channels)


@dataclass(frozen=True)
class SegmentModel:
    """The item side of one segment (or of the global popularity list)."""

    name: str
    strategy: str
    blend_weight: float  # weight of the personal score in STRATEGY_BLENDED
    offers: npt.NDArray[np.uint32]  # catalogue indices
    popularity: npt.NDArray[np.float32]
    popularity_z: npt.NDArray[np.float32]  # standardized popularity, for blending
    factors: npt.NDArray[np.float32] | None  # (offers x factors), None for popularity only
    local_of: npt.NDArray[np.int32]  # catalogue index -> position in ``offers`` or -1
    # For blending without per-request mean/std over offers: a customer's personal scores
    # F v have mean v·mu and variance vᵀ C v, with mu and C of the item factors. The three are
    # stacked as one (factors x offers + 1 + factors) matrix, [F; mu; C] transposed, so a
    # request computes F v, v·mu and C v in a single matrix product.
    blend_projection: npt.NDArray[np.float32] | None = None
    blend_offset: npt.NDArray[np.float32] | None = None  # (1 - w) * standardized popularity
    # Eligibility masks by channel with the time interval each holds for (see ranking); filled
    # lazily, at most one entry per channel the catalogue names, plus "" and unknown channels.
    base_masks: dict[str, tuple[npt.NDArray[np.bool_], float, float]] = field(
        default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(
        cls,
        name: str,
        strategy: str,
        blend_weight: float,
        offers: npt.NDArray[np.uint32],
        popularity: npt.NDArray[np.float32],
        factors: npt.NDArray[np.float32] | None,
        catalogue_size: int,
    ) -> SegmentModel:
        if strategy not in SEGMENT_STRATEGIES:
            raise ValueError(f"segment {name!r}: unknown strategy {strategy!r}")
        if len(popularity) != len(offers):
            raise ValueError(f"segment {name!r}: {len(popularity)} popularity scores for "
                             f"{len(offers)} offers")
        if factors is not None and factors.shape[0] != len(offers):
            raise ValueError(f"segment {name!r}: factors for {factors.shape[0]} offers, "
                             f"expected {len(offers)}")
        if strategy != STRATEGY_POPULAR and factors is None:
            raise ValueError(f"segment {name!r}: strategy {strategy} needs item factors")
        if len(offers) and int(offers.max()) >= catalogue_size:
            raise ValueError(f"segment {name!r}: offer index beyond the catalogue")
        local_of = np.full(catalogue_size, -1, dtype=np.int32)
        local_of[offers] = np.arange(len(offers), dtype=np.int32)
        popularity_z = standardize(popularity) if len(popularity) else popularity
        projection = offset = None
        if factors is not None and len(offers):
            wide = factors.astype(np.float64)
            mu = wide.mean(axis=0)
            cov = wide.T @ wide / len(wide) - np.outer(mu, mu)
            projection = np.ascontiguousarray(
                np.vstack((wide, mu[np.newaxis, :], cov)).T, dtype=np.float32)
            offset = ((1.0 - blend_weight) * popularity_z).astype(np.float32)
        return cls(
            name=name,
            strategy=strategy,
            blend_weight=blend_weight,
            offers=offers,
            popularity=popularity,
            popularity_z=popularity_z,
            factors=factors,
            local_of=local_of,
            blend_projection=projection,
            blend_offset=offset,
        )

    @property
    def factor_count(self) -> int:
        return 0 if self.factors is None else int(self.factors.shape[1])


@dataclass(frozen=True)
class ModelVersion:
    """Everything the service keeps in memory for one published version."""

    version: str
    meta: ModelMeta
    catalogue: Catalogue
    segments: list[SegmentModel]
    global_popular: SegmentModel
    segment_index: dict[str, int] = field(repr=False)
    # The catalogue as published (JSON objects in index order): value, cost, rule, lever, type.
    offers: list[dict[str, Any]] = field(default_factory=list, repr=False, compare=False)

    @property
    def trained_at(self) -> str:
        return self.meta.trained_at

    def segment_named(self, name: str) -> SegmentModel | None:
        index = self.segment_index.get(name)
        return None if index is None else self.segments[index]

    @classmethod
    def from_blobs(
        cls,
        version: str,
        meta: ModelMeta,
        offers_json: bytes,
        segment_blobs: list[dict[bytes, bytes]],
        global_blob: dict[bytes, bytes],
    ) -> ModelVersion:
        """Decode what the store read; raises ValueError when anything is inconsistent."""
        offers = json.loads(offers_json)
        catalogue = Catalogue.from_json(offers)
        size = len(catalogue.offer_ids)
        if len(meta.segments) != len(segment_blobs):
            raise ValueError(f"meta lists {len(meta.segments)} segments, "
                             f"{len(segment_blobs)} stored")
        segments = [
            _segment_from_blob(m.name, m.strategy, m.blend_weight, m.factors, blob, size)
            for m, blob in zip(meta.segments, segment_blobs, strict=True)
        ]
        global_popular = _segment_from_blob("", STRATEGY_POPULAR, 0.0, 0, global_blob, size)
        return cls(
            version=version,
            meta=meta,
            catalogue=catalogue,
            segments=segments,
            global_popular=global_popular,
            segment_index={s.name: i for i, s in enumerate(segments)},
            offers=offers,
        )


def _segment_from_blob(
    name: str, strategy: str, blend_weight: float, factor_count: int,
    blob: dict[bytes, bytes], catalogue_size: int,
) -> SegmentModel:
    fields = {k.decode(): v for k, v in blob.items()}
    if schema.FIELD_OFFERS not in fields or schema.FIELD_POPULARITY not in fields:
        raise ValueError(f"segment {name!r}: stored hash lacks offers or popularity")
    offers = schema.decode_u32(fields[schema.FIELD_OFFERS])
    factors = None
    if schema.FIELD_FACTORS in fields:
        flat = schema.decode_f32(fields[schema.FIELD_FACTORS])
        if factor_count <= 0 or flat.size != factor_count * len(offers):
            raise ValueError(f"segment {name!r}: factor blob does not match its shape")
        factors = flat.reshape(len(offers), factor_count)
    return SegmentModel.build(
        name, strategy, blend_weight, offers,
        schema.decode_f32(fields[schema.FIELD_POPULARITY]), factors, catalogue_size,
    )
