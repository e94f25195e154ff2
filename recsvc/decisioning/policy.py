"""Contact policy and suppression: the decisioning configuration and pure checks on live state.

The configuration is the ``[decisioning]`` section of the training config (kept in the version's
meta, validated at training and again at load time)::

    [decisioning]
    objective = "relevance"          # relevance | expected_value | retention (objective.py)
    new_offer_prior = 0.0            # p_accept of an offer added live; 0 = segment base rate
    [decisioning.segment_levers]     # per-segment multiplier of the objective (> 0)
    at_risk = 1.5
    [decisioning.contacts]
    count_on = "impression"          # what is a contact: "impression" (reported back through
                                     # RecordFeedback) or "serve" (every answer with offers)
    max_per_window = 0               # contacts per customer and channel per window; 0 = no cap
    window_days = 7.0
    exempt_channels = []             # channels never capped
    exempt_types = ["transactional"] # offer types (the offers table's `type`) never capped
    keep = 20                        # contact times kept per channel in the live hash
    [decisioning.suppression]
    declines = 1                     # suppressed after this many declines ... (0 = never)
    ignored = 3                      # ... or this many ignored impressions (0 = never)
    days = 30.0                      # ... for this many days after the last one

Why contacts count on impression by default: an answer is not a contact (a campaign tool may
ask for thousands and send none); what was shown is, and RecordFeedback says so. "serve" is for
callers that show every answer and report nothing back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from recsvc.decisioning.objective import OBJECTIVES, RELEVANCE

DAY = 86_400.0
COUNT_ON = ("impression", "serve")


@dataclass(frozen=True)
class Contacts:
    count_on: str = "impression"
    max_per_window: int = 0
    window_days: float = 7.0
    exempt_channels: tuple[str, ...] = ()
    exempt_types: tuple[str, ...] = ("transactional",)
    keep: int = 20


@dataclass(frozen=True)
class Suppression:
    declines: int = 1
    ignored: int = 3
    days: float = 30.0


@dataclass(frozen=True)
class Policy:
    objective: str = RELEVANCE
    new_offer_prior: float = 0.0
    segment_levers: Mapping[str, float] = field(default_factory=dict)
    contacts: Contacts = field(default_factory=Contacts)
    suppression: Suppression = field(default_factory=Suppression)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> Policy:
        """Validated; ValueError lists every problem with its key."""
        raw = dict(raw or {})
        problems: list[str] = []
        known = {f.name for f in fields(cls)}
        for key in sorted(set(raw) - known):
            problems.append(f"[decisioning] unknown key {key!r}")
        contacts = _section(Contacts, raw.get("contacts"), "contacts", problems)
        suppression = _section(Suppression, raw.get("suppression"), "suppression", problems)
        objective = str(raw.get("objective", RELEVANCE))
        if objective not in OBJECTIVES:
            problems.append(f"[decisioning] objective must be one of {list(OBJECTIVES)}, "
                            f"not {objective!r}")
        prior = _number(raw.get("new_offer_prior", 0.0), "[decisioning] new_offer_prior",
                        problems)
        if not 0 <= prior < 1:
            problems.append("[decisioning] new_offer_prior must lie in [0, 1)")
        levers: dict[str, float] = {}
        for name, lever in dict(raw.get("segment_levers") or {}).items():
            value = _number(lever, f"[decisioning.segment_levers] {name}", problems)
            if not value > 0:
                problems.append(f"[decisioning.segment_levers] {name} must be > 0")
            levers[str(name)] = value
        if contacts.count_on not in COUNT_ON:
            problems.append(f"[decisioning.contacts] count_on must be one of {list(COUNT_ON)}")
        if contacts.max_per_window < 0 or contacts.window_days <= 0 or contacts.keep < 1:
            problems.append("[decisioning.contacts] needs max_per_window >= 0, window_days > 0 "
                            "and keep >= 1")
        if contacts.max_per_window > contacts.keep:
            problems.append("[decisioning.contacts] keep must be >= max_per_window")
        if suppression.declines < 0 or suppression.ignored < 0 or suppression.days < 0:
            problems.append("[decisioning.suppression] declines, ignored and days must be >= 0")
        if problems:
            raise ValueError("; ".join(problems))
        return cls(objective, prior, levers, contacts, suppression)

    def as_dict(self) -> dict[str, Any]:
        return {"objective": self.objective, "new_offer_prior": self.new_offer_prior,
                "segment_levers": dict(self.segment_levers),
                "contacts": {f.name: _plain(getattr(self.contacts, f.name))
                             for f in fields(self.contacts)},
                "suppression": {f.name: getattr(self.suppression, f.name)
                                for f in fields(self.suppression)}}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _number(raw: Any, name: str, problems: list[str]) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        problems.append(f"{name} must be a number, not {raw!r}")
        return 1.0
    if not math.isfinite(value):
        problems.append(f"{name} must be finite")
        return 1.0
    return value


def _section(cls: type[Any], raw: Any, name: str, problems: list[str]) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        problems.append(f"[decisioning.{name}] must be a table")
        return cls()
    defaults = cls()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in {f.name for f in fields(cls)}:
            problems.append(f"[decisioning.{name}] unknown key {key!r}")
            continue
        default = getattr(defaults, key)
        try:
            if isinstance(default, tuple):
                if not isinstance(value, list | tuple):
                    raise TypeError
                values[key] = tuple(str(v) for v in value)
            elif isinstance(default, bool | str):
                values[key] = str(value)
            elif isinstance(default, int):
                if isinstance(value, bool) or int(value) != value:
                    raise TypeError
                values[key] = int(value)
            else:
                values[key] = float(value)
        except (TypeError, ValueError):
            problems.append(f"[decisioning.{name}] {key} has the wrong type: {value!r}")
    return cls(**values)


# ---------------------------------------------------------------------------- live state checks

@dataclass(frozen=True)
class LiveView:
    """What the customer's live hash says about this decision (offer ids, not indices)."""

    accepted: frozenset[str] = frozenset()
    suppressed: Mapping[str, str] = field(default_factory=dict)  # offer -> detail
    contacts_in_window: int = 0
    segment: str = ""


