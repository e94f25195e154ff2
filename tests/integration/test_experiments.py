"""Every answer carries a decision id and its arm; a salted share of customers is held out as
control; the decision log holds each answer; `recsvc report` joins it with the feedback."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.experiments.holdout import Holdout
from recsvc.v1 import offers_pb2 as pb
from tests.integration.helpers import FAST_CONFIG, cli, planted
from tests.integration.serving import running, train, wait_for_version

pytestmark = [pytest.mark.integration, pytest.mark.both_models, pytest.mark.cluster]


def _logged(client: redis.Redis, keys: schema.Keys) -> int:
    return sum(client.xlen(keys.decisions(s)) for s in range(schema.SHARDS))


@pytest.mark.parametrize("baseline", ["none", "popular"])
def test_holdout_arms_decision_log_and_the_report(tmp_path: Path, settings: Settings,
                                                  client: redis.Redis, baseline: str) -> None:
    version = train(planted(tmp_path), settings.redis_url, settings.key_prefix, FAST_CONFIG)
    held = replace(settings, holdout_share=0.4, holdout_baseline=baseline)
    customers = [f"{g}{i}" for g, n in (("a", 40), ("b", 80)) for i in range(n)]
    holdout = Holdout(0.4, {}, held.holdout_salt, baseline)
    keys = schema.keys_for(settings)
    with running(held) as (_, stub, _channel):
        wait_for_version(stub, version)
        answers = {c: stub.Recommend(pb.RecommendRequest(customer_id=c, limit=3), timeout=5)
                   for c in customers}
        again = stub.Recommend(pb.RecommendRequest(customer_id="a1", limit=3), timeout=5)
        batch = list(stub.RecommendBatch(pb.RecommendBatchRequest(customer_ids=customers[:20],
                                                                  limit=3), timeout=10))
        accepted = []
        for customer, answer in answers.items():
            if answer.arm == "treatment" and answer.offers and customer.startswith("a"):
                accepted.append(pb.FeedbackEvent(
                    event_id=f"acc-{customer}", customer_id=customer,
                    offer_id=answer.offers[0].offer_id, event="accept",
                    decision_id=answer.decision_id))
        results = stub.RecordFeedback(pb.RecordFeedbackRequest(events=accepted), timeout=5)
        assert all(r.status == pb.FEEDBACK_STATUS_RECORDED for r in results.results)
        deadline = time.monotonic() + 5
        while _logged(client, keys) < len(customers) + 21 and time.monotonic() < deadline:
            time.sleep(0.05)
    arms = {c: a.arm for c, a in answers.items()}
    assert arms == {c: holdout.arm(c, "main") for c in customers}  # the documented hash
    assert 0.25 < sum(a == "control" for a in arms.values()) / len(arms) < 0.55
    assert again.arm == arms["a1"] and again.decision_id != answers["a1"].decision_id
    assert [b.arm for b in batch] == [arms[c] for c in customers[:20]]
    assert len({a.decision_id for a in answers.values()}) == len(customers)
    for answer in answers.values():
        if answer.arm == "control":
            assert "control group (holdout)" in answer.reason
            assert (len(answer.offers) == 0) == (baseline == "none")
            if baseline == "popular":
                assert answer.strategy == pb.STRATEGY_SEGMENT_POPULAR
    assert _logged(client, keys) == len(customers) + 21

    out = tmp_path / "report.html"
    result = cli(["report", "--out", str(out), "--json", str(tmp_path / "report.json")],
                 settings.redis_url, settings.key_prefix)
    assert result.returncode == 0, result.stderr
    card = json.loads((tmp_path / "report.json").read_text())
    treated = [c for c in customers if arms[c] == "treatment"]
    assert card["arms"]["treatment"]["customers"] == len(treated)
    assert card["arms"]["control"]["customers"] == len(customers) - len(treated)
    shown = card["arms"]["treatment"]["offers_shown"]
    repeated = [*customers[:20], "a1"]  # the batch and the second call answered these again
    assert shown == 3 * len(treated) + 3 * sum(arms[c] == "treatment" for c in repeated)
    assert card["arms"]["treatment"]["acceptance_rate"]["value"] == pytest.approx(
        len(accepted) / shown)
    assert "<svg" in out.read_text()


def test_report_on_an_empty_decision_log_is_one_clear_line(settings: Settings) -> None:
    result = cli(["report", "--out", "/tmp/never.html"], settings.redis_url, settings.key_prefix)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("recsvc: the decision log is empty")


def test_a_decision_log_share_logs_that_share_of_customers_every_answer_of_each(
        tmp_path: Path, settings: Settings, client: redis.Redis) -> None:
    """RECSVC_DECISION_LOG_SHARE samples customers, not answers: a logged customer's every
    answer is in the log (its attribution stays whole), an unlogged one's none."""
    version = train(planted(tmp_path), settings.redis_url, settings.key_prefix, FAST_CONFIG)
    customers = [f"{g}{i}" for g, n in (("a", 100), ("b", 100)) for i in range(n)]
    keys = schema.keys_for(settings)
    with running(replace(settings, decision_log_share=0.3)) as (_, stub, _channel):
        wait_for_version(stub, version)
        for _ in range(2):
            for c in customers:
                stub.Recommend(pb.RecommendRequest(customer_id=c, limit=3), timeout=5)
        time.sleep(0.5)  # the writes after the answers
    logged: dict[str, int] = {}
    for shard in range(schema.SHARDS):
        for _, fields in client.xrange(keys.decisions(shard)):
            customer = fields[b"c"].decode()
            logged[customer] = logged.get(customer, 0) + 1
    assert set(logged.values()) == {2}  # both answers of a logged customer, never one
    assert 0.2 * len(customers) < len(logged) < 0.4 * len(customers)  # 30% of 200: sd 6.5
