"""An offer's display fields: what an agent's screen shows beside the title (pure).

Optional everywhere they appear: columns of the offers table, keys of the published catalogue
JSON, live overrides (``recsvc offers set``) and fields of ``RankedOffer``. One set of checks
here serves training (an invalid value is read as missing and reported with its row) and the
live admin (refused naming the offer and the field). A version published before these fields
existed simply has none: its offers are served without them.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any, TypedDict, cast
from urllib.parse import urlsplit

DESCRIPTION = "description"
IMAGE_URL = "image_url"
ACCEPT_LABEL = "accept_label"
DECLINE_LABEL = "decline_label"
DISPLAY_FIELDS = (DESCRIPTION, IMAGE_URL, ACCEPT_LABEL, DECLINE_LABEL)
# Characters, not bytes. A label is a button's text: short, one line.
MAX_CHARS = {DESCRIPTION: 1000, IMAGE_URL: 2048, ACCEPT_LABEL: 40, DECLINE_LABEL: 40}
_MULTILINE = frozenset({DESCRIPTION})  # the only field where a newline or tab is allowed


class Display(TypedDict, total=False):
    """The display fields an offer has (keyword arguments of a RankedOffer as they are)."""

    description: str
    image_url: str
    accept_label: str
    decline_label: str


def problem(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for the display field ``name``; None when it is fine.

    The empty string is fine (no value). The message does not repeat the value.
    """
    if name not in MAX_CHARS:
        raise KeyError(name)
    if not isinstance(value, str):
        return "must be text"
    if len(value) > MAX_CHARS[name]:
        return f"must be at most {MAX_CHARS[name]} characters, got {len(value)}"
    allowed = "\n\t" if name in _MULTILINE else ""
    if any(unicodedata.category(c) == "Cc" and c not in allowed for c in value):
        return ("must not hold control characters" if allowed
                else "must be one line without control characters")
    if name == IMAGE_URL and value:
        return _url_problem(value)
    return None


def _url_problem(value: str) -> str | None:
    if any(c.isspace() for c in value):
        return "must be an http:// or https:// URL without spaces"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        return "must be an http:// or https:// URL"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host (e.g. https://cdn.example.com/a.png)"
    return None


def quoted(value: Any, limit: int = 60) -> str:
    """A value for an error message, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def display_of(offer: Mapping[str, Any]) -> Display:
    """The display fields of a catalogue entry that hold a valid, non-empty value.

    What serving adds to a RankedOffer. A stored value that fails the checks (written by hand
    into Redis, say) is left out rather than served.
    """
    shown = {}
    for name in DISPLAY_FIELDS:
        value = offer.get(name)
        if value and problem(name, value) is None:
            shown[name] = str(value)
    return cast(Display, shown)
