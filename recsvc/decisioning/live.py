"""Live offer overrides (``recsvc offers ...``): their format and how they apply in memory.

``{p}:offers:live`` maps an offer id to JSON. For an offer of the published catalogue, any of
``paused`` (bool), ``valid_from``/``valid_to`` (epoch seconds or null), ``value``, ``cost``,
``lever`` and the display fields (``description``, ``image_url``, ``accept_label``,
``decline_label``: text, "" for none; checks in core/display.py); for an offer the version does
not know, ``new: true`` and a whole offer: ``title``, ``segments`` (names or ``["*"]``),
``channels``, ``type``, ``rule`` and the fields above. Nothing of the published version is
rewritten: the overrides are applied to a copy of the in-memory model whenever
``{p}:offers:rev`` moves. A new offer has no factors and no popularity: it is ranked by the
documented prior (objective.py) until a training run includes it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from recsvc.core.display import DISPLAY_FIELDS, problem, quoted
from recsvc.core.model import Catalogue, ModelVersion, SegmentModel

OVERRIDE_KEYS = frozenset({"paused", "valid_from", "valid_to", "value", "cost", "lever",
                           *DISPLAY_FIELDS})
NEW_OFFER_KEYS = OVERRIDE_KEYS | {"new", "title", "segments", "channels", "type", "rule"}


@dataclass(frozen=True)
class Poll:
    """What the watcher's poll read: the active pointer and the live revision counters."""

    active: str | None
    revisions: tuple[int, int, int]  # offers:rev, budgets ~rev, dnc:rev
    # The experiment record ``{p}:experiments`` as read (field, value) pairs, sorted; empty when
    # no experiment runs. Parsed by ``recsvc.experiments.challenger.Experiment.from_fields``.
    experiment: tuple[tuple[str, str], ...] = ()
    # On a Redis Cluster with on-accept budgets: their counter fields summed over the 64 shard
    # hashes (field, units), sorted; the watcher decides exhaustion from them each poll.
    budget_use: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class LiveData:
    """The live state read when a revision moved."""

    overrides: dict[str, dict[str, Any]]  # offer id -> override (JSON objects)
    budgets: dict[str, str]  # the whole budgets hash, decoded
    dnc: frozenset[str]
    # On a cluster: on-accept counters summed over the shard hashes (``budgets.with_use``)
    budget_use: dict[str, int] = field(default_factory=dict)


