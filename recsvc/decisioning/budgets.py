"""Offer budgets: the spec format and the pure exhaustion check (counting is Redis's, atomic).

A budget lives in the ``{p}:budgets`` hash (docs/DESIGN.md section 6): field ``<offer>`` holds
the JSON spec, and the counters sit beside it::

    <offer>                -> {"count": "serve" | "accept", "total": 1000,
                               "per_day": 100, "per_segment": {"at_risk": 300}}
    <offer>:used           -> units used in all
    <offer>:used:d:<YYYYMMDD> (UTC day)   <offer>:used:s:<segment>
    ~rev                   -> bumped whenever a spec changes or an offer runs out

``count = "serve"``: a unit is one answer that presented the offer, reserved atomically before
the answer (store/control/budgets.py's reserve script). ``count = "accept"``: a unit is one
accept or redeem (a voucher), counted by the RecordFeedback script. Any of total, per_day,
per_segment may be left out; an exhausted offer is removed (rule ``budget``) on every replica
within a poll.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

SERVE, ACCEPT = "serve", "accept"
REV_FIELD = "~rev"


@dataclass(frozen=True)
class BudgetSpec:
    count: str = SERVE
    total: int | None = None
    per_day: int | None = None
    per_segment: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, offer_id: str, raw: Mapping[str, Any]) -> BudgetSpec:
        """ValueError naming the offer and the key for anything wrong (negative, unknown)."""
        unknown = set(raw) - {"count", "total", "per_day", "per_segment"}
        if unknown:
            raise ValueError(f"budget of offer {offer_id!r}: unknown key(s) {sorted(unknown)}")
        count = str(raw.get("count", SERVE))
        if count not in (SERVE, ACCEPT):
            raise ValueError(f"budget of offer {offer_id!r}: count must be 'serve' or 'accept'")

        def units(value: Any, what: str) -> int | None:
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or int(value) != value or value < 0:
                raise ValueError(f"budget of offer {offer_id!r}: {what} must be a whole "
                                 f"number >= 0, got {value!r}")
            return int(value)

        per_segment_raw = raw.get("per_segment") or {}
        if not isinstance(per_segment_raw, Mapping):
            raise ValueError(f"budget of offer {offer_id!r}: per_segment must be an object")
        per_segment = {str(k): units(v, f"per_segment.{k}") or 0
                       for k, v in per_segment_raw.items()}
        spec = cls(count, units(raw.get("total"), "total"), units(raw.get("per_day"), "per_day"),
                   per_segment)
        if spec.total is None and spec.per_day is None and not spec.per_segment:
            raise ValueError(f"budget of offer {offer_id!r}: give total, per_day or per_segment")
        return spec

    def as_json(self) -> str:
        body: dict[str, Any] = {"count": self.count}
        if self.total is not None:
            body["total"] = self.total
        if self.per_day is not None:
            body["per_day"] = self.per_day
        if self.per_segment:
            body["per_segment"] = dict(self.per_segment)
        return json.dumps(body, sort_keys=True)


def day_of(now: float) -> str:
    return time.strftime("%Y%m%d", time.gmtime(now))


@dataclass(frozen=True)
class BudgetState:
    """Every spec and which offers are out of units, as of one read of ``{p}:budgets``."""

    specs: Mapping[str, BudgetSpec] = field(default_factory=dict)
    exhausted: frozenset[str] = frozenset()  # in every segment
    exhausted_in: Mapping[str, frozenset[str]] = field(default_factory=dict)  # segment -> offers
    day: str = ""
    rev: int = 0

    def on_serve(self) -> frozenset[str]:
        return frozenset(o for o, s in self.specs.items() if s.count == SERVE)

    @cached_property
    def on_accept(self) -> tuple[tuple[str, bool], ...]:
        """The on-accept budgeted offers, sorted, each with whether it has a daily limit: what
        the feedback script counts on a Redis Cluster (docs/DESIGN.md section 6)."""
        return on_accept_of(self.specs)


def on_accept_of(specs: Mapping[str, BudgetSpec]) -> tuple[tuple[str, bool], ...]:
    return tuple(sorted((o, s.per_day is not None) for o, s in specs.items() if s.count == ACCEPT))


def use_fields(specs: Mapping[str, BudgetSpec], day: str) -> list[str]:
    """The counter fields of the on-accept budgets that decide exhaustion on ``day``: what the
    watcher sums over a cluster's 64 shard counter hashes."""
    fields: list[str] = []
    for offer, spec in sorted(specs.items()):
        if spec.count != ACCEPT:
            continue
        fields.append(f"{offer}:used")
        if spec.per_day is not None:
            fields.append(f"{offer}:used:d:{day}")
        fields += [f"{offer}:used:s:{segment}" for segment in sorted(spec.per_segment)]
    return fields


def with_use(fields_: Mapping[str, str], use: Mapping[str, int]) -> dict[str, str]:
    """The budgets hash with the shard counters ``use`` (field -> summed units) added to its own
    counters: on a cluster, on-accept units are counted per shard (docs/DESIGN.md section 6)."""
    if not use:
        return dict(fields_)
    merged = dict(fields_)
    for name, units in use.items():
        try:
            own = int(merged.get(name, "0"))
        except ValueError:
            own = 0
        merged[name] = str(own + units)
    return merged


def budget_state(fields_: Mapping[str, str], now: float) -> BudgetState:
    """From the whole hash (decoded): specs, and offers whose counters reached a limit today.

    A spec that does not parse is logged by the caller and treated as exhausted (never as
    unlimited).
    """
    day = day_of(now)
    specs: dict[str, BudgetSpec] = {}
    exhausted: set[str] = set()
    by_segment: dict[str, set[str]] = {}
    for name, raw in fields_.items():
        if ":" in name or name == REV_FIELD:
            continue
        try:
            spec = BudgetSpec.parse(name, json.loads(raw))
        except (ValueError, TypeError):
            exhausted.add(name)
            continue
        specs[name] = spec

        def used(suffix: str, offer: str = name) -> int:
            try:
                return int(fields_.get(f"{offer}:used{suffix}", "0"))
            except ValueError:
                return 0

        if (spec.total is not None and used("") >= spec.total) or \
                (spec.per_day is not None and used(f":d:{day}") >= spec.per_day):
            exhausted.add(name)
        for segment, limit in spec.per_segment.items():
            if used(f":s:{segment}") >= limit:
                by_segment.setdefault(segment, set()).add(name)
    try:
        rev = int(fields_.get(REV_FIELD, "0"))
    except ValueError:
        rev = 0
    return BudgetState(specs, frozenset(exhausted),
                       {k: frozenset(v) for k, v in by_segment.items()}, day, rev)
