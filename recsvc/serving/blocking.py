"""The thread-pool server model's use cases: the decision core with its reads blocking.

Every call runs on one of the server's threads from start to end: the reads block that thread
only (the GIL is released while it waits on the socket), deciding is the same synchronous numpy
as on the event loop (``DecisionCore``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

from recsvc.core.errors import StoreError
from recsvc.decisioning.decide import Ask
from recsvc.decisioning.decider import Decider
from recsvc.experiments.holdout import Holdout
from recsvc.serving.deciding import Answer, DecisionCore
from recsvc.serving.holder import ModelHolder
from recsvc.serving.ports import BlockingRecords
from recsvc.serving.questions import Question

log = logging.getLogger(__name__)


class BlockingRecommender(DecisionCore):
    def __init__(self, holder: ModelHolder, records: BlockingRecords, max_batch_ids: int,
                 batch_chunk: int, holdout: Holdout | None = None,
                 log_share: float = 0.0, explore_share: float = 0.0):
        super().__init__(holder, records, max_batch_ids, batch_chunk, holdout, log_share,
                         explore_share)
        self.records = records

    def recommend(self, question: Question, deadline: float) -> Answer:
        d, ask, challenger = self.begin(question)
        try:
            self.check_readable()
            state = self.records.customer_state(d.version, ask.customer_id, deadline,
                                              challenger.version if challenger else "")
        except StoreError as exc:
            answer = self.unread(d, ask, question.segment, self.store_failure(exc))
            return self.settled(d, ask, answer, None, set(), store_up=False)
        d, answer = self.decided(d, ask, question.segment, state, challenger)
        return self._settle(d, ask, answer, deadline)

    def _settle(self, d: Decider, ask: Ask, answer: Answer, deadline: float) -> Answer:
        reservation = self.reservation(d, ask, answer)
        granted: set[str] = set()
        if reservation is not None:
            try:
                granted = self.records.reserve(reservation.day, reservation.segment,
                                               reservation.limit, reservation.candidates,
                                               deadline)
            except StoreError as exc:  # no unit can be proven: budgeted offers are left out
                log.warning("budget reserve failed: %s", exc)
        return self.settled(d, ask, answer, reservation, granted)

    def recommend_batch(self, customer_ids: Sequence[str], limit: int, channel: str,
                        deadline: float) -> Iterator[Answer]:
        """Answers in request order, one Redis round trip per chunk, decided exactly as
        ``recommend`` decides. A caller that goes away stops the generator at its next
        answer: no more chunks are read."""
        batch = self.begin_batch(customer_ids, limit, channel)
        d, challenger = self.holder.lineup()
        also = challenger.version if challenger else ""
        for chunk in self.chunks(batch):
            try:
                self.check_readable()
                states = self.records.customer_states(d.version, chunk, deadline, also)
            except StoreError as exc:
                for ask, answer in self.unread_batch(d, batch, chunk, self.store_failure(exc)):
                    yield self.settled(d, ask, answer, None, set(), store_up=False)
                continue
            for answering, ask, answer in self.batch_slice(d, batch, chunk, states, challenger):
                yield self._settle(answering, ask, answer, deadline)
