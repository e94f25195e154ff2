"""RecordFeedback through a real gRPC server: per-event results, whole-batch errors only for the
batch, duplicates on retry, never INTERNAL."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
import redis
from google.protobuf.timestamp_pb2 import Timestamp

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.core.errors import StoreError
from recsvc.v1 import offers_pb2 as pb
from tests.integration.helpers import FAST_CONFIG, planted
from tests.integration.serving import running, train, wait_for_version

pytestmark = [pytest.mark.integration, pytest.mark.both_models, pytest.mark.cluster]

R, D, X = pb.FEEDBACK_STATUS_RECORDED, pb.FEEDBACK_STATUS_DUPLICATE, pb.FEEDBACK_STATUS_REJECTED


def event(event_id: str, customer: str = "a-test", offer: str = "a5", name: str = "accept",
          **more: object) -> pb.FeedbackEvent:
    return pb.FeedbackEvent(event_id=event_id, customer_id=customer, offer_id=offer, event=name,
                            **more)  # type: ignore[arg-type]


def test_each_event_gets_its_own_status_and_a_retry_is_a_duplicate(
        tmp_path: Path, settings: Settings, client: redis.Redis) -> None:
    version = train(planted(tmp_path), settings.redis_url, settings.key_prefix, FAST_CONFIG)
    future = Timestamp(seconds=4_000_000_000)
    batch = pb.RecordFeedbackRequest(events=[
        event("e1"),
        event("e2", offer="zz"),
        event("e3", name="wink"),
        event("", offer="a1"),
        event("e5", time=future),
        event("e6", name="nps", offer="", value=12),
        event("e7", customer="new-1", offer="b1", name="click", segment="main"),
        event("e8", customer="new-2", offer="b1", segment="platinum"),
        event("e1"),
    ])
    with running(settings) as (_, stub, _channel):
        wait_for_version(stub, version)
        first = stub.RecordFeedback(batch, timeout=5)
        assert [r.status for r in first.results] == [R, X, X, X, X, X, R, X, D]
        assert [r.event_id for r in first.results] == [e.event_id for e in batch.events]
        reasons = [r.reason for r in first.results]
        assert reasons[1] == "offer_id: unknown offer 'zz' (not in the catalogue)"
        assert reasons[2].startswith("event: unknown event 'wink'")
        assert reasons[3].startswith("event_id: must not be empty")
        assert reasons[4].startswith("time: ") and "in the future" in reasons[4]
        assert reasons[5] == "value: an NPS score lies in 0..10, got 12"
        assert reasons[7] == "segment: unknown segment 'platinum' (not in the active model)"
        again = stub.RecordFeedback(batch, timeout=5)
        assert [r.status for r in again.results] == [D, X, X, X, X, X, D, X, D]
        client.script_flush()  # as after a Redis restart: the script is loaded again
        third = stub.RecordFeedback(pb.RecordFeedbackRequest(events=[event("e1"), event("e9")]),
                                    timeout=5)
        assert [r.status for r in third.results] == [D, R]
    keys = schema.keys_for(settings)
    assert client.hget(keys.live("a-test"), "a:a5") is not None
    assert client.hget(keys.live("new-1"), "seg") == b"main"
    logged = sum(client.xlen(keys.events(s)) for s in range(schema.SHARDS))
    assert logged == 3


def test_a_batch_over_many_shards_keeps_every_events_own_status(settings: Settings,
                                                                client: redis.Redis) -> None:
    """200 events of 150 customers (most of the 64 shards, so many script calls per batch),
    the same event twice in the batch and one bad event: each its own status; sent again,
    every recorded event is a duplicate and the stream holds each once."""
    names = ("impression", "click", "accept", "decline", "redeem")
    events = [event(f"m{i}", customer=f"cust-{i % 150}", offer=f"a{i % 5}",
                    name=names[i % len(names)], channel="email") for i in range(200)]
    events.insert(120, events[30])  # a retry inside the batch
    events.insert(77, event("bad", customer="cust-3", name="wink"))
    batch = pb.RecordFeedbackRequest(events=events)
    expected = [X if e.event_id == "bad" else R for e in events]
    expected[121] = D  # the copy of m30 (after the insert at 77 it sits at 121)
    assert batch.events[121].event_id == "m30"
    with running(settings) as (_, stub, _channel):
        first = stub.RecordFeedback(batch, timeout=5)
        assert [r.status for r in first.results] == expected
        assert [r.event_id for r in first.results] == [e.event_id for e in events]
        assert first.results[77].reason.startswith("event: unknown event 'wink'")
        again = stub.RecordFeedback(batch, timeout=5)
        assert [r.status for r in again.results] == [X if s == X else D for s in expected]
    keys = schema.keys_for(settings)
    assert sum(client.xlen(keys.events(s)) for s in range(schema.SHARDS)) == 200
    assert client.hget(keys.live("cust-2"), "a:a2") is not None  # m2: an accept of a2


def test_empty_and_oversized_batches_are_invalid_argument(settings: Settings) -> None:
    with running(replace(settings, max_feedback_events=3)) as (_, stub, _channel):
        for events in ([], [event(str(i)) for i in range(4)]):
            with pytest.raises(grpc.RpcError) as caught:
                stub.RecordFeedback(pb.RecordFeedbackRequest(events=events), timeout=5)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "events:" in (caught.value.details() or "")
        # No model in memory yet: offers cannot be checked, the events are still recorded.
        ok = stub.RecordFeedback(pb.RecordFeedbackRequest(events=[event("x")]), timeout=5)
        assert [r.status for r in ok.results] == [R]


def test_arbitrary_events_never_get_internal(settings: Settings) -> None:
    """Random text, times and values in every field: per-event verdicts, never INTERNAL."""
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hsettings
    from hypothesis import strategies as st

    text = st.text(max_size=300)
    events = st.builds(
        lambda i, c, o, e, t, v, ch, sg, d: pb.FeedbackEvent(
            event_id=i, customer_id=c, offer_id=o, event=e,
            time=None if t is None else Timestamp(seconds=t), value=v, channel=ch,
            segment=sg, decision_id=d),
        text, text, text, st.sampled_from(["accept", "nps", "churn", "", "x"]) | text,
        st.none() | st.integers(-2**40, 2**40), st.none() | st.floats(allow_nan=True),
        text, text, text)
    with running(settings) as (_, stub, _channel):
        @hsettings(max_examples=40, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(st.lists(events, min_size=1, max_size=20))
        def check(batch: list[pb.FeedbackEvent]) -> None:
            reply = stub.RecordFeedback(pb.RecordFeedbackRequest(events=batch), timeout=10)
            assert len(reply.results) == len(batch)
            for result in reply.results:
                assert result.status in (R, D, X)
                assert result.status != X or result.reason

        check()


def test_a_threaded_server_records_the_same_way_with_redis_py(settings: Settings,
                                                              client: redis.Redis) -> None:
    from recsvc.api.feedback import FeedbackDesk
    from recsvc.serving.holder import ModelHolder
    from recsvc.store.feedback.events import EventLog

    desk = FeedbackDesk.build(ModelHolder(), EventLog(schema.keys_for(settings),
                                                      settings), settings)
    request = pb.RecordFeedbackRequest(events=[event("s1"), event("s1"), event("", offer="a1")])
    reply = desk.record_blocking(desk.verdicts(request), client, time.monotonic() + 5)
    assert [r.status for r in reply.results] == [R, D, X]
    # Past the caller's deadline nothing is written (the caller will retry the whole batch).
    late = pb.RecordFeedbackRequest(events=[event("s2")])
    with pytest.raises(StoreError, match="no time left"):
        desk.record_blocking(desk.verdicts(late), client, time.monotonic() - 0.001)
    reply = desk.record_blocking(desk.verdicts(late), client, time.monotonic() + 5)
    assert [r.status for r in reply.results] == [R]


def test_the_threaded_servicer_passes_the_callers_deadline_to_the_write(
        settings: Settings, client: redis.Redis) -> None:
    """A call whose deadline is gone when its turn comes gets UNAVAILABLE and writes nothing."""
    from recsvc.api.feedback import FeedbackDesk
    from recsvc.api.guard import CallLimiter
    from recsvc.api.sync_service import BlockingServicer
    from recsvc.serving.holder import ModelHolder
    from recsvc.store.feedback.events import EventLog

    class Expired:
        def invocation_metadata(self) -> tuple[()]:
            return ()

        def time_remaining(self) -> float:
            return 0.0

        def abort(self, code: grpc.StatusCode, message: str) -> None:
            raise RuntimeError(code, message)

    keys = schema.keys_for(settings)
    holder = ModelHolder()
    servicer = BlockingServicer(
        None, holder, 1.0, CallLimiter(8), 0.002,  # type: ignore[arg-type]
        FeedbackDesk.build(holder, EventLog(keys, settings), settings), client)
    request = pb.RecordFeedbackRequest(events=[event("late")]).SerializeToString()
    with pytest.raises(RuntimeError) as failed:
        servicer.RecordFeedback(request, Expired())  # type: ignore[arg-type]
    code, message = failed.value.args
    assert code == grpc.StatusCode.UNAVAILABLE and "no time left" in message
    assert not any(client.xlen(keys.events(shard)) for shard in range(schema.SHARDS))


def test_a_stopped_server_keeps_no_feedback_connection_open(
        tmp_path: Path, settings: Settings, client: redis.Redis) -> None:
    version = train(planted(tmp_path), settings.redis_url, settings.key_prefix, FAST_CONFIG)
    before = {c["id"] for c in client.client_list()}
    with running(settings) as (_, stub, _channel):
        wait_for_version(stub, version)
        stub.RecordFeedback(pb.RecordFeedbackRequest(events=[event("s1")]), timeout=5)

    def left() -> list[dict[str, str]]:
        return [c for c in client.client_list() if c["id"] not in before and c["cmd"] == "evalsha"]

    deadline = time.monotonic() + 1  # Redis notices a closed connection on its next turn
    while left() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not left()
