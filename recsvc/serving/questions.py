"""What a caller may ask: the question of a Recommend call and its checks (pure).

Every bad field is an InvalidRequestError naming the field, before any I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from recsvc.core.errors import InvalidRequestError

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
MAX_ID_BYTES = 256
MAX_SEGMENT_CHARS = 128
MAX_EXCLUDED = 1000
_CHANNEL = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_CONTEXT_KEY = re.compile(r"[A-Za-z0-9_]{1,64}")
MAX_CONTEXT = 64
MAX_CONTEXT_VALUE = 256


@dataclass(frozen=True)
class Question:
    customer_id: str
    limit: int = DEFAULT_LIMIT
    channel: str = ""
    segment: str = ""
    exclude_offer_ids: Sequence[str] = ()
    context: Mapping[str, str] = field(default_factory=dict)
    explain: bool = False


def validate_customer_id(customer_id: str, field: str = "customer_id") -> None:
    if not customer_id:
        raise InvalidRequestError(f"{field}: must not be empty")
    if len(customer_id.encode()) > MAX_ID_BYTES:
        raise InvalidRequestError(f"{field}: longer than {MAX_ID_BYTES} bytes")


def validate_limit(limit: int) -> int:
    if limit < 0 or limit > MAX_LIMIT:
        raise InvalidRequestError(f"limit: must be between 0 and {MAX_LIMIT} (0 means "
                                  f"{DEFAULT_LIMIT}), got {limit}")
    return limit or DEFAULT_LIMIT


def validate_channel(channel: str) -> None:
    if channel and not _CHANNEL.fullmatch(channel):
        raise InvalidRequestError(
            "channel: 1 to 64 letters, digits, '_', '-' or '.' (e.g. 'email'), got "
            f"{channel[:70]!r}"
        )


def validate_context(context: Mapping[str, str]) -> None:
    if len(context) > MAX_CONTEXT:
        raise InvalidRequestError(f"context: at most {MAX_CONTEXT} entries, got {len(context)}")
    for key, value in context.items():
        if not _CONTEXT_KEY.fullmatch(key):
            raise InvalidRequestError(f"context: key {key[:70]!r} must be 1 to 64 letters, "
                                      "digits or '_'")
        if len(value) > MAX_CONTEXT_VALUE:
            raise InvalidRequestError(f"context[{key!r}]: longer than {MAX_CONTEXT_VALUE} "
                                      "characters")


def validate_question(question: Question) -> int:
    """Checks every field; returns the effective limit."""
    validate_customer_id(question.customer_id)
    limit = validate_limit(question.limit)
    validate_channel(question.channel)
    if len(question.segment) > MAX_SEGMENT_CHARS or not question.segment.isprintable():
        raise InvalidRequestError(
            f"segment: at most {MAX_SEGMENT_CHARS} printable characters"
        )
    if len(question.exclude_offer_ids) > MAX_EXCLUDED:
        raise InvalidRequestError(f"exclude_offer_ids: at most {MAX_EXCLUDED} ids, got "
                                  f"{len(question.exclude_offer_ids)}")
    for i, offer_id in enumerate(question.exclude_offer_ids):
        if len(offer_id.encode()) > MAX_ID_BYTES:
            raise InvalidRequestError(f"exclude_offer_ids[{i}]: longer than {MAX_ID_BYTES} bytes")
    validate_context(question.context)
    return limit
