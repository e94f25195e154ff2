"""The decision for one customer, given what was read: pure, shared by both server models.

``DecisionCore`` holds everything between a question and an answer except the reads: the
grpc.aio ``Recommender`` awaits them on its event loop, the thread-pool
``BlockingRecommender`` blocks on them. The steps a caller runs, with its I/O between them:
``begin`` -> read the customer's state -> ``decided`` (or ``unread`` when the store failed) ->
``reservation`` -> reserve on-serve budget units when asked -> ``settled``. Knows the ports and
the in-memory ModelVersion; never grpc, never redis.

While an experiment runs, ``begin`` also hands out the challenger (``holder.Challenger``), the
read brings the challenger version's record in the same round trip, and ``decided`` names the
decider that answered: every answer comes from one version, and the caller settles it with that
version's decider. Shadowed answers carry the challenger's offers for the decision log only.
"""

from __future__ import annotations

import logging
import random
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from recsvc.core import schema
from recsvc.core.errors import CorruptRecordError, InvalidRequestError, StoreError
from recsvc.core.model import STRATEGY_BLENDED, STRATEGY_POPULAR, ModelVersion, SegmentModel
from recsvc.core.ranking import Ranked, segment_scores
from recsvc.core.ratelog import RateLimitedLog
from recsvc.decisioning.baseline import random_eligible
from recsvc.decisioning.budgets import day_of
from recsvc.decisioning.decide import Ask, Decision, decide, finish
from recsvc.decisioning.decider import Decider
from recsvc.decisioning.policy import NOTHING_LIVE, LiveView, read_live
from recsvc.experiments.arms import CHALLENGER, CONTROL, TREATMENT
from recsvc.experiments.decision_log import Decision as LoggedDecision
from recsvc.experiments.holdout import Holdout
from recsvc.feedback.foldin import record_for
from recsvc.ops import metrics
from recsvc.serving.holder import Challenger, ModelHolder
from recsvc.serving.ports import State, Writes
from recsvc.serving.questions import (
    Question,
    validate_channel,
    validate_customer_id,
    validate_limit,
    validate_question,
)

log = logging.getLogger(__name__)

# Strategy names of an answer (the servicer maps them to the proto enum).
PERSONALIZED = "personalized"
BLENDED = "blended"
SEGMENT_POPULAR = "segment_popular"
GLOBAL_POPULAR = "global_popular"
DEGRADED_SEGMENT_POPULAR = "degraded_segment_popular"
DEGRADED_GLOBAL_POPULAR = "degraded_global_popular"


@dataclass(frozen=True)
class Reservation:
    """On-serve budget units an answer needs before it can be given (a second round trip)."""

    day: str
    segment: str
    limit: int
    candidates: list[tuple[str, bool]]  # every answered offer, and whether it is budgeted
    budgeted: set[int]  # catalogue indices of the budgeted ones


@dataclass(frozen=True)
class BatchAsk:
    """A validated RecommendBatch question."""

    customer_ids: Sequence[str]
    limit: int
    channel: str
    now: float


@dataclass(frozen=True)
class Answer:
    customer_id: str
    segment: str
    model: ModelVersion  # with live changes applied: ids and titles of every answered offer
    strategy: str
    ranked: Ranked  # catalogue indices and scores (the score is p_accept)
    reason: str = ""
    decision: Decision | None = None  # objective, reasons, removed offers, decision id
    value: Sequence[float] = ()
    cost: Sequence[float] = ()
    arm: str = TREATMENT  # the experiment arm that answered (control: the holdout's baseline)
    # Shadow mode: the challenger version and the offers it would have shown (logged, not served).
    shadow: tuple[str, tuple[str, ...]] = ("", ())


