"""Champion / challenger and shadow (`recsvc experiments`) against a real Redis and a real
server, in both server models: the split routes the challenger's share by the salted customer
hash and every answer comes from one version; shadow logs the challenger's offers and never
serves them; promote switches atomically under concurrent calls; stop ends it; bad input is one
line."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import grpc
import pytest
import redis

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.experiments.challenger import Experiment
from recsvc.experiments.decision_log import Decision
from recsvc.store.control.registry import Registry
from recsvc.v1 import offers_pb2 as pb
from recsvc.v1 import offers_pb2_grpc as pb_grpc
from tests.integration.helpers import cli
from tests.integration.serving import (
    cluster_env,
    make_data,
    reference_ranking,
    running,
    train,
    wait_for_version,
)
from training import localredis

pytestmark = [pytest.mark.integration, pytest.mark.both_models]

TEMPLATE = "cctemplate"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_data(tmp_path_factory.mktemp("challenger"))


@pytest.fixture(scope="module")
def trained(data: Path, redis_server: localredis.LocalRedis) -> tuple[str, str]:
    """Two versions trained once (different seeds) under a template prefix; the first active."""
    client = redis.Redis.from_url(redis_server.url)
    if client.exists(f"{TEMPLATE}:active"):  # the other server model's run trained them
        versions = sorted(v.decode() for v in client.hkeys(f"{TEMPLATE}:versions"))
        return versions[0], versions[1]
    return train_two(data, redis_server.url, TEMPLATE)


def train_two(data: Path, url: str, prefix: str, cluster: bool = False) -> tuple[str, str]:
    """Two versions (different seeds), the first active."""
    champion = train(data, url, prefix, cluster=cluster)
    challenger = train(data, url, prefix, seed=99, cluster=cluster)
    result = cli(["models", "activate", champion], url, prefix, cluster_env(cluster))
    assert result.returncode == 0, result.stderr
    return champion, challenger


@pytest.fixture
def versions(request: pytest.FixtureRequest, settings: Settings, client: redis.Redis,
             data: Path) -> tuple[str, str]:
    """The template's keys copied under this test's prefix (COPY: no training per test); on a
    cluster (COPY stays within a slot) the two versions trained under the test's prefix."""
    if settings.redis_cluster:
        return train_two(data, settings.redis_url, settings.key_prefix, cluster=True)
    trained: tuple[str, str] = request.getfixturevalue("trained")
    for key in client.scan_iter(match=f"{TEMPLATE}:*", count=1000):
        client.copy(key, settings.key_prefix + key.decode()[len(TEMPLATE):])
    return trained


def known_ids(data: Path, count: int) -> list[str]:
    lines = (data / "customers.csv").read_text().splitlines()[1:count + 1]
    return [line.split(",")[0].strip('"') for line in lines]


def experiments(settings: Settings, *args: str) -> tuple[int, str, str]:
    result = cli(["experiments", *args], settings.redis_url, settings.key_prefix,
                 cluster_env(settings.redis_cluster))
    return result.returncode, result.stdout, result.stderr


