"""Budgets: several real server processes race for the last units and none is overspent; an
exhausted offer disappears from every replica within a second."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
import redis

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.decisioning.budgets import day_of
from recsvc.store.control.budgets import budgets_of, record_accept
from recsvc.v1 import offers_pb2 as pb
from recsvc.v1 import offers_pb2_grpc as pb_grpc
from tests.integration import decisioning_data
from tests.integration.helpers import cli, redis_env
from tests.integration.test_decisioning import eventually, ids, publish, served
from training import localredis

# On a cluster (marked per test): what the feedback script counts per shard. The on-serve
# reservation runs on the control slot as on a single Redis (the hot path's tests cover it).
pytestmark = [pytest.mark.integration, pytest.mark.both_models]


@contextmanager
def servers(settings: Settings, count: int) -> Iterator[list[pb_grpc.RetentionOfferServiceStub]]:
    """``count`` separate ``recsvc serve`` processes, each on its own port."""
    procs, channels, stubs = [], [], []
    try:
        for _ in range(count):
            port = localredis.free_port()
            env = dict(os.environ, **redis_env(settings.redis_url, settings.key_prefix),
                       RECSVC_HOST="127.0.0.1",
                       RECSVC_PORT=str(port), RECSVC_MODEL_POLL_MS="100",
                       RECSVC_LOG_LEVEL="WARNING",
                       # a busy test machine must not turn answers into degraded ones
                       RECSVC_REDIS_TIMEOUT_MS="500")
            procs.append(subprocess.Popen([sys.executable, "-m", "recsvc", "serve"], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            channels.append(channel)
            stubs.append(pb_grpc.RetentionOfferServiceStub(channel))
        for stub in stubs:
            eventually(lambda s=stub: _answers(s), within=30)
        yield stubs
    finally:
        for channel in channels:
            channel.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)


def _answers(stub: pb_grpc.RetentionOfferServiceStub) -> bool:
    try:
        stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=1)
        return True
    except grpc.RpcError:
        return False


def test_processes_racing_for_the_last_units_never_overspend(
        tmp_path: Path, settings: Settings, client: redis.Redis) -> None:
    data = decisioning_data.write(tmp_path)
    publish(data, settings)
    keys = schema.keys_for(settings)
    result = cli(["offers", "budget", "a5", "--total", "5"], settings.redis_url,
                 settings.key_prefix)
    assert result.returncode == 0, result.stderr
    with servers(settings, 3) as stubs:
        served: list[list[str]] = []
        lock = threading.Lock()

        def hammer(stub: pb_grpc.RetentionOfferServiceStub) -> None:
            for _ in range(20):
                answer = stub.Recommend(pb.RecommendRequest(customer_id="a-test"), timeout=5)
                with lock:
                    served.append(ids(answer))

        threads = [threading.Thread(target=hammer, args=(stub,)) for stub in stubs * 2]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(served) == 120
        assert sum("a5" in answer for answer in served) == 5  # not one unit overspent
        assert int(budgets_of(client, keys)["a5:used"]) == 5
        # a-test has 6 eligible offers: an answer without a unit of a5 holds the other 5
        assert all(len(answer) == (6 if "a5" in answer else 5) for answer in served)
        for stub in stubs:  # gone everywhere without asking the script
            eventually(lambda s=stub: "a5" not in ids(s.Recommend(
                pb.RecommendRequest(customer_id="a-test"), timeout=5)))


def test_an_offer_out_of_vouchers_disappears_from_every_replica_within_a_second(
        tmp_path: Path, settings: Settings, client: redis.Redis) -> None:
    data = decisioning_data.write(tmp_path)
    publish(data, settings)
    keys = schema.keys_for(settings)
    result = cli(["offers", "budget", "a5", "--count", "accept", "--total", "2"],
                 settings.redis_url, settings.key_prefix)
    assert result.returncode == 0, result.stderr
    with servers(settings, 2) as stubs:
        for stub in stubs:
            eventually(lambda s=stub: ids(s.Recommend(
                pb.RecommendRequest(customer_id="a-test"), timeout=5))[0] == "a5")
        assert record_accept(client, keys, "a5", "main")  # what RecordFeedback counts
        time.sleep(0.3)
        for stub in stubs:  # one voucher left: still served
            answer = stub.Recommend(pb.RecommendRequest(customer_id="a-test"), timeout=5)
            assert ids(answer)[0] == "a5", (answer.strategy, answer.reason)
        assert record_accept(client, keys, "a5", "main")
        started = time.monotonic()
        for stub in stubs:
            eventually(lambda s=stub: "a5" not in ids(s.Recommend(
                pb.RecommendRequest(customer_id="a-test"), timeout=5)))
        assert time.monotonic() - started < 1.0
        assert budgets_of(client, keys)["a5:used:s:main"] == "2"


@pytest.mark.cluster
def test_record_feedback_counts_a_voucher_once_per_customer_and_offer(
        tmp_path: Path, settings: Settings, client: redis.Redis) -> None:
    """Through the real RecordFeedback: an accept uses one unit of an on-accept budget, the same
    customer's redemption and a retried event id use none, and the offer leaves the answers when
    the last voucher is gone."""

    data = decisioning_data.write(tmp_path)
    publish(data, settings)
    keys = schema.keys_for(settings)
    result = cli(["offers", "budget", "a5", "--count", "accept", "--total", "2"],
                 settings.redis_url, settings.key_prefix)
    assert result.returncode == 0, result.stderr

    def event(event_id: str, customer: str, name: str) -> pb.FeedbackEvent:
        return pb.FeedbackEvent(event_id=event_id, customer_id=customer, offer_id="a5",
                                event=name)

    with served(settings) as (_, stub, _channel):
        eventually(lambda: ids(stub.Recommend(
            pb.RecommendRequest(customer_id="a-test"), timeout=5))[0] == "a5", within=10)
        stub.RecordFeedback(pb.RecordFeedbackRequest(events=[
            event("v1", "a0", "accept"), event("v2", "a0", "redeem"),
            event("v1", "a0", "accept")]), timeout=5)
        assert budgets_of(client, keys)["a5:used"] == "1"
        assert ids(stub.Recommend(pb.RecommendRequest(customer_id="a-test"), timeout=5))[0] \
            == "a5"
        stub.RecordFeedback(pb.RecordFeedbackRequest(events=[event("v3", "a1", "accept")]),
                            timeout=5)
        assert budgets_of(client, keys)["a5:used"] == "2"
        eventually(lambda: "a5" not in ids(stub.Recommend(
            pb.RecommendRequest(customer_id="a-test"), timeout=5)))



@pytest.mark.cluster
def test_on_accept_units_count_once_across_shards_and_exhaust_the_offer_within_a_poll(
        tmp_path: Path, settings: Settings, client: redis.Redis) -> None:
    """Accepts of customers on different shards each use one unit (on a cluster in their
    shard's counters, summed by the watcher), a redelivered batch and a redemption none, and the
    server sees the offer exhausted within a poll of the last unit (read from its budget state:
    Recommend on a cluster is the hot path's routing, tested with it)."""
    data = decisioning_data.write(tmp_path)
    publish(data, settings)
    keys = schema.keys_for(settings)
    result = cli(["offers", "budget", "a5", "--count", "accept", "--total", "3",
                  "--per-day", "10"], settings.redis_url, settings.key_prefix)
    assert result.returncode == 0, result.stderr
    customers: dict[int, str] = {}  # three customers on three shards
    for i in range(100):
        customers.setdefault(schema.shard_of(f"a{i}"), f"a{i}")
    first, second, third = list(customers.values())[:3]

    def accept(event_id: str, customer: str, name: str = "accept") -> pb.FeedbackEvent:
        return pb.FeedbackEvent(event_id=event_id, customer_id=customer, offer_id="a5",
                                event=name, segment="main")

    with served(settings) as (server, stub, _channel):
        holder = server.watcher.holder
        eventually(lambda: holder.budgets.on_accept == (("a5", True),), within=5)
        batch = pb.RecordFeedbackRequest(events=[accept("u1", first), accept("u2", second)])
        assert {r.status for r in stub.RecordFeedback(batch, timeout=5).results} == \
            {pb.FEEDBACK_STATUS_RECORDED}
        again = stub.RecordFeedback(batch, timeout=5)  # the client's retry of the same batch
        assert {r.status for r in again.results} == {pb.FEEDBACK_STATUS_DUPLICATE}
        stub.RecordFeedback(pb.RecordFeedbackRequest(events=[accept("u3", first, "redeem")]),
                            timeout=5)
        counted = budgets_of(client, keys)
        assert counted["a5:used"] == "2" and counted["a5:used:s:main"] == "2"
        time.sleep(0.3)  # a few polls: one unit left, not exhausted
        assert "a5" not in holder.budgets.exhausted
        stub.RecordFeedback(pb.RecordFeedbackRequest(events=[accept("u4", third)]), timeout=5)
        started = time.monotonic()
        eventually(lambda: "a5" in holder.budgets.exhausted, within=1.0)
        assert time.monotonic() - started < 1.0
        counted = budgets_of(client, keys)
        assert counted["a5:used"] == "3"
        assert counted[f"a5:used:d:{day_of(time.time())}"] == "3"
        if keys.cluster:  # counted by each event's shard, never in the control slot's hash
            assert client.hget(keys.budgets, "a5:used") is None
            assert [client.hget(keys.budget_use(schema.shard_of(c)), "a5:used")
                    for c in (first, second, third)] == [b"1", b"1", b"1"]
        reset = cli(["offers", "budget", "a5", "--clear", "--reset"], settings.redis_url,
                    settings.key_prefix)
        assert reset.returncode == 0, reset.stderr
        assert not any(f.startswith("a5") for f in budgets_of(client, keys))
        eventually(lambda: "a5" not in holder.budgets.exhausted, within=1.0)