class DecisionCore:
    def __init__(self, holder: ModelHolder, writes: Writes, max_batch_ids: int,
                 batch_chunk: int, holdout: Holdout | None = None,
                 log_share: float = 0.0, explore_share: float = 0.0):
        self.holder = holder
        self.writes = writes
        self.holdout = holdout or Holdout()
        # Share of customers whose answers go to the decision log (0: off, 1: every answer). A
        # customer is in or out for good (a salted hash), so sampled attribution stays whole.
        self.log_share = log_share
        self._log_below = int(log_share * 2**32)
        self.epsilon = explore_share  # share of answers that explore (epsilon-greedy)
        self._draw = random.Random().random
        self.max_batch_ids = max_batch_ids
        self.batch_chunk = batch_chunk
        self.failures = RateLimitedLog(log)

    def begin(self, question: Question) -> tuple[Decider, Ask, Challenger | None]:
        """Checks every field of ``question`` (InvalidRequestError naming the first bad one);
        the champion's decider and the running challenger, taken together."""
        limit = validate_question(question)
        d, challenger = self.holder.lineup()
        return d, Ask(question.customer_id, limit, time.time(), question.channel,
                      question.exclude_offer_ids, question.context, question.explain,
                      self.epsilon, self.epsilon > 0 and self._draw() < self.epsilon), challenger

    def decided(self, d: Decider, ask: Ask, segment_hint: str, state: State,
                challenger: Challenger | None = None) -> tuple[Decider, Answer]:
        """The decider that answered and its answer, from the customer's state as read (before
        any budget reservation): the challenger's for its share in split mode, else the
        champion's (with the challenger's offers beside it for its share in shadow mode)."""
        raw, fields, challenger_raw = state
        if challenger is not None and challenger.serves(ask.customer_id):
            return challenger.decider, self._decided_by(
                challenger.decider, ask, segment_hint, challenger_raw, fields, CHALLENGER)
        answer = self._decided_by(d, ask, segment_hint, raw, fields)
        if challenger is not None and challenger.shadows(ask.customer_id):
            answer = self._shadowed(answer, challenger.decider, ask, segment_hint,
                                    challenger_raw, fields)
        return d, answer

    def _decided_by(self, d: Decider, ask: Ask, segment_hint: str, raw: bytes | None,
                    fields: dict[bytes, bytes], arm: str = TREATMENT) -> Answer:
        """One version's answer (``arm`` unless the holdout keeps the customer as control)."""
        live = read_live(fields, ask.now, ask.channel, d.policy)
        # The fold-in consumer's record for this version (r:<version>) wins over the published
        # one: it holds the customer's events since training.
        raw = record_for(d.version, raw, fields)
        answer = self._arm(d, ask, self._answer(d, ask, segment_hint, raw, live), live,
                           lambda every: self._answer(d, every, segment_hint, raw, live))
        return answer if arm == TREATMENT or answer.arm == CONTROL else replace(answer, arm=arm)

    def _shadowed(self, answer: Answer, c: Decider, ask: Ask, segment_hint: str,
                  raw: bytes | None, fields: dict[bytes, bytes]) -> Answer:
        """``answer`` with what the challenger ``c`` would have shown (no exploration, no
        holdout: the challenger's own ranking, for off-policy evaluation in the report)."""
        quiet = replace(ask, epsilon=0.0, explore=False)
        live = read_live(fields, ask.now, ask.channel, c.policy)
        shadow = self._answer(c, quiet, segment_hint, record_for(c.version, raw, fields), live)
        assert shadow.decision is not None
        ids = c.model.catalogue.offer_ids
        return replace(answer, shadow=(c.version, tuple(
            ids[i] for i in shadow.decision.offers[:ask.limit])))

    def unread(self, d: Decider, ask: Ask, segment_hint: str, reason: str) -> Answer:
        """The answer when the customer's state could not be read: popularity, degraded."""
        log.debug("serving popularity, store failed: %s", reason)
        return self._popular(d, ask, segment_hint, NOTHING_LIVE, degraded=True, reason=reason)

    def check_readable(self) -> None:
        """StoreError when the version's records are gone from Redis: no read is attempted."""
        if self.holder.vanished is not None:
            raise StoreError(self.holder.vanished)

    def store_failure(self, exc: Exception) -> str:
        """Why the store was not read: the vanished version, or the store's error."""
        return self.holder.vanished or f"model store unavailable: {exc}"

    def _corrupt(self, d: Decider, exc: CorruptRecordError) -> None:
        """A record that does not decode answers its customer from popularity, never an error;
        counted in ``failures.counts["corrupt_record"]``, logged at most once per interval (the
        customer id is not logged: no personal data in logs)."""
        metrics.corrupt_record()
        self.failures.log(logging.ERROR, "corrupt_record",
                          f"corrupt customer record in version {d.base.version}: {exc}")

    def _answer(self, d: Decider, ask: Ask, segment_hint: str, raw: bytes | None,
                live: LiveView) -> Answer:
        """The decision for one customer whose record (maybe None) and live state were read."""
        if raw is None:
            return self._popular(d, ask, segment_hint or live.segment, live, degraded=False,
                                 reason="customer unknown to the model")
        try:
            record = decode(raw, d.base)
        except CorruptRecordError as exc:
            self._corrupt(d, exc)
            return self._popular(d, ask, "", live, degraded=True,
                                 reason=f"customer record unreadable ({exc})")
        tables = d.segments[record.segment_index]
        strategy, reason = segment_strategy(d.base.segments[record.segment_index], record)
        # One customer's product, in batch too: a many-row product can differ in the last bits
        # (another BLAS kernel), and batch answers must equal single ones exactly.
        scores = None if strategy == SEGMENT_POPULAR else \
            segment_scores(tables.model, record.vector[np.newaxis, :])[0]
        decision = decide(d, tables, scores, record.accepted, record.attributes, live, ask)
        return _answer(d, ask.customer_id, tables.model.name, strategy, decision, reason)

    def _popular(self, d: Decider, ask: Ask, segment_name: str, live: LiveView,
                 degraded: bool, reason: str) -> Answer:
        tables = d.tables_named(segment_name) if segment_name else None
        if tables is not None:
            strategy = DEGRADED_SEGMENT_POPULAR if degraded else SEGMENT_POPULAR
            decision = decide(d, tables, None, None, None, live, ask)
            return _answer(d, ask.customer_id, tables.model.name, strategy, decision,
                           f"{reason}; popular offers of segment {tables.model.name!r}")
        if segment_name:
            reason += f"; segment {segment_name!r} unknown to the model"
        strategy = DEGRADED_GLOBAL_POPULAR if degraded else GLOBAL_POPULAR
        decision = decide(d, d.global_, None, None, None, live, ask, global_list=True)
        return _answer(d, ask.customer_id, "", strategy, decision,
                       f"{reason}; popular offers open to every segment")

    def _arm(self, d: Decider, ask: Ask, answer: Answer, live: LiveView,
             again: Callable[[Ask], Answer] | None = None) -> Answer:
        """The holdout: a control customer gets the configured baseline instead, and the
        answer says so (``arm`` and ``reason``). ``again`` decides the same customer anew for
        another question (the random baseline asks for every eligible offer)."""
        if not self.holdout.active or self.holdout.arm(ask.customer_id, answer.segment) \
                != CONTROL:
            return answer
        decision = answer.decision
        assert decision is not None
        if self.holdout.baseline == "random" and again is not None:
            every = again(replace(ask, limit=len(d.model.catalogue.offer_ids), epsilon=0.0,
                                  explore=False))
            assert every.decision is not None
            base = replace(_answer(d, ask.customer_id, every.segment, every.strategy,
                                   random_eligible(every.decision, ask.limit), every.reason),
                           reason="control group (holdout): random eligible offers")
        elif self.holdout.baseline == "popular" and answer.segment:
            base = self._popular(d, ask, answer.segment, live, degraded=False,
                                 reason="control group (holdout)")
        else:
            empty = replace(decision, offers=[], p_accept=[], objective=[], reasons=[],
                            pending=False, propensities=[], explored=False)
            base = replace(answer, ranked=Ranked(np.empty(0, np.int64), np.empty(0, np.float32)),
                           decision=empty, value=[], cost=[],
                           reason="control group (holdout): no offer")
        return replace(base, arm=CONTROL)

    def _log(self, d: Decider, ask: Ask, answer: Answer) -> None:
        """After the answer, not awaited: its entry in the decision log."""
        self.writes.log_decision(ask.customer_id, self.log_fields(d, ask, answer))

    def log_fields(self, d: Decider, ask: Ask, answer: Answer) -> list[bytes | str]:
        """The decision-log entry of ``answer``, as the stream's fields."""
        decision = answer.decision
        assert decision is not None
        ids = d.model.catalogue.offer_ids
        n = len(decision.offers)
        p_accept = np.asarray(decision.p_accept, dtype=np.float32)
        entry = LoggedDecision(
            decision.decision_id, ask.now, ask.customer_id, answer.segment, d.version,
            answer.arm, answer.strategy, ask.channel, tuple(ids[i] for i in decision.offers),
            p_accept, np.asarray(decision.propensities if len(decision.propensities) == n
                                 else [1.0] * n, np.float32),
            p_accept, np.asarray(answer.value, np.float32), np.asarray(answer.cost, np.float32),
            *answer.shadow, explored=decision.explored)
        return entry.fields()

    def logged(self, customer_id: str) -> bool:
        """Whether this customer's answers go to the decision log (a fixed salted hash)."""
        if self.log_share >= 1.0:
            return True
        return self.log_share > 0.0 and \
            zlib.crc32(b"decision-log:" + customer_id.encode()) < self._log_below

    def reservation(self, d: Decider, ask: Ask, answer: Answer) -> Reservation | None:
        """The on-serve budget units ``answer`` needs, or None when it holds no such offer."""
        decision = answer.decision
        assert decision is not None
        if not decision.pending:
            return None
        ids = d.model.catalogue.offer_ids
        on_serve = d.budgets.on_serve()
        budgeted = {i for i in decision.offers if ids[i] in on_serve}
        return Reservation(d.budgets.day or day_of(ask.now), answer.segment, ask.limit,
                           [(ids[i], i in budgeted) for i in decision.offers], budgeted)

    def settled(self, d: Decider, ask: Ask, answer: Answer, reservation: Reservation | None,
                granted: set[str], store_up: bool = True) -> Answer:
        """The answer as given: budgeted offers without a granted unit left out; then the
        contact (when contacts count on serve) and the decision log entry are sent, not
        awaited."""
        decision = answer.decision
        assert decision is not None
        if reservation is not None:
            index_of = d.model.catalogue.index_of
            decision = finish(decision, reservation.budgeted,
                              {index_of[g] for g in granted if g in index_of})
            answer = replace(_answer(d, answer.customer_id, answer.segment, answer.strategy,
                                     decision, answer.reason), arm=answer.arm,
                             shadow=answer.shadow)
        contacts = d.policy.contacts
        if (store_up and contacts.count_on == "serve" and ask.channel and decision.offers
                and ask.channel not in contacts.exempt_channels):
            self.writes.record_contact(ask.customer_id, ask.channel, ask.now, contacts.keep)
        if store_up and self.logged(ask.customer_id):
            self._log(d, ask, answer)
        return answer

    def begin_batch(self, customer_ids: Sequence[str], limit: int, channel: str) -> BatchAsk:
        """Checks every field of a batch question (InvalidRequestError naming the bad one)."""
        if not customer_ids:
            raise InvalidRequestError("customer_ids: at least one id is required")
        if len(customer_ids) > self.max_batch_ids:
            raise InvalidRequestError(f"customer_ids: at most {self.max_batch_ids} ids per call, "
                                      f"got {len(customer_ids)}")
        for i, customer_id in enumerate(customer_ids):
            validate_customer_id(customer_id, f"customer_ids[{i}]")
        effective = validate_limit(limit)
        validate_channel(channel)
        return BatchAsk(customer_ids, effective, channel, time.time())

    def chunks(self, batch: BatchAsk) -> list[Sequence[str]]:
        """The ids read per round trip."""
        ids = batch.customer_ids
        return [ids[at:at + self.batch_chunk] for at in range(0, len(ids), self.batch_chunk)]

    def unread_batch(self, d: Decider, batch: BatchAsk, chunk: Sequence[str], reason: str
                     ) -> list[tuple[Ask, Answer]]:
        return [(ask, self.unread(d, ask, "", reason))
                for ask in (Ask(c, batch.limit, batch.now, batch.channel) for c in chunk)]

    def batch_slice(self, d: Decider, batch: BatchAsk, ids: Sequence[str],
                    states: list[State], challenger: Challenger | None = None
                    ) -> list[tuple[Decider, Ask, Answer]]:
        """Decides customer by customer, exactly as ``recommend`` does; with the decider that
        answered each."""
        out = []
        for customer_id, state in zip(ids, states, strict=True):
            ask = Ask(customer_id, batch.limit, batch.now, batch.channel, epsilon=self.epsilon,
                      explore=self.epsilon > 0 and self._draw() < self.epsilon)
            answering, answer = self.decided(d, ask, "", state, challenger)
            out.append((answering, ask, answer))
        return out

