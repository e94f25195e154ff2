"""The holdout's random baseline through a real server: control answers are uniformly random
among the offers eligible after rules and policy, and the decision log holds 1 / eligible."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from scipy.stats import chisquare

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.store.feedback.decisions import read_decisions
from recsvc.v1 import offers_pb2 as pb
from tests.integration import decisioning_data
from tests.integration.serving import running, wait_for_version
from tests.integration.test_decisioning import ask, ids, publish

pytestmark = pytest.mark.integration

# decisioning_data: a-test (churn 0.8, premium) accepted a1..a4; b4 needs context.intent;
# a-calm (churn 0.2, basic) also fails a5 (churn_risk >= 0.6) and b5 (plan == 'premium').
ELIGIBLE = {"a-test": {"a5", "b1", "b2", "b3", "b5", "t1"}, "a-calm": {"b1", "b2", "b3", "t1"}}
ASKED = 480


def test_control_answers_are_uniform_among_eligible_offers_and_respect_rules(
        tmp_path: Path, settings: Settings, client: redis.Redis) -> None:
    version = publish(decisioning_data.write(tmp_path), settings)
    with running(settings) as (_, stub, _channel):  # no holdout: what is eligible, in order
        wait_for_version(stub, version)
        for customer, eligible in ELIGIBLE.items():
            assert set(ids(ask(stub, customer, limit=20))) == eligible
    held = replace(settings, holdout_share=1.0, holdout_baseline="random")
    keys = schema.Keys(settings.key_prefix)
    shown: dict[str, Counter[str]] = {c: Counter() for c in ELIGIBLE}
    with running(held) as (_, stub, _channel):
        wait_for_version(stub, version)
        for customer in ELIGIBLE:
            for _ in range(ASKED):
                answer = ask(stub, customer, limit=1)
                assert answer.arm == "control" and "random eligible offers" in answer.reason
                shown[customer].update(ids(answer))
            three = ask(stub, customer, limit=3)
            assert len(set(ids(three))) == 3 and set(ids(three)) <= ELIGIBLE[customer]
        batch = list(stub.RecommendBatch(pb.RecommendBatchRequest(
            customer_ids=["a-calm"] * 50, limit=1), timeout=10))
        assert all(b.arm == "control" and set(ids(b)) <= ELIGIBLE["a-calm"] for b in batch)
        expected = 2 * (ASKED + 1) + 50  # control answers (+ 2 treatment ones before)
        deadline = time.monotonic() + 10
        while sum(client.xlen(keys.decisions(s)) for s in range(schema.SHARDS)) < expected + 2 \
                and time.monotonic() < deadline:
            time.sleep(0.05)
    for customer, eligible in ELIGIBLE.items():
        assert set(shown[customer]) == eligible  # never an offer its rules exclude
        counts = [shown[customer][o] for o in sorted(eligible)]
        assert sum(counts) == ASKED
        assert chisquare(counts).pvalue > 0.001, counts  # uniform (fails 1 run in 1,000)
    logged = [d for d in read_decisions(client, keys) if d.arm == "control"]
    assert len(logged) == expected
    for decision in logged:
        n = len(ELIGIBLE[decision.customer_id])
        assert decision.propensities.tolist() == pytest.approx([len(decision.offers) / n]
                                                               * len(decision.offers))
