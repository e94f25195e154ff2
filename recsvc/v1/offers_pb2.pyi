from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Strategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRATEGY_UNSPECIFIED: _ClassVar[Strategy]
    STRATEGY_PERSONALIZED: _ClassVar[Strategy]
    STRATEGY_SEGMENT_POPULAR: _ClassVar[Strategy]
    STRATEGY_GLOBAL_POPULAR: _ClassVar[Strategy]
    STRATEGY_BLENDED: _ClassVar[Strategy]
    STRATEGY_DEGRADED_SEGMENT_POPULAR: _ClassVar[Strategy]
    STRATEGY_DEGRADED_GLOBAL_POPULAR: _ClassVar[Strategy]
STRATEGY_UNSPECIFIED: Strategy
STRATEGY_PERSONALIZED: Strategy
STRATEGY_SEGMENT_POPULAR: Strategy
STRATEGY_GLOBAL_POPULAR: Strategy
STRATEGY_BLENDED: Strategy
STRATEGY_DEGRADED_SEGMENT_POPULAR: Strategy
STRATEGY_DEGRADED_GLOBAL_POPULAR: Strategy

class RecommendRequest(_message.Message):
    __slots__ = ("customer_id", "limit", "channel", "segment", "exclude_offer_ids")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_OFFER_IDS_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    limit: int
    channel: str
    segment: str
    exclude_offer_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, customer_id: _Optional[str] = ..., limit: _Optional[int] = ..., channel: _Optional[str] = ..., segment: _Optional[str] = ..., exclude_offer_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RankedOffer(_message.Message):
    __slots__ = ("offer_id", "title", "score", "rank")
    OFFER_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    offer_id: str
    title: str
    score: float
    rank: int
    def __init__(self, offer_id: _Optional[str] = ..., title: _Optional[str] = ..., score: _Optional[float] = ..., rank: _Optional[int] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("customer_id", "segment", "model_version", "strategy", "offers", "reason")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    OFFERS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    segment: str
    model_version: str
    strategy: Strategy
    offers: _containers.RepeatedCompositeFieldContainer[RankedOffer]
    reason: str
    def __init__(self, customer_id: _Optional[str] = ..., segment: _Optional[str] = ..., model_version: _Optional[str] = ..., strategy: _Optional[_Union[Strategy, str]] = ..., offers: _Optional[_Iterable[_Union[RankedOffer, _Mapping]]] = ..., reason: _Optional[str] = ...) -> None: ...

class RecommendBatchRequest(_message.Message):
    __slots__ = ("customer_ids", "limit", "channel")
    CUSTOMER_IDS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    customer_ids: _containers.RepeatedScalarFieldContainer[str]
    limit: int
    channel: str
    def __init__(self, customer_ids: _Optional[_Iterable[str]] = ..., limit: _Optional[int] = ..., channel: _Optional[str] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Metrics(_message.Message):
    __slots__ = ("precision_at_10", "ndcg_at_10", "coverage")
    PRECISION_AT_10_FIELD_NUMBER: _ClassVar[int]
    NDCG_AT_10_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    precision_at_10: float
    ndcg_at_10: float
    coverage: float
    def __init__(self, precision_at_10: _Optional[float] = ..., ndcg_at_10: _Optional[float] = ..., coverage: _Optional[float] = ...) -> None: ...

class SegmentInfo(_message.Message):
    __slots__ = ("name", "customers", "offers", "interactions", "strategy", "metrics", "baseline_metrics", "evaluated_customers")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CUSTOMERS_FIELD_NUMBER: _ClassVar[int]
    OFFERS_FIELD_NUMBER: _ClassVar[int]
    INTERACTIONS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    BASELINE_METRICS_FIELD_NUMBER: _ClassVar[int]
    EVALUATED_CUSTOMERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    customers: int
    offers: int
    interactions: int
    strategy: Strategy
    metrics: Metrics
    baseline_metrics: Metrics
    evaluated_customers: int
    def __init__(self, name: _Optional[str] = ..., customers: _Optional[int] = ..., offers: _Optional[int] = ..., interactions: _Optional[int] = ..., strategy: _Optional[_Union[Strategy, str]] = ..., metrics: _Optional[_Union[Metrics, _Mapping]] = ..., baseline_metrics: _Optional[_Union[Metrics, _Mapping]] = ..., evaluated_customers: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("active_version", "trained_at", "segments", "previous_version", "algorithm", "data_fingerprint")
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAINED_AT_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    DATA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    active_version: str
    trained_at: str
    segments: _containers.RepeatedCompositeFieldContainer[SegmentInfo]
    previous_version: str
    algorithm: str
    data_fingerprint: str
    def __init__(self, active_version: _Optional[str] = ..., trained_at: _Optional[str] = ..., segments: _Optional[_Iterable[_Union[SegmentInfo, _Mapping]]] = ..., previous_version: _Optional[str] = ..., algorithm: _Optional[str] = ..., data_fingerprint: _Optional[str] = ...) -> None: ...
