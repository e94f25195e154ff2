"""Feedback events are judged one by one: a clear reason per bad event, never the whole batch."""

from __future__ import annotations

import pytest

from recsvc.core.errors import InvalidRequestError
from recsvc.feedback.events import Event, Limits, RawEvent, Rejected, validate

NOW = 1_800_000_000.0
LIMITS = Limits(max_events=5, future_seconds=300)


def raw(**fields: object) -> RawEvent:
    base: dict[str, object] = dict(event_id="e1", customer_id="c1", offer_id="o1",
                                   event="accept", time=None)
    base.update(fields)
    return RawEvent(**base)  # type: ignore[arg-type]


def judge(*events: RawEvent) -> list[Event | Rejected]:
    return validate(list(events), NOW, LIMITS, {"o1", "o2"}.__contains__, {"loyal"})


@pytest.mark.parametrize(("event", "reason"), [
    (raw(event_id=""), "event_id: must not be empty"),
    (raw(event_id="x" * 129), "event_id: longer than 128 bytes"),
    (raw(customer_id=""), "customer_id: must not be empty"),
    (raw(event="like"), "event: unknown event 'like'"),
    (raw(offer_id=""), "offer_id: required for a 'accept' event"),
    (raw(offer_id="nope"), "offer_id: unknown offer 'nope'"),
    (raw(time=NOW + 3600), "time: 3600 s in the future"),
    (raw(time=5.0), "time: before 2000-01-01"),
    (raw(event="nps", offer_id="", value=11.0), "value: an NPS score lies in 0..10, got 11"),
    (raw(event="nps", offer_id=""), "value: required for 'nps'"),
    (raw(value=float("nan")), "value: must be a finite number"),
    (raw(channel="e mail"), "channel: 1 to 64 letters"),
    (raw(segment="gold"), "segment: unknown segment 'gold'"),
])
def test_each_bad_event_gets_a_reason_naming_its_field(event: RawEvent, reason: str) -> None:
    (verdict,) = judge(event)
    assert isinstance(verdict, Rejected) and verdict.reason.startswith(reason), verdict


def test_one_bad_event_never_rejects_the_rest_and_order_is_kept() -> None:
    verdicts = judge(raw(event_id="a"), raw(event_id="b", event="nope"), raw(event_id="c"))
    assert [type(v).__name__ for v in verdicts] == ["Event", "Rejected", "Event"]
    assert [v.event_id for v in verdicts] == ["a", "b", "c"]


def test_an_unset_time_is_now_and_outcomes_need_no_offer() -> None:
    (accept, nps, churn) = judge(raw(), raw(event_id="n", event="nps", offer_id="", value=9.0),
                                 raw(event_id="x", event="churn", offer_id="", time=NOW - 10))
    assert isinstance(accept, Event) and accept.ts == NOW
    assert isinstance(nps, Event) and nps.value == 9.0
    assert isinstance(churn, Event) and churn.ts == NOW - 10


def test_without_a_model_in_memory_offers_and_segments_are_not_checked() -> None:
    (verdict,) = validate([raw(offer_id="anything", segment="new")], NOW, LIMITS)
    assert isinstance(verdict, Event)


def test_empty_and_oversized_batches_are_invalid_as_a_whole() -> None:
    with pytest.raises(InvalidRequestError, match="at least one event"):
        judge()
    with pytest.raises(InvalidRequestError, match="6 events in one call, at most 5"):
        judge(*(raw(event_id=str(i)) for i in range(6)))
