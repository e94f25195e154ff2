"""Customer attributes for decisioning: rule validation, the record's attributes section, and
the per-segment numbers serving's objective falls back on.

Published attributes: ``clv`` and ``churn_risk`` when the customers table has them (the
retention objective reads them, and it may be switched on at serve time), plus every extra
column an offer rule names. A column whose every non-empty value is a number is a number
(stored as f32 bits, NaN when empty); any other is a category (a u32 code into the version
meta's ``attribute_values`` table, 0xFFFFFFFF when empty). Rules are checked before anything
is fitted: an unknown attribute or a malformed rule fails the run naming the offer and the rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from recsvc.core.errors import DataError
from recsvc.decisioning.policy import Policy
from recsvc.decisioning.rules import CATEGORY, MISSING_CODE, NUMBER, RuleError, check_rule
from training.inputs.data import Dataset
from training.inputs.tables import parse_float, text
from training.matrix import Cells

ALWAYS = ("clv", "churn_risk")


@dataclass
class Attributes:
    names: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    values: dict[str, list[str]] = field(default_factory=dict)
    matrix: npt.NDArray[np.uint32] = field(
        default_factory=lambda: np.zeros((0, 0), dtype=np.uint32))  # customers x K

    def meta(self) -> dict[str, Any]:
        return {"attributes": [{"name": n, "kind": k}
                               for n, k in zip(self.names, self.kinds, strict=True)],
                "attribute_values": self.values}


def column_kinds(columns: dict[str, pa.Array]) -> dict[str, str]:
    """Number or category, per customer column."""
    kinds = {}
    for name, column in columns.items():
        table = pa.table({name: column})
        _, bad = parse_float(table, name)
        kinds[name] = CATEGORY if bad.any() else NUMBER
    return kinds


def check_rules(data: Dataset, kinds: dict[str, str]) -> set[str]:
    """Every offer's rule against the customer columns; returns the attributes rules read."""
    used: set[str] = set()
    problems = []
    for offer in data.offers:
        rule = str(offer.get("rule") or "").strip()
        if not rule:
            continue
        try:
            used |= check_rule(rule, kinds)
        except RuleError as exc:
            problems.append(f"offer {offer['offer_id']!r}: rule {rule!r}: {exc}")
    if problems:
        raise DataError("bad offer rule(s): " + "; ".join(problems)
                        + " (rules read columns of the customers table or context.<key>)")
    return used


def build(data: Dataset) -> Attributes:
    """Validate rules, then encode the published attributes (customers x K, u32)."""
    columns = data.customer_columns
    kinds = column_kinds(columns)
    used = check_rules(data, kinds)
    names = [n for n in ALWAYS if n in columns] + sorted(used - set(ALWAYS))
    n = len(data.customer_segment)
    matrix = np.zeros((n, len(names)), dtype=np.uint32)
    values: dict[str, list[str]] = {}
    for k, name in enumerate(names):
        table = pa.table({name: columns[name]})
        if kinds[name] == NUMBER:
            numbers, _ = parse_float(table, name)
            matrix[:, k] = numbers.astype(np.float32).view(np.uint32)
        else:
            strings = text(table, name)
            distinct = sorted(v for v in pc.unique(strings).to_pylist() if v)
            values[name] = distinct
            codes = pc.index_in(strings, value_set=pa.array(distinct, type=pa.string()))
            matrix[:, k] = np.asarray(pc.fill_null(codes, -1).to_numpy(zero_copy_only=False),
                                      dtype=np.int64).astype(np.uint32)
            matrix[:, k][np.asarray(pc.equal(strings, "").to_numpy(zero_copy_only=False))] = \
                MISSING_CODE
    return Attributes(names, [kinds[n] for n in names], values, matrix)


def segment_numbers(cells: Cells, attrs: Attributes) -> dict[str, float | None]:
    """The segment's base acceptance rate (share of its cells with an accept or redeem: the
    p_accept prior serving uses until a calibration is published) and mean clv / churn risk
    (what the retention objective uses for a customer without them)."""
    out: dict[str, float | None] = {
        "base_accept_rate": round(float(cells.accepted.mean()), 6) if len(cells.rows) else None}
    for name, key in (("clv", "mean_clv"), ("churn_risk", "mean_churn_risk")):
        out[key] = None
        if name in attrs.names and len(cells.customers):
            column = attrs.matrix[cells.customers, attrs.names.index(name)].view(np.float32)
            finite = column[np.isfinite(column)]
            out[key] = round(float(finite.mean()), 6) if len(finite) else None
    return out


def decisioning_meta(raw: dict[str, Any]) -> dict[str, Any]:
    """The validated ``[decisioning]`` section as the version meta keeps it."""
    try:
        return Policy.from_dict(raw).as_dict()
    except ValueError as exc:
        raise DataError(f"bad training config: {exc}") from None


def extend_meta(meta: dict[str, Any], attrs: Attributes, cells: list[Cells],
                decisioning: dict[str, Any]) -> dict[str, Any]:
    """The version meta with what decisioning reads: attribute schema and value tables, the
    validated ``[decisioning]`` settings, per segment the base rate and means."""
    meta.update(attrs.meta())
    meta["decisioning"] = decisioning_meta(decisioning)
    for segment, segment_cells in zip(meta["segments"], cells, strict=True):
        segment.update(segment_numbers(segment_cells, attrs))
    return meta
