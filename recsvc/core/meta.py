"""A model version's metadata (the JSON at ``{p}:v:{version}:meta``): one typed value, written by
the training job and parsed and validated here, the only place that reads the JSON.

Fields a newer training job adds and this code does not know yet are kept verbatim in ``extra``
(per version and per segment), so an older server never drops or misreads them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

STRATEGY_PERSONALIZED = "personalized"
STRATEGY_BLENDED = "blended"
STRATEGY_POPULAR = "popular"
SEGMENT_STRATEGIES = (STRATEGY_PERSONALIZED, STRATEGY_BLENDED, STRATEGY_POPULAR)
# A segment's ``params`` key, true when its customers' records hold every shown cell (the
# exposure model's segments since the fold-in solves them; earlier versions left some out).
EVERY_SHOWN_CELL = "records_hold_every_shown_cell"


class MetaError(ValueError):
    """The metadata JSON does not have the shape this module documents; names the field."""


@dataclass(frozen=True)
class SegmentMeta:
    """What the training run recorded about one segment (index = position in ``segments``)."""

    name: str
    strategy: str  # one of SEGMENT_STRATEGIES
    blend_weight: float = 1.0  # weight of the personal score when blended
    factors: int = 0  # columns of the factor vectors (0: served by popularity)
    customers: int = 0
    offers: int = 0
    interactions: int = 0
    evaluated_customers: int = 0
    params: dict[str, Any] | None = None  # the chosen hyperparameters
    metrics: dict[str, float] | None = None  # held-out metrics of the served strategy
    model_metrics: dict[str, float] | None = None
    baseline_metrics: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)
    fit_seconds: float = 0.0
    evaluate_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape: known fields, then ``extra`` merged in at the same level."""
        plain = asdict(self)
        extra = plain.pop("extra")
        return {**plain, **extra}


@dataclass(frozen=True)
class ModelMeta:
    """One published version's metadata."""

    version: str
    trained_at: str  # RFC 3339, UTC
    segments: tuple[SegmentMeta, ...]
    data_fingerprint: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)  # algorithm and the whole config
    overall_ndcg_at_10: float | None = None
    previous_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def algorithm(self) -> str:
        return str(self.parameters.get("algorithm", ""))

    def segment_index(self, name: str) -> int | None:
        for i, segment in enumerate(self.segments):
            if segment.name == name:
                return i
        return None

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape: known fields, then ``extra`` merged in at the same level."""
        plain = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        plain["segments"] = [s.as_dict() for s in self.segments]
        return {**plain, **self.extra}

    def to_json(self) -> str:
        return json.dumps(self.as_dict())

    @classmethod
    def from_json(cls, raw: bytes | str) -> ModelMeta:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MetaError(f"model metadata is not JSON: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> ModelMeta:
        if not isinstance(data, dict):
            raise MetaError("model metadata must be a JSON object")
        segments = data.get("segments")
        if not isinstance(segments, list):
            raise MetaError("model metadata: 'segments' must be a list")
        known = {f.name for f in fields(cls)} - {"extra"}
        overall = data.get("overall_ndcg_at_10")
        return cls(
            version=_text(data, "version", "model metadata"),
            trained_at=_text(data, "trained_at", "model metadata"),
            segments=tuple(_segment(s, i) for i, s in enumerate(segments)),
            data_fingerprint=str(data.get("data_fingerprint") or ""),
            parameters=dict(data.get("parameters") or {}),
            overall_ndcg_at_10=None if overall is None else _number(overall,
                                                                    "overall_ndcg_at_10"),
            previous_version=data.get("previous_version") or None,
            extra={k: v for k, v in data.items() if k not in known},
        )


def _segment(data: Any, index: int) -> SegmentMeta:
    where = f"model metadata: segments[{index}]"
    if not isinstance(data, dict):
        raise MetaError(f"{where} must be an object")
    name = _text(data, "name", where)
    strategy = _text(data, "strategy", where)
    if strategy not in SEGMENT_STRATEGIES:
        raise MetaError(f"{where} ({name!r}): unknown strategy {strategy!r}")
    factors = int(_number(data.get("factors", 0), f"{where}.factors"))
    if factors < 0 or (strategy != STRATEGY_POPULAR and factors == 0):
        raise MetaError(f"{where} ({name!r}): strategy {strategy} needs factors > 0")
    weight = _number(data.get("blend_weight", 1.0), f"{where}.blend_weight")
    if not 0.0 <= weight <= 1.0:
        raise MetaError(f"{where} ({name!r}): blend_weight must lie in [0, 1]")
    known = {f.name for f in fields(SegmentMeta)} - {"extra"}
    return SegmentMeta(
        name=name, strategy=strategy, blend_weight=weight, factors=factors,
        customers=int(data.get("customers", 0)), offers=int(data.get("offers", 0)),
        interactions=int(data.get("interactions", 0)),
        evaluated_customers=int(data.get("evaluated_customers", 0)),
        params=data.get("params"), metrics=data.get("metrics"),
        model_metrics=data.get("model_metrics"), baseline_metrics=data.get("baseline_metrics"),
        notes=list(data.get("notes") or []),
        fit_seconds=float(data.get("fit_seconds", 0.0)),
        evaluate_seconds=float(data.get("evaluate_seconds", 0.0)),
        extra={k: v for k, v in data.items() if k not in known},
    )


def _text(data: dict[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise MetaError(f"{where}: '{key}' must be a non-empty string")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MetaError(f"{where} must be a finite number, got {value!r}")
    return float(value)
