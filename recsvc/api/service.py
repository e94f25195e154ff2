"""The gRPC servicer (grpc.aio): proto <-> domain, nothing else. ``guarded`` maps errors."""

from __future__ import annotations

import time
from typing import Any

import grpc.aio

from recsvc.api.guard import CallLimiter, guarded
from recsvc.core.model import STRATEGY_BLENDED, STRATEGY_PERSONALIZED
from recsvc.ops import metrics
from recsvc.serving.holder import ModelHolder
from recsvc.serving.recommender import (
    BLENDED,
    DEGRADED_GLOBAL_POPULAR,
    DEGRADED_SEGMENT_POPULAR,
    GLOBAL_POPULAR,
    PERSONALIZED,
    SEGMENT_POPULAR,
    Answer,
    Question,
    Recommender,
)
from recsvc.v1 import offers_pb2 as pb
from recsvc.v1 import offers_pb2_grpc as pb_grpc

STRATEGY_TO_PROTO = {
    PERSONALIZED: pb.STRATEGY_PERSONALIZED,
    BLENDED: pb.STRATEGY_BLENDED,
    SEGMENT_POPULAR: pb.STRATEGY_SEGMENT_POPULAR,
    GLOBAL_POPULAR: pb.STRATEGY_GLOBAL_POPULAR,
    DEGRADED_SEGMENT_POPULAR: pb.STRATEGY_DEGRADED_SEGMENT_POPULAR,
    DEGRADED_GLOBAL_POPULAR: pb.STRATEGY_DEGRADED_GLOBAL_POPULAR,
}
_SEGMENT_STRATEGY_TO_PROTO = {
    STRATEGY_PERSONALIZED: pb.STRATEGY_PERSONALIZED,
    STRATEGY_BLENDED: pb.STRATEGY_BLENDED,
}


Context = grpc.aio.ServicerContext[Any, Any]


def deadline_of(context: Context, default_seconds: float) -> float:
    """Monotonic deadline: the caller's, else the server default."""
    remaining = context.time_remaining()
    if remaining is None or remaining > 1e6:  # grpcio reports "no deadline" as a huge number
        remaining = default_seconds
    return time.monotonic() + remaining


def to_response(answer: Answer) -> pb.RecommendResponse:
    metrics.answer(answer.strategy, getattr(answer, "arm", ""))
    catalogue = answer.model.catalogue
    ids, titles = catalogue.offer_ids, catalogue.titles
    response = pb.RecommendResponse(
        customer_id=answer.customer_id,
        segment=answer.segment,
        model_version=answer.model.version,
        strategy=STRATEGY_TO_PROTO[answer.strategy],
        reason=answer.reason,
    )
    add = response.offers.add  # a third cheaper than building RankedOffer objects to pass in
    for rank, (i, score) in enumerate(
            zip(answer.ranked.offers.tolist(), answer.ranked.scores.tolist(), strict=True),
            start=1):
        add(offer_id=ids[i], title=titles[i], score=score, rank=rank)
    return response


def _metrics(values: dict[str, float] | None) -> pb.Metrics:
    values = values or {}
    return pb.Metrics(precision_at_10=values.get("precision_at_10", 0.0),
                      ndcg_at_10=values.get("ndcg_at_10", 0.0),
                      coverage=values.get("coverage", 0.0))


class RetentionOfferServicer(pb_grpc.RetentionOfferServiceServicer):
    def __init__(self, recommender: Recommender, holder: ModelHolder,
                 default_deadline_seconds: float, limiter: CallLimiter) -> None:
        self.recommender = recommender
        self.holder = holder
        self.default_deadline = default_deadline_seconds
        self.limiter = limiter

    @guarded
    async def Recommend(self, request: pb.RecommendRequest,
                        context: Context) -> pb.RecommendResponse:
        question = Question(request.customer_id, request.limit, request.channel,
                            request.segment, tuple(request.exclude_offer_ids))
        answer = await self.recommender.recommend(question,
                                                  deadline_of(context, self.default_deadline))
        return to_response(answer)

    @guarded
    async def RecommendBatch(self, request: pb.RecommendBatchRequest, context: Context) -> None:
        # context.write rather than an async generator: measured ~1.7x the messages per second.
        answers = self.recommender.recommend_batch(
            list(request.customer_ids), request.limit, request.channel,
            deadline_of(context, self.default_deadline))
        async for answer in answers:
            await context.write(to_response(answer))

    @guarded
    async def GetModelInfo(self, request: pb.GetModelInfoRequest,
                           context: Context) -> pb.ModelInfo:
        model = self.holder.require()
        meta = model.meta
        segments = []
        for seg in meta.get("segments", []):
            segments.append(pb.SegmentInfo(
                name=seg["name"],
                customers=int(seg.get("customers", 0)),
                offers=int(seg.get("offers", 0)),
                interactions=int(seg.get("interactions", 0)),
                strategy=_SEGMENT_STRATEGY_TO_PROTO.get(seg["strategy"],
                                                        pb.STRATEGY_SEGMENT_POPULAR),
                metrics=_metrics(seg.get("metrics")),
                baseline_metrics=_metrics(seg.get("baseline_metrics")),
                evaluated_customers=int(seg.get("evaluated_customers", 0)),
            ))
        return pb.ModelInfo(
            active_version=model.version,
            trained_at=model.trained_at,
            segments=segments,
            previous_version=str(meta.get("previous_version") or ""),
            algorithm=str(meta.get("parameters", {}).get("algorithm", "")),
            data_fingerprint=str(meta.get("data_fingerprint", "")),
        )
