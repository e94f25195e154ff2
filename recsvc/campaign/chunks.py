"""Deciding one chunk of a campaign's customers: the vectorized front for the plain cases,
serving's decision core (``DecisionCore.decided``) one by one for every other customer.

A customer is decided in bulk (``decisioning/batch.py``, per segment) when serving would decide
them with nothing beyond the record: the record decodes, the live hash is empty (no accepts,
suppression, contacts, fold-in record or segment), not on the do-not-contact list, the holdout
keeps them in treatment, the running experiment does not route them, and they do not explore.
Everyone else (unknown customers, corrupt records, live state, control, challenger, exploring)
goes through ``DecisionCore.decided`` exactly as a Recommend would.

Every answer becomes candidate pairs (customer, rank, offer, p_accept, objective, value, cost,
reason codes) in flat arrays, plus codes per customer (segment, strategy, arm, reason).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from recsvc.core.bulk_records import Records, decode_many
from recsvc.core.model import STRATEGY_POPULAR
from recsvc.core.schema import CustomerRecord
from recsvc.decisioning import objective as obj
from recsvc.decisioning.batch import Rows, decide_rows, width_of
from recsvc.decisioning.decide import RETENTION_REASON, Ask
from recsvc.decisioning.decider import PERSONAL_REASON, POPULAR_REASON, Decider, SegmentTables
from recsvc.experiments.arms import CONTROL, TREATMENT
from recsvc.serving.deciding import SEGMENT_POPULAR, Answer, DecisionCore, segment_strategy
from recsvc.serving.holder import Challenger

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


class Vocabulary:
    """Strings of one kind (offer ids, reasons, ...) and their codes, in first-seen order."""

    def __init__(self, first: Sequence[str] = ()) -> None:
        self.words: list[str] = []
        self._code: dict[str, int] = {}
        for word in first:
            self.code(word)

    def code(self, word: str) -> int:
        found = self._code.get(word)
        if found is None:
            found = self._code[word] = len(self.words)
            self.words.append(word)
        return found


# Candidate pairs: customer (campaign row), rank, offer code, p_accept, objective, value, cost,
# reason codes; a block is sorted by customer, then rank.
Block = tuple[I64, I64, I64, F64, F64, F64, F64, I64]


@dataclass
class Collected:
    """Everything decided so far: candidate pairs (in chunks) and per-customer codes."""

    size: int
    offers: Vocabulary = field(default_factory=Vocabulary)
    segments: Vocabulary = field(default_factory=Vocabulary)
    strategies: Vocabulary = field(default_factory=Vocabulary)
    arms: Vocabulary = field(default_factory=Vocabulary)
    reasons: Vocabulary = field(default_factory=lambda: Vocabulary([""]))
    pairs: list[Block] = field(default_factory=list)
    segment: I64 = field(init=False)
    strategy: I64 = field(init=False)
    arm: I64 = field(init=False)
    reason: I64 = field(init=False)
    known: npt.NDArray[np.bool_] = field(init=False)
    challenger: npt.NDArray[np.bool_] = field(init=False)  # answered by the challenger
    explored: npt.NDArray[np.bool_] = field(init=False)
    propensity: F64 = field(init=False)  # of every greedy pick (1 without exploration)
    # One-by-one answers: their per-candidate propensities and shadow (logged as serving does).
    singles: dict[int, tuple[list[float], tuple[str, tuple[str, ...]]]] = \
        field(default_factory=dict)
    one_by_one: int = 0

    def __post_init__(self) -> None:
        n = self.size
        self.segment, self.strategy, self.arm, self.reason = (
            np.zeros(n, np.int64) for _ in range(4))
        self.known, self.challenger, self.explored = (np.zeros(n, bool) for _ in range(3))
        self.propensity = np.ones(n)


class ChunkDecider:
    """Decides chunks with one lineup (champion decider, challenger) and one question."""

    def __init__(self, core: DecisionCore, d: Decider, challenger: Challenger | None,
                 limit: int, now: float, channel: str, context: Mapping[str, str],
                 out: Collected) -> None:
        self.core, self.d, self.challenger = core, d, challenger
        self.limit, self.now, self.channel, self.context = limit, now, channel, context
        self.out = out
        self._codes: dict[int, I64] = {}  # id(decider) -> catalogue index -> offer code
        self._reason_codes: dict[tuple[int, str, bool], I64] = {}
        self._factors = [s.factor_count for s in d.base.segments]
        self._draw = random.Random().random

    def codes_of(self, d: Decider) -> I64:
        codes = self._codes.get(id(d))
        if codes is None:
            codes = self._codes[id(d)] = np.array(
                [self.out.offers.code(o) for o in d.model.catalogue.offer_ids], dtype=np.int64)
        return codes

    def decide(self, offset: int, ids: Sequence[str], raws: Sequence[bytes | None],
               lives: Sequence[dict[bytes, bytes]], challenger_raws: Sequence[bytes | None]
               ) -> Block | None:
        """Decide customers ``offset .. offset + len(ids)`` of the campaign; their candidate
        pairs as one block (None: no customer has a candidate)."""
        d, core = self.d, self.core
        records = decode_many(raws, self._factors, len(d.base.catalogue.offer_ids))
        epsilon = core.epsilon
        explore = [epsilon > 0 and self._draw() < epsilon for _ in ids] if epsilon > 0 \
            else None
        bulk = records.ok.copy()
        bulk &= np.fromiter((not live for live in lives), dtype=bool, count=len(ids))
        if d.dnc:
            bulk &= np.fromiter((c not in d.dnc for c in ids), dtype=bool, count=len(ids))
        if explore is not None:
            bulk &= ~np.asarray(explore, dtype=bool)
        routed = self.challenger
        if routed is not None:
            bulk &= np.fromiter((not (routed.serves(c) or routed.shadows(c)) for c in ids),
                                dtype=bool, count=len(ids))
        if core.holdout.active:
            names = [s.name for s in d.base.segments]
            for i in np.flatnonzero(bulk).tolist():
                if core.holdout.arm(ids[i], names[records.segment[i]]) == CONTROL:
                    bulk[i] = False
        first_bulk = len(self.out.pairs)
        for index, segment in enumerate(d.base.segments):
            mine = bulk & (records.segment == index)
            personal = mine & (records.factors > 0) & (segment.strategy != STRATEGY_POPULAR)
            for rows, by_model in ((np.flatnonzero(personal), True),
                                   (np.flatnonzero(mine & ~personal), False)):
                if len(rows):
                    self._bulk(offset, rows, records, index, by_model)
        for i in np.flatnonzero(~bulk).tolist():
            ask = Ask(ids[i], self.limit, self.now, self.channel, (), self.context, False,
                      epsilon, bool(explore[i]) if explore is not None else False)
            answering, answer = core.decided(d, ask, "", (raws[i], lives[i],
                                                          challenger_raws[i]), routed)
            self._single(offset + i, answering, answer,
                         raws[i] if answering is d else challenger_raws[i])
        return self._sort_since(first_bulk)

    def _sort_since(self, first: int) -> Block | None:
        """This chunk's pairs as one block sorted by customer, then rank (chunks come in
        customer order, so the blocks concatenated are sorted too)."""
        pairs = self.out.pairs
        if len(pairs) <= first:
            return None
        columns = [np.concatenate(c) for c in zip(*pairs[first:], strict=True)]
        # One integer key; the pairs come in long sorted runs, which a stable sort merges.
        key = columns[0] * (int(columns[1].max(initial=0)) + 1) + columns[1]
        order = np.argsort(key, kind="stable")
        block: Block = tuple(c[order] for c in columns)  # type: ignore[assignment]
        del pairs[first:]
        pairs.append(block)
        return block

    def _bulk(self, offset: int, rows: npt.NDArray[np.intp], records: Records, index: int,
              by_model: bool) -> None:
        d, out = self.d, self.out
        tables = d.segments[index]
        size = len(d.schema.names)
        vectors = records.vectors(rows, self._factors[index]) if by_model else None
        attributes = records.attributes(rows, size) \
            if tables.has_rules or d.objective == obj.RETENTION else None
        width = width_of(tables, self.limit)
        result = decide_rows(d, tables, vectors, len(rows), records.accepted(rows), attributes,
                             self.now, self.channel, self.context, width)
        customers = offset + rows
        kind = PERSONAL_REASON if by_model else POPULAR_REASON
        self._pairs(customers, result, tables, kind)
        probe = CustomerRecord(index, np.zeros(self._factors[index] if by_model else 0,
                                               np.float32), np.zeros(0, np.uint32))
        strategy, reason = segment_strategy(d.base.segments[index], probe)
        assert by_model or strategy == SEGMENT_POPULAR
        out.segment[customers] = out.segments.code(tables.model.name)
        out.strategy[customers] = out.strategies.code(strategy)
        out.arm[customers] = out.arms.code(TREATMENT)
        out.reason[customers] = out.reasons.code(reason)
        out.known[customers] = True
        epsilon = self.core.epsilon
        if epsilon > 0 and not tables.any_on_serve:
            count = np.minimum(result.eligible, self.limit)
            out.propensity[customers] = np.where(
                count > 0, 1.0 - epsilon + epsilon * count / np.maximum(result.eligible, 1),
                1.0)

    def _pairs(self, customers: I64, result: Rows, tables: SegmentTables, kind: str) -> None:
        row, rank = np.nonzero(result.local >= 0)
        local = result.local[row, rank]
        catalogue = tables.model.offers[local].astype(np.int64)
        reasons = np.where(result.high_risk[row], self._reasons(tables, kind, True)[local],
                           self._reasons(tables, kind, False)[local])
        self.out.pairs.append((customers[row], rank.astype(np.int64),
                               self.codes_of(self.d)[catalogue],
                               result.p_accept[row, rank], result.objective[row, rank],
                               self.d.value[catalogue], self.d.cost[catalogue], reasons))

    def _reasons(self, tables: SegmentTables, kind: str, high_risk: bool) -> I64:
        key = (id(tables), kind, high_risk)
        codes = self._reason_codes.get(key)
        if codes is None:
            extra = (RETENTION_REASON,) if high_risk else ()
            codes = self._reason_codes[key] = np.array(
                [self.out.reasons.code(",".join((*r, *extra)))
                 for r in tables.reasons_by_kind[kind]], dtype=np.int64)
        return codes

    def _single(self, customer: int, d: Decider, answer: Answer, raw: bytes | None) -> None:
        assert answer.decision is not None
        out, decision = self.out, answer.decision
        out.one_by_one += 1
        k = len(decision.offers)
        catalogue = np.asarray(decision.offers, dtype=np.int64)
        out.pairs.append((np.full(k, customer, np.int64), np.arange(k, dtype=np.int64),
                          self.codes_of(d)[catalogue],
                          np.asarray(decision.p_accept, np.float64),
                          np.asarray(decision.objective, np.float64),
                          d.value[catalogue], d.cost[catalogue],
                          np.array([out.reasons.code(",".join(r)) for r in decision.reasons],
                                   dtype=np.int64)))
        out.segment[customer] = out.segments.code(answer.segment)
        out.strategy[customer] = out.strategies.code(answer.strategy)
        out.arm[customer] = out.arms.code(answer.arm)
        out.reason[customer] = out.reasons.code(answer.reason)
        out.known[customer] = raw is not None
        out.challenger[customer] = d is not self.d
        out.explored[customer] = decision.explored
        out.singles[customer] = (list(decision.propensities), answer.shadow)
