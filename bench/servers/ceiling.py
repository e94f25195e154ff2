"""The ceiling of a native decision: recsvc's thread-pool server with the decision replayed.

    python -m bench.servers.ceiling --port 50099

The real sync server (``build_sync_server``, settings from ``RECSVC_*``: guard, request parse,
the question's checks, the model lineup, Recommend's one Redis round trip, settling, the
decision-log ``XADD`` sent without waiting, metrics), except that the three parts a native
decision kernel would take over are computed once per customer, limit and channel (the bench
sends one fixed request) and then replayed: the decision itself (record decode, live state,
scoring, rules, top-k, reasons), the decision-log entry's fields, and the response message.
Whatever it answers per second is the most that any implementation of those three parts,
however fast, could reach inside this Python server (docs/PERFORMANCE.md, "Nor does a native
decision inside this server: the ceiling"). A measurement tool only: the replayed answers
repeat their decision id, and an answer that settling rebuilds (on-serve budgets) fails the
call rather than be measured as replayed.
"""

from __future__ import annotations

import argparse
from typing import Any

from recsvc.api import sync_service
from recsvc.api.sync_server import build_sync_server
from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.core.stopping import SignalStop
from recsvc.decisioning.decide import Ask
from recsvc.decisioning.decider import Decider
from recsvc.ops import metrics
from recsvc.serving.blocking import BlockingRecommender
from recsvc.serving.deciding import Answer
from recsvc.serving.ports import State
from recsvc.store.reads.reader import RedisStore, connect
from recsvc.v1 import offers_pb2 as pb


class Replay:
    """Per replayed answer (by identity): its decision-log fields and its response message."""

    def __init__(self) -> None:
        self.decided: dict[tuple[str, str, int, str], tuple[Decider, Answer]] = {}
        self.entries: dict[int, list[bytes | str]] = {}
        self.responses: dict[int, pb.RecommendResponse] = {}

    def known(self, answer: Answer) -> int:
        """The answer's key; RuntimeError for an answer that was not replayed."""
        if not any(a is answer for _, a in self.decided.values()):
            raise RuntimeError("the ceiling replays answers as decided; settling rebuilt this "
                               "one (on-serve budgets?)")
        return id(answer)


def replay(recommender: BlockingRecommender) -> None:
    """The decision, its log entry and its response, computed on the first call for a
    customer's question and replayed after (instance attributes shadow the recommender's
    methods for this one server; the servicer looks ``to_response`` up at each call)."""
    state = Replay()
    decide, entry = recommender.decided, recommender.log_fields
    build = getattr(sync_service, "to_response")  # noqa: B009 (imported there from service)

    def decided(d: Decider, ask: Ask, segment_hint: str, read: State,
                challenger: Any = None) -> tuple[Decider, Answer]:
        key = (d.version, ask.customer_id, ask.limit, ask.channel)
        hit = state.decided.get(key)
        if hit is None:
            hit = state.decided[key] = decide(d, ask, segment_hint, read, challenger)
        return hit

    def log_fields(d: Decider, ask: Ask, answer: Answer) -> list[bytes | str]:
        key = state.known(answer)
        fields = state.entries.get(key)
        if fields is None:
            fields = state.entries[key] = entry(d, ask, answer)
        return fields

    def to_response(answer: Answer) -> pb.RecommendResponse:
        key = state.known(answer)
        response = state.responses.get(key)
        if response is None:
            response = state.responses[key] = build(answer)  # counts the answer's metric
        else:
            metrics.answer(answer.strategy, answer.arm)
        return response

    setattr(recommender, "decided", decided)  # noqa: B010
    setattr(recommender, "log_fields", log_fields)  # noqa: B010
    setattr(sync_service, "to_response", to_response)  # noqa: B010


def serve(port: int) -> None:
    settings = Settings.from_env(port=port)
    store = RedisStore(connect(settings), schema.keys_for(settings), settings)
    running = build_sync_server(settings, store)
    replay(running.recommender)
    SignalStop().install().wait()
    running.stop(1.0)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.servers.ceiling")
    parser.add_argument("--port", type=int, required=True)
    serve(parser.parse_args().port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
