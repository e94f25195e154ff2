import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
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

class FeedbackStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEEDBACK_STATUS_UNSPECIFIED: _ClassVar[FeedbackStatus]
    FEEDBACK_STATUS_RECORDED: _ClassVar[FeedbackStatus]
    FEEDBACK_STATUS_DUPLICATE: _ClassVar[FeedbackStatus]
    FEEDBACK_STATUS_REJECTED: _ClassVar[FeedbackStatus]
STRATEGY_UNSPECIFIED: Strategy
STRATEGY_PERSONALIZED: Strategy
STRATEGY_SEGMENT_POPULAR: Strategy
STRATEGY_GLOBAL_POPULAR: Strategy
STRATEGY_BLENDED: Strategy
STRATEGY_DEGRADED_SEGMENT_POPULAR: Strategy
STRATEGY_DEGRADED_GLOBAL_POPULAR: Strategy
FEEDBACK_STATUS_UNSPECIFIED: FeedbackStatus
FEEDBACK_STATUS_RECORDED: FeedbackStatus
FEEDBACK_STATUS_DUPLICATE: FeedbackStatus
FEEDBACK_STATUS_REJECTED: FeedbackStatus

class RecommendRequest(_message.Message):
    __slots__ = ("customer_id", "limit", "channel", "segment", "exclude_offer_ids", "context", "explain")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_OFFER_IDS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    limit: int
    channel: str
    segment: str
    exclude_offer_ids: _containers.RepeatedScalarFieldContainer[str]
    context: _containers.ScalarMap[str, str]
    explain: bool
    def __init__(self, customer_id: _Optional[str] = ..., limit: _Optional[int] = ..., channel: _Optional[str] = ..., segment: _Optional[str] = ..., exclude_offer_ids: _Optional[_Iterable[str]] = ..., context: _Optional[_Mapping[str, str]] = ..., explain: _Optional[bool] = ...) -> None: ...

class RankedOffer(_message.Message):
    __slots__ = ("offer_id", "title", "score", "rank", "p_accept", "reasons", "objective", "value", "cost", "description", "image_url", "accept_label", "decline_label")
    OFFER_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    P_ACCEPT_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_LABEL_FIELD_NUMBER: _ClassVar[int]
    DECLINE_LABEL_FIELD_NUMBER: _ClassVar[int]
    offer_id: str
    title: str
    score: float
    rank: int
    p_accept: float
    reasons: _containers.RepeatedScalarFieldContainer[str]
    objective: float
    value: float
    cost: float
    description: str
    image_url: str
    accept_label: str
    decline_label: str
    def __init__(self, offer_id: _Optional[str] = ..., title: _Optional[str] = ..., score: _Optional[float] = ..., rank: _Optional[int] = ..., p_accept: _Optional[float] = ..., reasons: _Optional[_Iterable[str]] = ..., objective: _Optional[float] = ..., value: _Optional[float] = ..., cost: _Optional[float] = ..., description: _Optional[str] = ..., image_url: _Optional[str] = ..., accept_label: _Optional[str] = ..., decline_label: _Optional[str] = ...) -> None: ...

class RemovedOffer(_message.Message):
    __slots__ = ("offer_id", "rule", "detail")
    OFFER_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    offer_id: str
    rule: str
    detail: str
    def __init__(self, offer_id: _Optional[str] = ..., rule: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("customer_id", "segment", "model_version", "strategy", "offers", "reason", "decision_id", "arm", "removed")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    OFFERS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    segment: str
    model_version: str
    strategy: Strategy
    offers: _containers.RepeatedCompositeFieldContainer[RankedOffer]
    reason: str
    decision_id: str
    arm: str
    removed: _containers.RepeatedCompositeFieldContainer[RemovedOffer]
    def __init__(self, customer_id: _Optional[str] = ..., segment: _Optional[str] = ..., model_version: _Optional[str] = ..., strategy: _Optional[_Union[Strategy, str]] = ..., offers: _Optional[_Iterable[_Union[RankedOffer, _Mapping]]] = ..., reason: _Optional[str] = ..., decision_id: _Optional[str] = ..., arm: _Optional[str] = ..., removed: _Optional[_Iterable[_Union[RemovedOffer, _Mapping]]] = ...) -> None: ...

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

class FeedbackEvent(_message.Message):
    __slots__ = ("event_id", "customer_id", "offer_id", "event", "time", "decision_id", "channel", "segment", "value")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    OFFER_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    customer_id: str
    offer_id: str
    event: str
    time: _timestamp_pb2.Timestamp
    decision_id: str
    channel: str
    segment: str
    value: float
    def __init__(self, event_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., offer_id: _Optional[str] = ..., event: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., decision_id: _Optional[str] = ..., channel: _Optional[str] = ..., segment: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...

class RecordFeedbackRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[FeedbackEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[FeedbackEvent, _Mapping]]] = ...) -> None: ...

class FeedbackResult(_message.Message):
    __slots__ = ("event_id", "status", "reason")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    status: FeedbackStatus
    reason: str
    def __init__(self, event_id: _Optional[str] = ..., status: _Optional[_Union[FeedbackStatus, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class RecordFeedbackResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[FeedbackResult]
    def __init__(self, results: _Optional[_Iterable[_Union[FeedbackResult, _Mapping]]] = ...) -> None: ...