def _answer(d: Decider, customer_id: str, segment: str, strategy: str, decision: Decision,
            reason: str) -> Answer:
    offers = decision.offers
    ranked = Ranked(np.asarray(offers, dtype=np.int64),
                    np.asarray(decision.p_accept, dtype=np.float32))
    return Answer(customer_id, segment, d.model, strategy, ranked, reason, decision,
                  d.value[offers].tolist(), d.cost[offers].tolist())


def segment_strategy(segment: SegmentModel, record: schema.CustomerRecord) -> tuple[str, str]:
    """The strategy serving a known customer of ``segment``, and why when it is a fallback."""
    if segment.strategy == STRATEGY_POPULAR or not len(record.vector):
        return SEGMENT_POPULAR, (f"segment {segment.name!r} is served by popularity "
                                 "(it validated better than the model, or had no interactions)")
    if segment.strategy == STRATEGY_BLENDED:
        return BLENDED, ""
    return PERSONALIZED, ""


def decode(raw: bytes, model: ModelVersion) -> schema.CustomerRecord:
    try:
        record = schema.decode_customer_record(raw)
    except ValueError as exc:
        raise CorruptRecordError(str(exc)) from exc
    if record.segment_index >= len(model.segments):
        raise CorruptRecordError(f"segment index {record.segment_index} beyond the model")
    segment = model.segments[record.segment_index]
    if len(record.vector) and len(record.vector) != segment.factor_count:
        raise CorruptRecordError(
            f"vector of {len(record.vector)} factors, segment has {segment.factor_count}"
        )
    if len(record.vector) and not np.isfinite(record.vector).all():
        raise CorruptRecordError("vector holds NaN or infinite factors")
    if len(record.accepted) and int(record.accepted.max()) >= len(model.catalogue.offer_ids):
        raise CorruptRecordError(f"accepted-offer index {int(record.accepted.max())} beyond "
                                 f"the catalogue of {len(model.catalogue.offer_ids)} offers")
    return record
