"""``handlers.add_servicer`` and ``guard.guarded_sync`` serve a synchronous grpcio server the same
way as the grpc.aio one: raw request bytes, INVALID_ARGUMENT for bytes that are no message, the
one error table, the cap. A real ``grpc.server`` on port 0 (no Redis: a stand-in servicer)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from recsvc.api.guard import CallLimiter, guarded_sync
from recsvc.api.handlers import add_servicer
from recsvc.core.errors import InvalidRequestError
from recsvc.v1 import offers_pb2 as pb
from recsvc.v1 import offers_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


class EchoSync:
    def __init__(self, limit: int) -> None:
        self.limiter = CallLimiter(limit)
        self.release = threading.Event()

    @guarded_sync(pb.RecommendRequest)
    def Recommend(self, request: pb.RecommendRequest, context: Any) -> pb.RecommendResponse:
        if not request.customer_id:
            raise InvalidRequestError("customer_id: must not be empty")
        if request.customer_id == "slow":
            self.release.wait(5)
        if request.customer_id == "bug":
            raise ZeroDivisionError("a bug")
        return pb.RecommendResponse(customer_id=request.customer_id)

    @guarded_sync(pb.RecommendBatchRequest)
    def RecommendBatch(self, request: pb.RecommendBatchRequest,
                       context: Any) -> Iterator[pb.RecommendResponse]:
        for customer_id in request.customer_ids:
            if not customer_id:
                raise InvalidRequestError("customer_ids: empty id")
            yield pb.RecommendResponse(customer_id=customer_id)

    @guarded_sync(pb.GetModelInfoRequest)
    def GetModelInfo(self, request: pb.GetModelInfoRequest, context: Any) -> pb.ModelInfo:
        return pb.ModelInfo(active_version="v-sync")

    @guarded_sync(pb.RecordFeedbackRequest)
    def RecordFeedback(self, request: pb.RecordFeedbackRequest,
                       context: Any) -> pb.RecordFeedbackResponse:
        return pb.RecordFeedbackResponse()


@pytest.fixture
def sync_server() -> Iterator[tuple[EchoSync, grpc.Channel]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = EchoSync(limit=1)
    add_servicer(server, servicer)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield servicer, channel
    servicer.release.set()
    channel.close()
    server.stop(0)


def code_of(call: Any) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_a_sync_server_answers_like_the_aio_one(sync_server: tuple[EchoSync, grpc.Channel]
                                                ) -> None:
    servicer, channel = sync_server
    stub = pb_grpc.RetentionOfferServiceStub(channel)
    assert stub.Recommend(pb.RecommendRequest(customer_id="a"), timeout=5).customer_id == "a"
    assert [r.customer_id for r in stub.RecommendBatch(
        pb.RecommendBatchRequest(customer_ids=["a", "b"]), timeout=5)] == ["a", "b"]
    assert stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5).active_version == "v-sync"
    raw = channel.unary_unary("/recsvc.v1.RetentionOfferService/Recommend")
    raw_stream = channel.unary_stream("/recsvc.v1.RetentionOfferService/RecommendBatch")
    assert code_of(lambda: raw(b"\x80" * 20, timeout=5)) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: list(raw_stream(b"\x80" * 20, timeout=5))) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: stub.Recommend(pb.RecommendRequest(), timeout=5)) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: list(stub.RecommendBatch(
        pb.RecommendBatchRequest(customer_ids=["a", ""]), timeout=5))) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: stub.Recommend(pb.RecommendRequest(customer_id="bug"), timeout=5)) \
        == grpc.StatusCode.INTERNAL
    slow = stub.Recommend.future(pb.RecommendRequest(customer_id="slow"), timeout=5)
    while servicer.limiter.in_flight == 0:
        threading.Event().wait(0.01)
    assert code_of(lambda: stub.Recommend(pb.RecommendRequest(customer_id="a"), timeout=5)) == \
        grpc.StatusCode.RESOURCE_EXHAUSTED  # the cap of 1 is taken
    servicer.release.set()
    assert slow.result().customer_id == "slow" and servicer.limiter.in_flight == 0