NOTHING_LIVE = LiveView()


def _count_last(raw: bytes) -> tuple[int, float]:
    parts = raw.split()
    try:
        return int(parts[0]), float(parts[1]) if len(parts) > 1 else 0.0
    except (ValueError, IndexError):
        return 0, 0.0


def read_live(fields_: Mapping[bytes, bytes], now: float, channel: str,
              policy: Policy) -> LiveView:
    """Accepted offers, suppressed offers and recent contacts on ``channel`` from the live hash
    (``a:``, ``d:``, ``n:``, ``c:``, ``seg`` fields of docs/DESIGN.md section 6)."""
    if not fields_:
        return NOTHING_LIVE
    accepted: set[str] = set()
    suppressed: dict[str, str] = {}
    contacts = 0
    segment = ""
    rule = policy.suppression
    horizon = now - rule.days * DAY
    window_start = now - policy.contacts.window_days * DAY
    contact_field = b"c:" + channel.encode() if channel else None
    for name, value in fields_.items():
        kind = name[:2]
        if kind == b"a:":
            accepted.add(name[2:].decode())
        elif kind in (b"d:", b"n:"):
            limit = rule.declines if kind == b"d:" else rule.ignored
            if limit <= 0:
                continue
            count, last = _count_last(value)
            if count >= limit and last > horizon:
                what = "declines" if kind == b"d:" else "ignored impressions"
                suppressed[name[2:].decode()] = (
                    f"{count} {what}, the last {(now - last) / DAY:.1f} days ago "
                    f"(suppressed {rule.days:g} days after {limit})")
        elif name == contact_field:
            contacts = sum(1 for t in value.split() if _float(t) > window_start)
        elif name == b"seg":
            segment = value.decode()
    return LiveView(frozenset(accepted), suppressed, contacts, segment)


def _float(raw: bytes) -> float:
    try:
        return float(raw)
    except ValueError:
        return -math.inf


def contact_capped(view: LiveView, channel: str, policy: Policy) -> bool:
    """True when the customer had ``max_per_window`` contacts on ``channel`` in the window."""
    cap = policy.contacts.max_per_window
    return bool(cap and channel and channel not in policy.contacts.exempt_channels
                and view.contacts_in_window >= cap)
