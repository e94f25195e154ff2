"""The ceiling of a native decision: recsvc's thread-pool server with the decision replayed.

    python -m bench.servers.ceiling --port 50099

The real sync server (``build_sync_server``, settings from ``RECSVC_*``: guard, request parse,
the question's checks, the model lineup, Recommend's one Redis round trip, settling, the
decision-log ``XADD`` sent without waiting, metrics), except that the three parts a native
decision kernel would take over are computed once per customer and question and then replayed:
the decision itself (record decode, live state, scoring, rules, top-k, reasons), the decision
log entry's fields, and the response message. Whatever it answers per second is the most that
any implementation of those three parts, however fast, could reach inside this Python server
(docs/PERFORMANCE.md, "What 70% of the echo leaves for deciding"). A measurement tool only: the
replayed answers repeat their decision id.
"""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from recsvc.api import sync_service
from recsvc.api.sync_server import build_sync_server
from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.decisioning.decide import Ask
from recsvc.decisioning.decider import Decider
from recsvc.ops import metrics
from recsvc.serving.blocking import BlockingRecommender
from recsvc.serving.deciding import Answer
from recsvc.serving.ports import State
from recsvc.store.reads.reader import RedisStore, connect
from recsvc.v1 import offers_pb2 as pb


def replay_responses() -> None:
    """``to_response`` builds each answer's message once (the answer objects are replayed too,
    so the same object means the same message); the answer metric still counts every call."""
    build = sync_service.to_response
    built: dict[int, tuple[Answer, pb.RecommendResponse]] = {}

    def to_response(answer: Answer) -> pb.RecommendResponse:
        hit = built.get(id(answer))
        if hit is None or hit[0] is not answer:
            hit = built[id(answer)] = (answer, build(answer))
        else:
            metrics.answer(answer.strategy, answer.arm)
        return hit[1]

    sync_service.to_response = to_response


def replay_decisions(recommender: BlockingRecommender) -> None:
    """The decision and its log entry, computed on the first call for a customer's question."""
    decide, entry = recommender.decided, recommender.log_fields
    decided: dict[tuple[str, str, int, str], tuple[Decider, Answer]] = {}
    fields: dict[int, tuple[Answer, list[bytes | str]]] = {}

    def replayed_decision(d: Decider, ask: Ask, segment_hint: str, state: State,
                          challenger: Any = None) -> tuple[Decider, Answer]:
        key = (d.version, ask.customer_id, ask.limit, ask.channel)
        hit = decided.get(key)
        if hit is None:
            hit = decided[key] = decide(d, ask, segment_hint, state, challenger)
        return hit

    def replayed_entry(d: Decider, ask: Ask, answer: Answer) -> list[bytes | str]:
        hit = fields.get(id(answer))
        if hit is None or hit[0] is not answer:
            hit = fields[id(answer)] = (answer, entry(d, ask, answer))
        return hit[1]

    # Instance attributes shadow the methods for this one server (a measurement, not a mode).
    setattr(recommender, "decided", replayed_decision)  # noqa: B010
    setattr(recommender, "log_fields", replayed_entry)  # noqa: B010


def serve(port: int) -> None:
    settings = Settings.from_env(port=port)
    replay_responses()  # before the servicer is built: it calls the module's function
    store = RedisStore(connect(settings), schema.keys_for(settings), settings)
    running = build_sync_server(settings, store)
    replay_decisions(running.recommender)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    running.stop(1.0)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.servers.ceiling")
    parser.add_argument("--port", type=int, required=True)
    serve(parser.parse_args().port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
