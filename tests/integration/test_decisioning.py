"""Decisioning end to end: rules trained and served, live offer control, policy, explanations,
batch and single answers alike. A real Redis, real CLI subprocesses, a real gRPC server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.v1 import offers_pb2 as pb
from recsvc.v1 import offers_pb2_grpc as pb_grpc
from tests.integration import decisioning_data
from tests.integration.helpers import cli, train_args
from tests.integration.serving import cluster_env, running

pytestmark = [pytest.mark.integration, pytest.mark.both_models]


def publish(data: Path, settings: Settings) -> str:
    result = cli(train_args(data, data / "config.toml"), settings.redis_url, settings.key_prefix,
                 cluster_env(settings.redis_cluster))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def offers_cli(settings: Settings, *args: str) -> tuple[int, str]:
    result = cli(list(args), settings.redis_url, settings.key_prefix,
                 cluster_env(settings.redis_cluster))
    return result.returncode, result.stdout + result.stderr


def ask(stub: pb_grpc.RetentionOfferServiceStub, customer_id: str,
        **fields: object) -> pb.RecommendResponse:
    return stub.Recommend(pb.RecommendRequest(customer_id=customer_id, **fields),  # type: ignore[arg-type]
                          timeout=5)


def ids(response: pb.RecommendResponse) -> list[str]:
    return [o.offer_id for o in response.offers]


def eventually(check: Callable[[], bool], within: float = 1.0) -> float:
    """Seconds until ``check`` holds; fails after ``within``."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        try:
            if check():
                return time.monotonic() - started
        except grpc.RpcError:  # not serving yet (a slow first model load on a busy machine)
            pass
        time.sleep(0.02)
    raise AssertionError(f"not true within {within} s")


@contextmanager
def served(settings: Settings) -> Iterator[tuple[Any, pb_grpc.RetentionOfferServiceStub, Any]]:
    """A real in-process server, once it serves a model (the first load may be slow on a busy
    machine: the watcher retries it)."""
    with running(settings) as (server, stub, channel):
        eventually(lambda: bool(stub.GetModelInfo(pb.GetModelInfoRequest(),
                                                  timeout=2).active_version), within=30)
        yield server, stub, channel


@pytest.fixture
def trained(tmp_path: Path, settings: Settings) -> tuple[Path, str]:
    data = decisioning_data.write(tmp_path)
    return data, publish(data, settings)


def test_rules_read_customer_attributes_and_the_request_context(
        trained: tuple[Path, str], settings: Settings) -> None:
    with served(settings) as (_, stub, _channel):
        test = ask(stub, "a-test", explain=True)
        assert ids(test)[0] == "a5"  # churn_risk 0.8 >= 0.6
        first = test.offers[0]
        assert 0 < first.p_accept <= 1 and first.score == first.p_accept  # calibrated (issue 13)
        assert "personal_affinity" in first.reasons and "customer_rule_matched" in first.reasons
        assert first.value == 50 and first.cost == 5 and first.objective == pytest.approx(
            first.p_accept, rel=1e-6)
        assert test.decision_id
        removed = {r.offer_id: r for r in test.removed}
        assert removed["a1"].rule == "already_accepted"
        assert "b5" not in removed  # a-test is on the premium plan
        calm = ask(stub, "a-calm", explain=True)
        assert "a5" not in ids(calm)
        by_rule = {r.offer_id: (r.rule, r.detail) for r in calm.removed}
        assert by_rule["a5"] == ("customer_rule", "churn_risk >= 0.6 is false")
        assert by_rule["b5"] == ("customer_rule", "plan == 'premium' is false")
        assert "a5" not in ids(ask(stub, "a-nochurn"))  # missing churn risk: the rule is false
        assert "b4" not in ids(test)
        assert "b4" in ids(ask(stub, "a-test", context={"intent": "cancel"}, limit=20))
        rules_order = [r.rule for r in calm.removed]
        order = ["segment", "validity", "channel", "paused", "customer_rule", "budget",
                 "contact_cap", "do_not_contact", "suppressed", "already_accepted",
                 "excluded_by_caller"]
        assert rules_order == sorted(rules_order, key=order.index)


def test_popularity_scores_are_probabilities_not_counts(
        trained: tuple[Path, str], settings: Settings) -> None:
    with served(settings) as (_, stub, _channel):
        fallback = ask(stub, "stranger", segment="main")
        assert fallback.strategy == pb.STRATEGY_SEGMENT_POPULAR
        assert all(0 <= o.score <= 1 and "popular_in_segment" in o.reasons
                   for o in fallback.offers)


