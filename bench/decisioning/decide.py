"""Python cost of one decision, in process: before decisioning (ranking.rank) and after, with
each kind of rule, objective and live state. No Redis, no gRPC: the per-call work alone.

    .venv/bin/python -m bench.decisioning.decide

A synthetic version shaped like the bench's (500 offers, a segment of 250, 48 factors).
"""

from __future__ import annotations

import json
import time
import timeit
from typing import Any

import numpy as np

from recsvc.core import schema
from recsvc.core.meta import ModelMeta
from recsvc.core.model import ModelVersion
from recsvc.core.ranking import Rules, rank, segment_scores
from recsvc.decisioning.decide import Ask, decide
from recsvc.decisioning.decider import build_decider
from recsvc.decisioning.policy import NOTHING_LIVE, read_live

OFFERS, IN_SEGMENT, FACTORS = 500, 250, 48
RULE_KINDS = {
    "number compare": "churn_risk >= 0.6",
    "category equality": "plan == 'premium'",
    "context text": "context.intent == 'cancel'",
    "context number": "context.tenure >= 12",
    "and of two": "churn_risk >= 0.6 and plan == 'premium'",
}


def version(rules: dict[int, str], objective: str = "relevance") -> ModelVersion:
    rng = np.random.default_rng(7)
    offers: list[dict[str, Any]] = [
        {"offer_id": f"o{i}", "title": "", "segments": ["s"], "channels": [],
         "valid_from": None, "valid_to": None, "value": float(rng.integers(1, 100)),
         "cost": float(rng.integers(0, 10))} for i in range(OFFERS)]
    for i, rule in rules.items():
        offers[i]["rule"] = rule
    meta = {"version": "v", "trained_at": "2026-12-01T00:00:00Z",
            "segments": [{"name": "s", "strategy": "personalized", "factors": FACTORS,
                          "base_accept_rate": 0.1}],
            "attributes": [{"name": "clv", "kind": "number"},
                           {"name": "churn_risk", "kind": "number"},
                           {"name": "plan", "kind": "category"}],
            "attribute_values": {"plan": ["basic", "premium"]},
            "decisioning": {"objective": objective}}
    factors = rng.normal(size=(IN_SEGMENT, FACTORS)).astype(np.float32)
    segment = {b"offers": schema.encode_u32(range(IN_SEGMENT)),
               b"popularity": schema.encode_f32(rng.random(IN_SEGMENT)),
               b"factors": schema.encode_f32(factors.ravel())}
    empty = {b"offers": schema.encode_u32([]), b"popularity": schema.encode_f32([])}
    return ModelVersion.from_blobs("v", ModelMeta.from_dict(meta), json.dumps(offers).encode(),
                                   [segment], empty)


def per_call_us(fn: Any, number: int = 5000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    now = time.time()
    vector = np.random.default_rng(1).normal(size=FACTORS).astype(np.float32)
    accepted = np.array([3, 17], dtype=np.uint32)
    attrs = np.concatenate([np.array([1200.0, 0.7], dtype=np.float32).view(np.uint32),
                            np.array([1], dtype=np.uint32)])
    context = {"intent": "cancel", "tenure": "14"}
    base = version({})
    rules = Rules(10, now)
    old = per_call_us(lambda: rank(base.segments[0], base.catalogue, rules, vector, accepted))
    rows = [("before: ranking.rank (score, mask, top 10)", old)]

    def run(model: ModelVersion, live: Any = NOTHING_LIVE, explain: bool = False) -> float:
        d = build_decider(model)
        ask = Ask("c1", 10, now, "", (), context, explain)
        tables = d.segments[0]

        def once() -> None:
            scores = segment_scores(tables.model, vector[np.newaxis, :])[0]
            decide(d, tables, scores, accepted, attrs, live, ask)
        return per_call_us(once, 2000 if explain else 5000)

    plain = run(base)
    rows.append(("after: decide, relevance, no rule", plain))
    rows.append(("after: decide, expected_value", run(version({}, "expected_value"))))
    rows.append(("after: decide, retention", run(version({}, "retention"))))
    for kind, rule in RULE_KINDS.items():
        one = run(version({5: rule}))
        rows.append((f"  + one rule on 1 offer: {kind}", one))
    distinct = {i: f"clv >= {i}" for i in range(20)}
    rows.append(("  + 20 distinct number rules on 20 offers", run(version(distinct))))
    shared = {i: "churn_risk >= 0.6 and plan == 'premium'" for i in range(100)}
    rows.append(("  + one 'and' rule shared by 100 offers", run(version(shared))))
    live = read_live({b"d:o4": f"2 {now:.0f}".encode(), b"a:o9": b"1",
                      b"c:email": f"{now:.0f}".encode()}, now, "", build_decider(base).policy)
    rows.append(("  + a live hash (decline, accept, contact)", run(base, live)))
    rows.append(("  explain (every removed offer listed)", run(base, explain=True)))
    print(f"{'per call':<48} {'µs':>7}")
    for name, us in rows:
        print(f"{name:<48} {us:>7.1f}")


if __name__ == "__main__":
    main()