def validate_override(offer_id: str, raw: Mapping[str, Any], known: bool) -> dict[str, Any]:
    """A clean override; ValueError naming the offer and the field otherwise."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"offer {offer_id!r}: override must be a JSON object")
    is_new = bool(raw.get("new"))
    allowed = NEW_OFFER_KEYS if is_new else OVERRIDE_KEYS
    unknown = set(raw) - allowed
    if unknown:
        raise ValueError(f"offer {offer_id!r}: unknown field(s) {sorted(unknown)}")
    if not is_new and not known:
        raise ValueError(f"offer {offer_id!r} is not in the active model's catalogue (add it "
                         "as a new offer)")
    clean: dict[str, Any] = {}
    for key in ("value", "cost", "lever"):
        if key in raw and raw[key] is not None:
            number = _finite(offer_id, key, raw[key])
            if number < 0 or (key == "lever" and number <= 0):
                raise ValueError(f"offer {offer_id!r}: {key} must be "
                                 f"{'> 0' if key == 'lever' else '>= 0'}, got {raw[key]!r}")
            clean[key] = number
    for key in ("valid_from", "valid_to"):
        if key in raw:
            clean[key] = None if raw[key] is None else _finite(offer_id, key, raw[key])
    if clean.get("valid_from") is not None and clean.get("valid_to") is not None \
            and clean["valid_to"] <= clean["valid_from"]:
        raise ValueError(f"offer {offer_id!r}: valid_to must be after valid_from")
    if "paused" in raw:
        if not isinstance(raw["paused"], bool):
            raise ValueError(f"offer {offer_id!r}: paused must be true or false")
        clean["paused"] = raw["paused"]
    for key in DISPLAY_FIELDS:
        if key in raw:
            wrong = problem(key, raw[key])
            if wrong is not None:
                raise ValueError(f"offer {offer_id!r}: {key} {quoted(raw[key])} {wrong}")
            clean[key] = raw[key]
    if is_new:
        clean["new"] = True
        clean["title"] = str(raw.get("title") or "")
        segments = raw.get("segments") or ["*"]
        channels = raw.get("channels") or []
        if not isinstance(segments, list) or not isinstance(channels, list):
            raise ValueError(f"offer {offer_id!r}: segments and channels must be lists")
        clean["segments"] = [str(s) for s in segments]
        clean["channels"] = [str(c) for c in channels]
        clean["type"] = str(raw.get("type") or "")
        if raw.get("rule"):
            clean["rule"] = str(raw["rule"])
    return clean


def _finite(offer_id: str, key: str, raw: Any) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"offer {offer_id!r}: {key} must be a number, got {raw!r}") from None
    if isinstance(raw, bool) or not math.isfinite(value):
        raise ValueError(f"offer {offer_id!r}: {key} must be a finite number, got {raw!r}")
    return value


def merged_offers(base: list[dict[str, Any]], overrides: Mapping[str, Mapping[str, Any]]
                  ) -> tuple[list[dict[str, Any]], list[bool]]:
    """The catalogue with overrides applied and new offers appended (and which ones are new).

    Indices of the version's offers never move (customer records store them).
    """
    position = {str(o["offer_id"]): i for i, o in enumerate(base)}
    offers = [dict(o) for o in base]
    is_new = [False] * len(offers)
    for offer_id in sorted(overrides):
        change = overrides[offer_id]
        if offer_id in position:
            target = offers[position[offer_id]]
            target.update({k: v for k, v in change.items()
                           if k in OVERRIDE_KEYS})
        elif change.get("new"):
            offers.append({"offer_id": offer_id, **{k: v for k, v in change.items()
                                                     if k != "new"}})
            is_new.append(True)
    return offers, is_new


def eligibility_catalogue(offers: list[dict[str, Any]], closed: set[int]) -> Catalogue:
    """The catalogue serving filters with: validity as overridden, and the offers in ``closed``
    (paused, or out of budget everywhere) given an empty validity window, so the memoized
    eligibility mask drops them at no cost per request."""
    shut = [dict(o, valid_from=0.0, valid_to=0.0) if i in closed else o
            for i, o in enumerate(offers)]
    return Catalogue.from_json(shut)


def extended_segment(segment: SegmentModel, new_offers: list[int],
                     catalogue_size: int) -> SegmentModel:
    """The segment with ``new_offers`` (catalogue indices) appended: zero factors and zero
    popularity (their p_accept is the prior, set by the decider), a fresh eligibility memo.

    The blend statistics stay those of the trained offers, so scores of trained offers are
    exactly what they were.
    """
    if not new_offers:
        local_of = segment.local_of
        if len(local_of) != catalogue_size:
            local_of = np.full(catalogue_size, -1, dtype=np.int32)
            local_of[segment.offers] = np.arange(len(segment.offers), dtype=np.int32)
        return replace(segment, local_of=local_of, base_masks={})
    k = len(new_offers)
    n = len(segment.offers)
    offers = np.concatenate((segment.offers, np.asarray(new_offers, dtype=np.uint32)))
    local_of = np.full(catalogue_size, -1, dtype=np.int32)
    local_of[offers] = np.arange(len(offers), dtype=np.int32)
    zeros = np.zeros(k, dtype=np.float32)
    factors = projection = offset = None
    if segment.factors is not None:
        factors = np.vstack((segment.factors, np.zeros((k, segment.factors.shape[1]),
                                                       dtype=np.float32)))
    if segment.blend_projection is not None and segment.blend_offset is not None:
        f = segment.blend_projection.shape[0]
        projection = np.ascontiguousarray(np.hstack((
            segment.blend_projection[:, :n], np.zeros((f, k), dtype=np.float32),
            segment.blend_projection[:, n:])))
        offset = np.concatenate((segment.blend_offset, zeros))
    return replace(segment, offers=offers, local_of=local_of,
                   popularity=np.concatenate((segment.popularity, zeros)),
                   popularity_z=np.concatenate((segment.popularity_z, zeros)),
                   factors=factors, blend_projection=projection, blend_offset=offset,
                   base_masks={})


def open_to(offer: Mapping[str, Any], segment_name: str) -> bool:
    segments = offer.get("segments") or ["*"]
    return "*" in segments or segment_name in segments


def derived_model(model: ModelVersion, offers: list[dict[str, Any]], is_new: list[bool],
                  closed: set[int]) -> ModelVersion:
    """The in-memory model serving answers: the version's, with live changes applied."""
    catalogue = eligibility_catalogue(offers, closed)
    size = len(offers)
    new_indices = [i for i, new in enumerate(is_new) if new]
    segments = [extended_segment(s, [i for i in new_indices if open_to(offers[i], s.name)], size)
                for s in model.segments]
    global_popular = extended_segment(
        model.global_popular,
        [i for i in new_indices if "*" in (offers[i].get("segments") or ["*"])], size)
    return replace(model, catalogue=catalogue, segments=segments, global_popular=global_popular)