@pytest.mark.parametrize(("rule", "message"), [
    ("tier == 'gold'", "offer 'b5': rule \"tier == 'gold'\": unknown attribute 'tier'"),
    ("plan ==", "offer 'b5': rule 'plan ==': unexpected end of rule"),
])
def test_training_refuses_a_bad_rule_naming_offer_and_rule(
        tmp_path: Path, settings: Settings, client: redis.Redis, rule: str,
        message: str) -> None:
    data = decisioning_data.write(tmp_path, rules={"b5": rule})
    result = cli(train_args(data, data / "config.toml"), settings.redis_url,
                 settings.key_prefix)
    assert result.returncode != 0
    assert message in result.stderr
    assert client.get(schema.keys_for(settings).active) is None  # nothing published


def test_offers_commands_change_every_answer_within_a_second(
        trained: tuple[Path, str], settings: Settings, client: redis.Redis) -> None:
    keys = schema.keys_for(settings)
    with served(settings) as (_, stub, _channel):
        assert ids(ask(stub, "a-test"))[0] == "a5"
        assert offers_cli(settings, "offers", "pause", "a5")[0] == 0
        eventually(lambda: "a5" not in ids(ask(stub, "a-test")))
        paused = ask(stub, "a-test", explain=True)
        assert ("a5", "paused") in {(r.offer_id, r.rule) for r in paused.removed}
        assert offers_cli(settings, "offers", "resume", "a5")[0] == 0
        eventually(lambda: ids(ask(stub, "a-test"))[0] == "a5")
        assert offers_cli(settings, "offers", "set", "b1", "--lever", "50", "--value", "7")[0] == 0
        eventually(lambda: ids(ask(stub, "a-test"))[0] == "b1")
        top = ask(stub, "a-test").offers[0]
        assert top.value == 7 and "business_priority" in top.reasons
        code, _ = offers_cli(settings, "offers", "add", "n1", "--title", "New", "--segments",
                             "main", "--value", "3", "--lever", "100")
        assert code == 0
        eventually(lambda: ids(ask(stub, "a-test"))[0] == "n1")
        new = ask(stub, "a-test").offers[0]
        assert new.title == "New" and "new_offer_prior" in new.reasons
        assert offers_cli(settings, "offers", "set", "a5", "--valid-to", "2000-01-01")[0] == 0
        eventually(lambda: "a5" not in ids(ask(stub, "a-test")))
        code, listing = offers_cli(settings, "offers", "list")
        assert code == 0 and "n1" in listing and "new" in listing
    # nothing of the published version was rewritten
    version = trained[1]
    assert b"n1" not in client.get(keys.offers(version))


@pytest.mark.parametrize(("args", "message"), [
    (["offers", "pause", "nope"], "unknown offer 'nope'"),
    (["offers", "set", "nope", "--value", "1"], "unknown offer 'nope'"),
    (["offers", "set", "a1", "--value", "-3"], "value must be >= 0"),
    (["offers", "set", "a1", "--lever", "0"], "lever must be > 0"),
    (["offers", "add", "a1", "--title", "x"], "already in the active version"),
    (["offers", "add", "n2", "--rule", "tier == 'x'"], "unknown attribute 'tier'"),
    (["offers", "add", "n2", "--rule", "plan >"], "rule 'plan >'"),
    (["offers", "budget", "a1", "--total", "-5"], "total must be a whole number >= 0"),
    (["offers", "budget", "nope", "--total", "5"], "unknown offer 'nope'"),
    (["offers", "set", "a1", "--valid-from", "soon"], "--valid-from: 'soon'"),
])
def test_bad_offer_commands_get_clear_errors_and_change_nothing(
        trained: tuple[Path, str], settings: Settings, client: redis.Redis, args: list[str],
        message: str) -> None:
    keys = schema.keys_for(settings)
    before = (client.get(keys.offers_rev), client.hgetall(keys.offers_live),
              client.hgetall(keys.budgets))
    code, output = offers_cli(settings, *args)
    assert code != 0 and message in output, output
    assert (client.get(keys.offers_rev), client.hgetall(keys.offers_live),
            client.hgetall(keys.budgets)) == before


