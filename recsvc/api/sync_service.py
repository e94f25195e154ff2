"""The servicer of the thread-pool server model: proto <-> domain, as ``service`` does for
grpc.aio, with the same request and response mapping (``question_of``, ``to_response``,
``model_info``) and ``guarded_sync`` around every method."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import redis

from recsvc.api.feedback import FeedbackDesk
from recsvc.api.guard import CallLimiter, guarded_sync
from recsvc.api.service import (
    batch_deadline,
    deadline_of,
    model_info,
    question_of,
    to_response,
)
from recsvc.serving.blocking import BlockingRecommender
from recsvc.serving.holder import ModelHolder
from recsvc.v1 import offers_pb2 as pb


class BlockingServicer:
    def __init__(self, recommender: BlockingRecommender, holder: ModelHolder,
                 default_deadline_seconds: float, limiter: CallLimiter,
                 batch_seconds_per_id: float, feedback: FeedbackDesk,
                 feedback_client: redis.Redis) -> None:
        self.recommender = recommender
        self.holder = holder
        self.default_deadline = default_deadline_seconds
        self.limiter = limiter
        self.batch_seconds_per_id = batch_seconds_per_id
        self.feedback = feedback
        self.feedback_client = feedback_client  # redis-py, the feedback timeout

    @guarded_sync(pb.RecommendRequest)
    def Recommend(self, request: pb.RecommendRequest,
                  context: grpc.ServicerContext) -> pb.RecommendResponse:
        return to_response(self.recommender.recommend(
            question_of(request), deadline_of(context, self.default_deadline)))

    @guarded_sync(pb.RecommendBatchRequest)
    def RecommendBatch(self, request: pb.RecommendBatchRequest,
                       context: grpc.ServicerContext) -> Iterator[pb.RecommendResponse]:
        ids = list(request.customer_ids)
        for answer in self.recommender.recommend_batch(
                ids, request.limit, request.channel,
                batch_deadline(context, self.default_deadline, self.batch_seconds_per_id,
                               len(ids))):
            yield to_response(answer)

    @guarded_sync(pb.GetModelInfoRequest)
    def GetModelInfo(self, request: pb.GetModelInfoRequest,
                     context: grpc.ServicerContext) -> pb.ModelInfo:
        return model_info(self.holder.require())

    @guarded_sync(pb.RecordFeedbackRequest)
    def RecordFeedback(self, request: pb.RecordFeedbackRequest,
                       context: grpc.ServicerContext) -> pb.RecordFeedbackResponse:
        verdicts = self.feedback.verdicts(request)  # pure: INVALID_ARGUMENT for the batch only
        return self.feedback.record_blocking(verdicts, self.feedback_client,
                                             deadline_of(context, self.default_deadline))
