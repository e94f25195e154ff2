"""Validating feedback events: pure and synchronous, one verdict per event.

One bad event never rejects the rest of its batch: each event gets either a valid ``Event`` or a
``Rejected`` with a reason that names the field. Only whole-batch problems (empty, over the cap)
raise InvalidRequestError (INVALID_ARGUMENT).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from recsvc.core.errors import InvalidRequestError

INTERACTIONS = ("impression", "click", "accept", "redeem", "decline")
OUTCOMES = ("churn", "renew", "nps")
EVENT_NAMES = INTERACTIONS + OUTCOMES
MAX_EVENT_ID_BYTES = 128
MAX_CUSTOMER_ID_BYTES = 256
MAX_OFFER_ID_BYTES = 256
MAX_DECISION_ID_BYTES = 128
MAX_SEGMENT_CHARS = 128
NPS_RANGE = (0.0, 10.0)
EARLIEST = 946_684_800.0  # 2000-01-01: older times are typos, not history
_CHANNEL = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


# The two event types are NamedTuples, immutable like frozen dataclasses but about four times
# cheaper to build: two are built per event, up to 1,000 events a call.
class RawEvent(NamedTuple):
    """An event as the caller sent it (the servicer builds it from the proto)."""

    event_id: str
    customer_id: str
    offer_id: str
    event: str
    time: float | None  # epoch seconds; None = now
    decision_id: str = ""
    channel: str = ""
    segment: str = ""
    value: float | None = None


class Event(NamedTuple):
    """A valid event, its time resolved (epoch seconds)."""

    event_id: str
    customer_id: str
    offer_id: str
    event: str
    ts: float
    decision_id: str = ""
    channel: str = ""
    segment: str = ""
    value: float | None = None


@dataclass(frozen=True)
class Rejected:
    event_id: str
    reason: str


@dataclass(frozen=True)
class Limits:
    max_events: int = 1000
    future_seconds: float = 300.0


def check_batch_size(count: int, cap: int) -> None:
    """Whole-batch problems: the only INVALID_ARGUMENT of RecordFeedback."""
    if count == 0:
        raise InvalidRequestError("events: must hold at least one event")
    if count > cap:
        raise InvalidRequestError(
            f"events: {count} events in one call, at most {cap} (RECSVC_MAX_FEEDBACK_EVENTS); "
            "split the batch")


def _longer_than(text: str, limit: int) -> bool:
    """Is ``text`` over ``limit`` UTF-8 bytes? Encoded only when it could be (<= 4 bytes per
    character, also with lone surrogates)."""
    return len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit


def _good_channel(channel: str) -> bool:
    # Only names short enough to be valid reach the cache (a cached key is kept in memory).
    return len(channel) <= 64 and _matched_channel(channel)


@lru_cache(maxsize=1024)
def _matched_channel(channel: str) -> bool:
    """A handful of channel names come again and again: each is matched once."""
    return _CHANNEL.fullmatch(channel) is not None


def problem(raw: RawEvent, now: float, limits: Limits,
            known_offer: Callable[[str], bool] | None,
            known_segments: Container[str] | None) -> str | None:
    """The first rule ``raw`` breaks, in words naming the field; None when valid."""
    if not raw.event_id:
        return "event_id: must not be empty (it is the idempotency key)"
    if _longer_than(raw.event_id, MAX_EVENT_ID_BYTES):
        return f"event_id: longer than {MAX_EVENT_ID_BYTES} bytes"
    if not raw.customer_id:
        return "customer_id: must not be empty"
    if _longer_than(raw.customer_id, MAX_CUSTOMER_ID_BYTES):
        return f"customer_id: longer than {MAX_CUSTOMER_ID_BYTES} bytes"
    if raw.event not in EVENT_NAMES:
        return f"event: unknown event {raw.event[:40]!r}; known: {', '.join(EVENT_NAMES)}"
    if raw.event in INTERACTIONS and not raw.offer_id:
        return f"offer_id: required for a {raw.event!r} event"
    if raw.offer_id:
        if _longer_than(raw.offer_id, MAX_OFFER_ID_BYTES):
            return f"offer_id: longer than {MAX_OFFER_ID_BYTES} bytes"
        if known_offer is not None and not known_offer(raw.offer_id):
            return f"offer_id: unknown offer {raw.offer_id[:80]!r} (not in the catalogue)"
    if raw.time is not None:
        if not math.isfinite(raw.time) or raw.time < EARLIEST:
            return "time: before 2000-01-01 or not a valid time"
        if raw.time > now + limits.future_seconds:
            return (f"time: {raw.time - now:.0f} s in the future (at most "
                    f"{limits.future_seconds:.0f} s allowed for clock skew)")
    if raw.value is not None and not math.isfinite(raw.value):
        return "value: must be a finite number"
    if raw.event == "nps":
        if raw.value is None:
            return "value: required for 'nps' (the score 0-10)"
        if not NPS_RANGE[0] <= raw.value <= NPS_RANGE[1]:
            return f"value: an NPS score lies in 0..10, got {raw.value:g}"
    if raw.channel and not _good_channel(raw.channel):
        return "channel: 1 to 64 letters, digits, '_', '-' or '.'"
    if raw.segment:
        if len(raw.segment) > MAX_SEGMENT_CHARS or not raw.segment.isprintable():
            return f"segment: at most {MAX_SEGMENT_CHARS} printable characters"
        if known_segments is not None and raw.segment not in known_segments:
            return f"segment: unknown segment {raw.segment[:80]!r} (not in the active model)"
    if raw.decision_id and _longer_than(raw.decision_id, MAX_DECISION_ID_BYTES):
        return f"decision_id: longer than {MAX_DECISION_ID_BYTES} bytes"
    return None


def validate(raws: Sequence[RawEvent], now: float, limits: Limits,
             known_offer: Callable[[str], bool] | None = None,
             known_segments: Container[str] | None = None) -> list[Event | Rejected]:
    """One verdict per event, in order. ``known_offer``/``known_segments`` None: not checked
    (no model in memory yet)."""
    check_batch_size(len(raws), limits.max_events)
    verdicts: list[Event | Rejected] = []
    for raw in raws:
        reason = problem(raw, now, limits, known_offer, known_segments)
        if reason is not None:
            verdicts.append(Rejected(raw.event_id, reason))
        else:
            verdicts.append(Event(raw.event_id, raw.customer_id, raw.offer_id, raw.event,
                                  now if raw.time is None else raw.time, raw.decision_id,
                                  raw.channel, raw.segment, raw.value))
    return verdicts