def wait_for_challenger(stub: pb_grpc.RetentionOfferServiceStub, customer_id: str,
                        version: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = stub.Recommend(pb.RecommendRequest(customer_id=customer_id), timeout=5)
        if reply.model_version == version:
            return
        time.sleep(0.05)
    raise AssertionError(f"{customer_id} was never answered by {version}")


def logged(client: redis.Redis, keys: schema.Keys, at_least: int, since: float = 0.0
           ) -> list[Decision]:
    """The decision log's entries of answers begun at or after ``since`` (epoch seconds)."""
    deadline = time.monotonic() + 5
    while True:
        entries = [d for s in range(schema.SHARDS) for _, fields in
                   client.xrange(keys.decisions(s))
                   if (d := Decision.from_fields(fields)).ts >= since]
        if len(entries) >= at_least or time.monotonic() > deadline:
            return entries
        time.sleep(0.05)


@pytest.mark.cluster
def test_split_serves_the_challenger_to_its_share_and_every_answer_from_one_version(
        versions: tuple[str, str], settings: Settings, client: redis.Redis,
        data: Path) -> None:
    champion, challenger = versions
    ids = known_ids(data, 400)
    code, out, err = experiments(settings, "start", "--challenger", challenger, "--share",
                                 "0.3", "--salt", "split-1")
    assert code == 0, err
    assert f"challenger {challenger}: split, share 0.3" in out
    experiment = Experiment(challenger, "split", 0.3, "split-1", 0.0)
    routed = {c for c in ids if experiment.routes(c)}
    keys = schema.keys_for(settings)
    with running(settings) as (_, stub, _channel):
        wait_for_challenger(stub, sorted(routed)[0], challenger)
        time.sleep(0.01)  # answers before this millisecond are not counted
        since = int(time.time() * 1000) / 1000
        answers = {c: stub.Recommend(pb.RecommendRequest(customer_id=c), timeout=5)
                   for c in ids}
        batch = list(stub.RecommendBatch(pb.RecommendBatchRequest(customer_ids=ids[:80]),
                                         timeout=10))
        entries = logged(client, keys, len(ids) + 80, since)
    # The share: a binomial count, within 4 standard deviations of 0.3 n.
    n = len(ids)
    assert abs(len(routed) - 0.3 * n) < 4 * math.sqrt(n * 0.3 * 0.7)
    for customer_id, answer in answers.items():
        version = challenger if customer_id in routed else champion
        assert (answer.model_version, answer.arm) == (
            version, "challenger" if customer_id in routed else "treatment")
        if answer.strategy == pb.STRATEGY_PERSONALIZED:  # the whole answer from that version
            assert [o.offer_id for o in answer.offers] == reference_ranking(
                client, settings.key_prefix, version, customer_id,
                cluster=settings.redis_cluster)
    assert [(b.model_version, [o.offer_id for o in b.offers]) for b in batch] == [
        (answers[c].model_version, [o.offer_id for o in answers[c].offers]) for c in ids[:80]]
    assert len(entries) == len(ids) + 80
    assert {(e.version, e.arm) for e in entries} == {(champion, "treatment"),
                                                      (challenger, "challenger")}
    assert all((e.version == challenger) == (e.customer_id in routed) for e in entries)


def test_shadow_never_serves_the_challenger_but_logs_its_offers(
        versions: tuple[str, str], settings: Settings, client: redis.Redis,
        data: Path) -> None:
    champion, challenger = versions
    ids = known_ids(data, 200)
    code, out, err = experiments(settings, "start", "--challenger", challenger, "--share",
                                 "0.5", "--shadow", "--salt", "shadow-1")
    assert code == 0, err
    assert "shadowed (logged, not served)" in out
    experiment = Experiment(challenger, "shadow", 0.5, "shadow-1", 0.0)
    keys = schema.keys_for(settings)
    with running(settings) as (_, stub, _channel):
        wait_for_version(stub, champion)
        routed = next(c for c in ids if experiment.routes(c))
        deadline = time.monotonic() + 5  # until the watcher follows the experiment
        while not any(e.candidate_version for e in logged(client, keys, 0)):
            assert time.monotonic() < deadline, "the watcher never followed the experiment"
            stub.Recommend(pb.RecommendRequest(customer_id=routed), timeout=5)
            time.sleep(0.05)
        time.sleep(0.01)  # answers before this millisecond are not counted
        since = int(time.time() * 1000) / 1000
        answers = {c: stub.Recommend(pb.RecommendRequest(customer_id=c), timeout=5)
                   for c in ids}
        batch = list(stub.RecommendBatch(pb.RecommendBatchRequest(customer_ids=ids[:50]),
                                         timeout=10))
        entries = logged(client, keys, len(ids) + 50, since)
    assert {a.model_version for a in [*answers.values(), *batch]} == {champion}
    assert {a.arm for a in answers.values()} == {"treatment"}
    assert len(entries) == len(ids) + 50
    shadowed = 0
    for entry in entries:
        assert entry.version == champion and entry.arm == "treatment"
        if experiment.routes(entry.customer_id):
            shadowed += 1
            assert entry.candidate_version == challenger
            assert list(entry.candidate) == reference_ranking(
                client, settings.key_prefix, challenger, entry.customer_id)
        else:
            assert (entry.candidate_version, entry.candidate) == ("", ())
    assert 0 < shadowed < len(entries)


def test_promote_under_concurrent_load_switches_atomically_without_errors_or_mixed_answers(
        versions: tuple[str, str], settings: Settings, client: redis.Redis,
        data: Path) -> None:
    champion, challenger = versions
    ids = known_ids(data, 20)
    assert experiments(settings, "start", "--challenger", challenger, "--share", "0.5")[0] == 0
    seen: list[tuple[float, str, str, str, list[str]]] = []
    errors: list[Exception] = []
    stop = threading.Event()
    with running(settings) as (_, stub, _channel):
        def load() -> None:
            i = 0
            while not stop.is_set():
                customer_id = ids[i % len(ids)]
                i += 1
                started = time.monotonic()
                try:
                    r = stub.Recommend(pb.RecommendRequest(customer_id=customer_id), timeout=5)
                    seen.append((started, customer_id, r.model_version, r.arm,
                                 [o.offer_id for o in r.offers]))
                except grpc.RpcError as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        code, out, err = experiments(settings, "promote")
        wait_for_version(stub, challenger)
        switched = time.monotonic()
        time.sleep(0.3)
        stop.set()
        for thread in threads:
            thread.join()
    assert code == 0, err
    assert f"active version is now {challenger} (previous: {champion})" in out
    assert not errors
    assert {v for _, _, v, _, _ in seen} == {champion, challenger}
    references = {(c, v): reference_ranking(client, settings.key_prefix, v, c)
                  for c in ids for v in (champion, challenger)}
    mixed = [s for s in seen if references[(s[1], s[2])] != s[4]]
    assert not mixed, f"{len(mixed)} of {len(seen)} answers mix two versions"
    after = [s for s in seen if s[0] > switched]
    assert after and {(v, arm) for _, _, v, arm, _ in after} == {(challenger, "treatment")}
    keys = schema.keys_for(settings)
    assert client.get(keys.active) == challenger.encode()
    assert client.get(keys.previous) == champion.encode()
    assert not client.exists(keys.experiments)
    code, out, _ = experiments(settings, "status")
    assert code == 0 and "no experiment is running" in out and challenger in out


def test_stop_ends_the_experiment_and_the_champion_answers_everyone(
        versions: tuple[str, str], settings: Settings, data: Path) -> None:
    champion, challenger = versions
    ids = known_ids(data, 60)
    experiment = Experiment(challenger, "split", 0.5, "stop-1", 0.0)
    routed = next(c for c in ids if experiment.routes(c))
    assert experiments(settings, "start", "--challenger", challenger, "--share", "0.5",
                       "--salt", "stop-1")[0] == 0
    with running(settings) as (_, stub, _channel):
        wait_for_challenger(stub, routed, challenger)
        code, out, err = experiments(settings, "stop")
        assert code == 0, err
        assert f"experiment stopped: challenger {challenger}" in out
        deadline = time.monotonic() + 5
        while stub.Recommend(pb.RecommendRequest(customer_id=routed),
                             timeout=5).model_version != champion:
            assert time.monotonic() < deadline, "the challenger kept answering after stop"
            time.sleep(0.05)
        answers = [stub.Recommend(pb.RecommendRequest(customer_id=c), timeout=5) for c in ids]
    assert {(a.model_version, a.arm) for a in answers} == {(champion, "treatment")}


def test_bad_input_is_one_clear_line_and_the_challenger_survives_retention(
        versions: tuple[str, str], settings: Settings, client: redis.Redis) -> None:
    champion, challenger = versions

    def refused(*args: str, exit_code: int = 1) -> str:
        code, out, err = experiments(settings, *args)
        assert code == exit_code, (args, out, err)
        assert len(err.strip().splitlines()) == 1, err
        return err

    for share in ("0", "1.5", "-0.1", "abc", "nan"):
        assert "share" in refused("start", "--challenger", challenger, "--share", share,
                                  exit_code=2)
    assert "unknown model version 'nope'" in refused("start", "--challenger", "nope",
                                                     "--share", "0.1")
    assert "already the active version" in refused("start", "--challenger", champion,
                                                   "--share", "0.1")
    assert "no experiment is running" in refused("stop")
    assert "nothing to promote" in refused("promote")
    assert experiments(settings, "start", "--challenger", challenger, "--share", "1")[0] == 0
    assert "already running (challenger " + challenger in refused(
        "start", "--challenger", challenger, "--share", "0.2")
    # Retention: the challenger is kept even when it is neither active nor previous.
    keys = schema.keys_for(settings)
    client.delete(keys.previous)
    registry = Registry(client, keys)
    assert registry.collect_garbage(keep=set()) == []
    with pytest.raises(Exception, match="running experiment's challenger"):
        registry.delete(challenger)
    assert {i.version: i.role for i in registry.all()}[challenger] == "challenger"
    assert experiments(settings, "stop")[0] == 0
    assert registry.collect_garbage(keep=set()) == [challenger]
