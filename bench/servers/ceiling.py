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
from dataclasses import dataclass
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


@dataclass
class Replayed:
    """One replayed answer, with its log fields and response once first asked for."""

    answer: Answer
    fields: list[bytes | str] | None = None
    response: pb.RecommendResponse | None = None


def replay(recommender: BlockingRecommender) -> None:
    """The decision, its log entry and its response, computed on the first call for a
    customer's question and replayed after (instance attributes shadow the recommender's
    methods for this one server; the servicer looks ``to_response`` up at each call). Each
    lookup is one dict access, so the replay adds next to nothing to what it measures."""
    decide, entry = recommender.decided, recommender.log_fields
    build = getattr(sync_service, "to_response")  # noqa: B009 (imported there from service)
    decided_by_question: dict[tuple[str, str, int, str], tuple[Decider, Answer]] = {}
    by_answer: dict[int, Replayed] = {}  # id of a replayed answer (kept alive above)

    def replayed(answer: Answer) -> Replayed:
        found = by_answer.get(id(answer))
        if found is None or found.answer is not answer:
            raise RuntimeError("the ceiling replays answers as decided; settling rebuilt this "
                               "one (on-serve budgets?)")
        return found

    def decided(d: Decider, ask: Ask, segment_hint: str, read: State,
                challenger: Any = None) -> tuple[Decider, Answer]:
        key = (d.version, ask.customer_id, ask.limit, ask.channel)
        hit = decided_by_question.get(key)
        if hit is None:
            hit = decided_by_question[key] = decide(d, ask, segment_hint, read, challenger)
            by_answer[id(hit[1])] = Replayed(hit[1])
        return hit

    def log_fields(d: Decider, ask: Ask, answer: Answer) -> list[bytes | str]:
        found = replayed(answer)
        if found.fields is None:
            found.fields = entry(d, ask, answer)
        return found.fields

    def to_response(answer: Answer) -> pb.RecommendResponse:
        found = replayed(answer)
        if found.response is None:
            found.response = build(answer)  # counts the answer's metric
        else:
            metrics.answer(answer.strategy, answer.arm)
        return found.response

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
