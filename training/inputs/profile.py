"""The data profile of a run, and the checks that keep degenerate data from replacing a model.

Framed as TensorFlow Data Validation frames it: statistics of the data (here, the *profile*:
rows per table, customers and interactions per segment, the event mix, the time range, the share
of bad rows), expectations every data set must meet (TFDV's schema; here absolute minimums), and
a drift comparator against the previous span (here the active version's profile, stored in its
metadata), with the L-infinity distance for a categorical distribution (the event mix), TFDV's
choice. TFDV (TensorFlow + Apache Beam) and Great Expectations (dozens of dependencies) are far
heavier than the five statistics needed, so this is plain numpy over arrays the job already has.

Pure: profiles are JSON-ready dicts; checks are ``Check`` values the report shows side by side.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from recsvc.core.model import STRATEGY_BLENDED, STRATEGY_PERSONALIZED
from training.config import EVENTS, Checks
from training.inputs.data import Dataset

PROFILE_FORMAT = 1
TABLES = ("customers", "offers", "interactions")


@dataclass(frozen=True)
class Check:
    """One comparison: what the active version's data had, what the new data has."""

    name: str
    passed: bool
    message: str
    active: Any = None
    new: Any = None
    limit: Any = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_profile(data: Dataset, paths: dict[str, str]) -> dict[str, Any]:
    """The profile of validated input (call before the interaction arrays are dropped).

    ``paths`` maps each table name to its file, to count bad rows per table.
    """
    n_segments = len(data.segment_names)
    segment_of_row = data.customer_segment[data.customer]
    interactions = np.bincount(segment_of_row, minlength=n_segments)
    customers = np.bincount(data.customer_segment, minlength=n_segments)
    active_customers = np.bincount(data.customer_segment[np.unique(data.customer)],
                                   minlength=n_segments)
    events = np.bincount(data.event, minlength=len(EVENTS))
    bad = {table: data.bad.in_file(paths[table]) for table in TABLES}
    return {
        "format": PROFILE_FORMAT,
        "rows": dict(data.rows_read),
        "bad_rows": bad,
        "bad_row_share": {t: _share(bad[t], data.rows_read.get(t, 0)) for t in TABLES},
        "invalid_values": {kind: count for (_, kind), (count, _)
                           in data.invalid_values.entries.items()},
        "customers": len(data.customer_segment),
        "offers": len(data.offers),
        "interactions": len(data.customer),
        "segments": {name: {"customers": int(customers[s]),
                            "customers_with_interactions": int(active_customers[s]),
                            "interactions": int(interactions[s])}
                     for s, name in enumerate(data.segment_names)},
        "events": {name: int(events[e]) for e, name in enumerate(EVENTS)},
        "time_range": None if not len(data.ts) else
        {"first": _iso(float(data.ts.min())), "last": _iso(float(data.ts.max()))},
    }


def bad_row_problems(profile: dict[str, Any], max_share: float) -> list[str]:
    """Tables whose share of bad rows is above ``max_share``."""
    return [f"{table}: {profile['bad_rows'][table]:,} of {profile['rows'][table]:,} rows bad "
            f"({share:.2%}, more than max_bad_row_share {max_share:.2%})"
            for table, share in profile["bad_row_share"].items() if share > max_share]


def check_data(profile: dict[str, Any], active: dict[str, Any] | None,
               limits: Checks) -> list[Check]:
    """Absolute minimums, then (when the active version has a profile) the comparison with it.

    ``active`` is the active version's metadata (its ``data_profile`` and segment strategies).
    """
    checks = [Check("min_interactions", profile["interactions"] >= limits.min_interactions,
                    f"{profile['interactions']:,} usable interactions (at least "
                    f"{limits.min_interactions:,} needed)", None, profile["interactions"],
                    limits.min_interactions)]
    before = (active or {}).get("data_profile")
    if not before or before.get("format") != PROFILE_FORMAT:
        return checks
    checks.extend(_vanished_segments(before, profile))
    old, new = before["interactions"], profile["interactions"]
    floor = old * (1 - limits.max_interaction_drop)
    drop = 1 - new / old if old else 0.0
    checks.append(Check("interaction_drop", new >= floor,
                        f"interactions {old:,} -> {new:,} ({-drop:+.1%}; a fall of more than "
                        f"{limits.max_interaction_drop:.0%} is refused)", old, new,
                        limits.max_interaction_drop))
    shift, event = event_mix_shift(before["events"], profile["events"])
    checks.append(Check("event_mix_shift", shift <= limits.max_event_mix_shift,
                        f"event mix moved by {shift:.3f} (largest change: {event}; limit "
                        f"{limits.max_event_mix_shift})", event_shares(before["events"]),
                        event_shares(profile["events"]), limits.max_event_mix_shift))
    for name in personalized_segments(active or {}):
        had = before["segments"].get(name, {}).get("interactions", 0)
        has = profile["segments"].get(name, {}).get("interactions", 0)
        checks.append(Check(f"segment_interactions:{name}",
                            has >= limits.min_segment_interactions,
                            f"personalized segment {name}: {had:,} -> {has:,} interactions "
                            f"(at least {limits.min_segment_interactions:,} needed)", had, has,
                            limits.min_segment_interactions))
    return checks


def _vanished_segments(before: dict[str, Any], profile: dict[str, Any]) -> list[Check]:
    checks = []
    for name, old in before["segments"].items():
        if not old.get("customers"):
            continue
        now = profile["segments"].get(name, {}).get("customers", 0)
        checks.append(Check(f"segment_present:{name}", now > 0,
                            f"segment {name}: {old['customers']:,} -> {now:,} customers"
                            + ("" if now else " (vanished)"), old["customers"], now))
    return checks


def event_shares(counts: dict[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {e: round(counts.get(e, 0) / total, 4) if total else 0.0 for e in counts}


def event_mix_shift(before: dict[str, int], after: dict[str, int]) -> tuple[float, str]:
    """L-infinity distance between two event distributions, and the event that moved most."""
    old, new = event_shares(before), event_shares(after)
    if not sum(before.values()) or not sum(after.values()):
        return (0.0, "-") if sum(before.values()) == sum(after.values()) else (1.0, "all")
    moves = {e: abs(new.get(e, 0.0) - old.get(e, 0.0)) for e in {*old, *new}}
    event = max(sorted(moves), key=lambda e: moves[e])
    return round(moves[event], 4), event


def personalized_segments(meta: dict[str, Any]) -> list[str]:
    """Segments a version serves with a model (alone or blended with popularity)."""
    return [s["name"] for s in meta.get("segments", [])
            if s.get("strategy") in (STRATEGY_PERSONALIZED, STRATEGY_BLENDED)]


def _share(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


def _iso(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):
        return f"{seconds:.0f} s"
