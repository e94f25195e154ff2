"""RecordFeedback, proto <-> domain: validate every event (pure, synchronous), then record the
valid ones in one Redis round trip (the only I/O, ``FeedbackDesk.record``).

A threaded server calls ``verdicts`` then ``record_blocking`` (redis-py) where the grpc.aio
servicer calls ``verdicts`` then ``record`` (the pipelined connection on the event loop).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from recsvc.core.config import Settings
from recsvc.feedback.events import Event, Limits, RawEvent, Rejected, validate
from recsvc.serving.holder import ModelHolder
from recsvc.store.feedback.events import (
    DUPLICATE,
    LOG_FULL,
    LOG_FULL_REASON,
    RECORDED,
    EventLog,
    Outcome,
    record_sync,
)
from recsvc.v1 import offers_pb2 as pb

_STATUS = {RECORDED: pb.FEEDBACK_STATUS_RECORDED, DUPLICATE: pb.FEEDBACK_STATUS_DUPLICATE}


def raw_events(request: pb.RecordFeedbackRequest) -> list[RawEvent]:
    """The proto's events as plain values (an unset time is None: now)."""
    out = []
    for e in request.events:
        when = e.time.seconds + e.time.nanos / 1e9 if e.HasField("time") else None
        out.append(RawEvent(e.event_id, e.customer_id, e.offer_id, e.event, when,
                            e.decision_id, e.channel, e.segment,
                            e.value if e.HasField("value") else None))
    return out


def respond(verdicts: Sequence[Event | Rejected],
            outcomes: Sequence[Outcome]) -> pb.RecordFeedbackResponse:
    """One result per event in request order; ``outcomes`` are those of the valid events."""
    response = pb.RecordFeedbackResponse()
    add = response.results.add
    done = iter(outcomes)
    for verdict in verdicts:
        if isinstance(verdict, Rejected):
            add(event_id=verdict.event_id, status=pb.FEEDBACK_STATUS_REJECTED,
                reason=verdict.reason)
            continue
        outcome = next(done)
        if outcome.status == LOG_FULL:
            add(event_id=verdict.event_id, status=pb.FEEDBACK_STATUS_REJECTED,
                reason=LOG_FULL_REASON)
        else:
            add(event_id=verdict.event_id, status=_STATUS[outcome.status])
    return response


@dataclass
class FeedbackDesk:
    """What RecordFeedback needs: the bounds, the model in memory (offers, segments), the log."""

    holder: ModelHolder
    log: EventLog
    limits: Limits

    @classmethod
    def build(cls, holder: ModelHolder, log: EventLog, settings: Settings) -> FeedbackDesk:
        return cls(holder, log, Limits(settings.max_feedback_events,
                                       float(settings.feedback_future_seconds)))

    def verdicts(self, request: pb.RecordFeedbackRequest) -> list[Event | Rejected]:
        """Pure and synchronous; offers and segments are checked against the model in memory
        (not checked while no version is loaded)."""
        model = self.holder.current
        index_of = None if model is None else model.catalogue.index_of
        segments = None if model is None else model.segment_index
        return validate(raw_events(request), time.time(), self.limits,
                        None if index_of is None else index_of.__contains__, segments)

    async def record(self, verdicts: Sequence[Event | Rejected],
                     deadline: float) -> pb.RecordFeedbackResponse:
        valid = [v for v in verdicts if isinstance(v, Event)]
        outcomes = await self.log.record(valid, deadline, self.holder.budgets.on_accept)
        return respond(verdicts, outcomes)

    def record_blocking(self, verdicts: Sequence[Event | Rejected], client: redis.Redis,
                        deadline: float) -> pb.RecordFeedbackResponse:
        """The same for a threaded server: one redis-py pipeline per batch. Nothing is written
        once the caller's deadline has passed (as ``record``); the write itself waits at most
        the client's socket timeout (``feedback_timeout_ms``), as redis-py has no timeout per
        call."""
        valid = [v for v in verdicts if isinstance(v, Event)]
        return respond(verdicts, record_sync(client, self.log.keys, self.log.bounds, valid,
                                             self.holder.budgets.on_accept, deadline))
