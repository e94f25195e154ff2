"""A campaign's on-serve budgets allocated by value across every customer. Pure.

Serving grants budget units first come, first served (the reserve script walks one answer's
candidates). A campaign knows every customer's candidates at once, so it allocates by value:
all candidate (customer, offer) pairs sorted by objective, best first; a budgeted offer is
granted while it has units left (in total, today and in the customer's segment) and the
customer has a free slot; a customer that loses a budgeted offer gets their next candidate.
Unbudgeted offers always take a free slot. Each customer's answer keeps their own rank order,
so with no budget in short supply it is exactly serving's answer.

Pairs are given sorted by customer, then rank. A pair's allocation key is the lowest objective
of its customer's ranks up to it, so within a customer the key never rises along the ranks
(an explored or random-baseline answer is not sorted by objective) and a customer's pairs are
considered in rank order. Only budgeted pairs go through the Python loop.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recsvc.decisioning.budgets import SERVE, BudgetSpec

BOOL = npt.NDArray[np.bool_]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Units:
    """On-serve units left: per offer (None = no total or daily limit) and per (offer, segment)."""

    offer: Mapping[str, int | None]
    segment: Mapping[tuple[str, str], int]


def units_left(fields: Mapping[str, str], day: str) -> Units:
    """From the ``{p}:budgets`` hash (decoded): units each on-serve offer has left today. A spec
    that does not parse has none (as serving treats it: exhausted)."""
    offer: dict[str, int | None] = {}
    segment: dict[tuple[str, str], int] = {}
    for name, raw in fields.items():
        if ":" in name or name.startswith("~"):
            continue
        try:
            spec = BudgetSpec.parse(name, json.loads(raw))
        except (ValueError, TypeError):
            offer[name] = 0
            continue
        if spec.count != SERVE:
            continue

        def used(suffix: str, name: str = name) -> int:
            try:
                return int(fields.get(f"{name}:used{suffix}", "0"))
            except ValueError:
                return 0

        left = [limit - used(suffix) for limit, suffix in
                ((spec.total, ""), (spec.per_day, f":d:{day}")) if limit is not None]
        offer[name] = max(0, min(left)) if left else None
        for seg, limit in spec.per_segment.items():
            segment[(name, seg)] = max(0, limit - used(f":s:{seg}"))
    return Units(offer, segment)


@dataclass(frozen=True)
class Allocation:
    taken: BOOL  # the pair is in its customer's answer
    granted: BOOL  # a budgeted pair that got a unit (taken too)


def allocate(customer: I64, objective: npt.NDArray[np.float64], offer: list[str],
             offer_code: I64, segment: list[str], segment_code: I64, budgeted: BOOL,
             limit: int, units: Units, forced: BOOL | None = None,
             banned: BOOL | None = None) -> Allocation:
    """``customer``, ``objective``, ``offer_code`` (into ``offer``), ``segment_code`` (into
    ``segment``), ``budgeted``: one entry per candidate pair, sorted by customer then rank.
    ``forced``: budgeted pairs already holding a reserved unit (granted without using one);
    ``banned``: budgeted pairs refused a unit (never granted)."""
    n = len(customer)
    forced = np.zeros(n, dtype=bool) if forced is None else forced
    banned = np.zeros(n, dtype=bool) if banned is None else banned
    starts = _group_starts(customer)
    free = (~budgeted).astype(np.int64)
    free_before = _cumsum_within(free, starts) - free
    granted = np.zeros(n, dtype=bool)
    contenders = np.flatnonzero(budgeted & ~banned & (free_before < limit))
    if len(contenders):
        key = _running_min(objective, starts)
        order = contenders[np.lexsort((contenders, -key[contenders]))]
        left = dict(units.offer)
        left_in = dict(units.segment)
        taken_by: dict[int, int] = {}
        customers, offers, segments = customer.tolist(), offer_code.tolist(), \
            segment_code.tolist()
        before = free_before.tolist()
        forced_list = forced.tolist()
        for p in order.tolist():
            c = customers[p]
            if before[p] + taken_by.get(c, 0) >= limit:
                continue
            if not forced_list[p]:
                name = offer[offers[p]]
                total = left.get(name)
                seg_key = (name, segment[segments[p]])
                seg_left = left_in.get(seg_key)
                if (total is not None and total <= 0) or (seg_left is not None and seg_left <= 0):
                    continue
                if total is not None:
                    left[name] = total - 1
                if seg_left is not None:
                    left_in[seg_key] = seg_left - 1
            granted[p] = True
            taken_by[c] = taken_by.get(c, 0) + 1
    usable = (~budgeted | granted).astype(np.int64)
    taken = (usable == 1) & (_cumsum_within(usable, starts) - usable < limit)
    return Allocation(taken, granted & taken)


def _group_starts(customer: I64) -> I64:
    """For each pair, the index of its customer's first pair."""
    n = len(customer)
    if not n:
        return np.empty(0, dtype=np.int64)
    first = np.ones(n, dtype=bool)
    first[1:] = customer[1:] != customer[:-1]
    return np.maximum.accumulate(np.where(first, np.arange(n), 0))


def _cumsum_within(values: I64, starts: I64) -> I64:
    total = np.cumsum(values)
    before_group = total[starts] - values[starts]
    result: I64 = total - before_group
    return result


def _running_min(values: npt.NDArray[np.float64], starts: I64) -> npt.NDArray[np.float64]:
    """Per pair, the minimum of its customer's values up to it (ranks before and itself)."""
    out = values.copy()
    for i in np.flatnonzero(np.diff(out) > 0) + 1:  # rare: only where a value rises
        if starts[i] != i:
            out[i] = min(out[i], out[i - 1])
            j = i + 1
            while j < len(out) and starts[j] == starts[i] and out[j] > out[j - 1]:
                out[j] = out[j - 1]
                j += 1
    return out