@pytest.mark.cluster
def test_declines_suppress_an_offer_and_accepts_remove_it(
        trained: tuple[Path, str], settings: Settings, client: redis.Redis) -> None:
    keys = schema.keys_for(settings)
    with served(settings) as (_, stub, _channel):
        assert ids(ask(stub, "a-test"))[0] == "a5"
        client.hset(keys.live("a-test"), mapping={"d:a5": f"1 {time.time():.0f}",
                                                   "a:b1": f"{time.time():.0f}"})
        answer = ask(stub, "a-test", explain=True)
        assert "a5" not in ids(answer) and "b1" not in ids(answer)
        rules = {r.offer_id: r.rule for r in answer.removed}
        assert rules["a5"] == "suppressed" and rules["b1"] == "already_accepted"


def test_contacts_counted_on_impression_cap_the_channel_but_not_transactional_offers(
        trained: tuple[Path, str], settings: Settings, client: redis.Redis) -> None:
    keys = schema.keys_for(settings)
    with served(settings) as (_, stub, _channel):
        assert len(ask(stub, "a-test", channel="email").offers) > 1
        now = time.time()
        # what RecordFeedback writes for two impressions on email
        client.hset(keys.live("a-test"), "c:email", f"{now - 60:.0f} {now - 30:.0f}")
        capped = ask(stub, "a-test", channel="email", explain=True)
        assert ids(capped) == ["t1"]
        assert "contact_cap" in {r.rule for r in capped.removed}
        assert len(ask(stub, "a-test", channel="app").offers) > 1  # another channel
        for _ in range(3):  # answers are not contacts when counting on impression
            ask(stub, "a-calm", channel="email")
        assert client.hget(keys.live("a-calm"), "c:email") is None


@pytest.mark.cluster
def test_contacts_counted_on_serve_cap_after_max_answers(
        tmp_path: Path, settings: Settings, client: redis.Redis) -> None:
    data = decisioning_data.write(tmp_path, count_on="serve")
    publish(data, settings)
    keys = schema.keys_for(settings)
    with served(settings) as (_, stub, _channel):
        assert len(ask(stub, "a-calm", channel="email").offers) > 1
        assert len(ask(stub, "a-calm", channel="email").offers) > 1
        eventually(lambda: len((client.hget(keys.live("a-calm"), "c:email") or b"").split()) == 2)
        assert ids(ask(stub, "a-calm", channel="email")) == ["t1"]
        assert len(ask(stub, "a-calm", channel="sms").offers) > 1


def test_do_not_contact_list_applies_within_a_second(
        trained: tuple[Path, str], settings: Settings) -> None:
    with served(settings) as (_, stub, _channel):
        assert offers_cli(settings, "contacts", "dnc", "add", "a-test")[0] == 0
        eventually(lambda: ids(ask(stub, "a-test")) == ["t1"])
        reasons = {r.rule for r in ask(stub, "a-test", explain=True).removed}
        assert "do_not_contact" in reasons
        assert offers_cli(settings, "contacts", "dnc", "remove", "a-test")[0] == 0
        eventually(lambda: len(ask(stub, "a-test").offers) > 1)


@pytest.mark.cluster
def test_batch_and_single_answers_decide_alike(
        trained: tuple[Path, str], settings: Settings, client: redis.Redis) -> None:
    keys = schema.keys_for(settings)
    client.hset(keys.live("a3"), "d:a4", f"1 {time.time():.0f}")
    client.hset(keys.live("b7"), "c:email", f"{time.time():.0f} {time.time():.0f}")
    assert offers_cli(settings, "offers", "pause", "b2")[0] == 0
    assert offers_cli(settings, "offers", "budget", "b3", "--count", "accept", "--total",
                      "0")[0] == 0
    customers = ["a-test", "a-calm", "a-nochurn", "a3", "b7", "b8", "stranger", "a0"]
    with served(settings) as (_, stub, _channel):
        time.sleep(0.3)
        batch = list(stub.RecommendBatch(pb.RecommendBatchRequest(
            customer_ids=customers, limit=6, channel="email"), timeout=10))
        for customer, answer in zip(customers, batch, strict=True):
            single = ask(stub, customer, limit=6, channel="email")
            assert answer.customer_id == customer
            assert ids(answer) == ids(single), customer
            assert [o.p_accept for o in answer.offers] == [o.p_accept for o in single.offers]
            assert [list(o.reasons) for o in answer.offers] == [
                list(o.reasons) for o in single.offers]
            assert answer.strategy == single.strategy
            assert "b2" not in ids(answer) and "b3" not in ids(answer)
        assert "a4" not in ids(batch[3]) and ids(batch[4]) == ["t1"]
