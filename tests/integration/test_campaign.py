"""`recsvc campaign` end to end: a real Redis, a real trained model, the real gRPC server as the
reference for every customer's answer; budgets by value; bad input; --dry-run. The tests marked
``cluster`` run on a single Redis and on the session's 3-master Redis Cluster; the last ones
check the cluster's routing (MOVED followed, an unreachable master named) on the cluster."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from recsvc.campaign import run as campaign_run
from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.core.errors import StoreError
from recsvc.experiments.decision_log import Decision as LoggedDecision
from recsvc.store.bulk import campaign as store_campaign
from recsvc.store.bulk.campaign import CampaignStore
from recsvc.store.control import budgets as budget_scripts
from recsvc.store.transport.slots import SLOTS, SlotMap
from recsvc.v1 import offers_pb2 as pb
from tests.integration import decisioning_data
from tests.integration.helpers import cli
from tests.integration.serving import PERSONAL_CONFIG, make_data, running, train, wait_for_version
from training import localredis

pytestmark = pytest.mark.integration

DECISIONING = decisioning_data.DECISIONING.format(count_on="impression")


def campaign(settings: Settings, ids: Path, out: Path, *more: str,
             env: dict[str, str] | None = None) -> tuple[int, str, dict[str, Any]]:
    result = cli(["campaign", "--customers", str(ids), "--out", str(out), *more],
                 settings.redis_url, settings.key_prefix, env)
    summary = json.loads(result.stdout) if result.returncode == 0 else {}
    return result.returncode, result.stderr, summary


def answers(path: Path) -> dict[str, list[dict[str, Any]]]:
    """customer id -> their rows with an offer, in rank order ([] for no offer)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in pq.read_table(path).to_pylist():
        rows = out.setdefault(row["customer_id"], [])
        if row["offer_id"] is not None:
            rows.append(row)
    for rows in out.values():
        rows.sort(key=lambda r: r["rank"])
    return out


def live_state(client: redis.Redis, keys: schema.Keys, now: float, ids: list[str],
               offers: list[str]) -> None:
    """Accepts, declines (suppression), contacts (caps) and a do-not-contact entry."""
    for k, customer_id in enumerate(ids[:40]):
        key = keys.live(customer_id)
        kind = k % 4
        if kind == 0:
            client.hset(key, f"a:{offers[k % len(offers)]}", str(int(now)))
        elif kind == 1:
            client.hset(key, f"d:{offers[(k + 3) % len(offers)]}", f"1 {int(now) - 60}")
        elif kind == 2:
            client.hset(key, "c:email", f"{int(now) - 100} {int(now) - 50}")
        else:
            client.hset(key, f"n:{offers[(k + 1) % len(offers)]}", f"3 {int(now) - 10}")
    client.sadd(keys.do_not_contact, ids[45])
    client.incr(f"{keys.do_not_contact}:rev")


def compare(settings: Settings, ids: list[str], got: dict[str, list[dict[str, Any]]],
            limit: int, channel: str, context: dict[str, str] | None = None) -> int:
    """Every customer's campaign answer equals what Recommend answers; the offers compared."""
    compared = 0
    with running(settings) as (_server, stub, _channel):
        for customer_id in ids:
            reply = stub.Recommend(pb.RecommendRequest(customer_id=customer_id, limit=limit,
                                                       channel=channel, context=context or {}),
                                   timeout=10)
            mine = got[customer_id]
            assert [r["offer_id"] for r in mine] == [o.offer_id for o in reply.offers], \
                customer_id
            if mine:
                assert mine[0]["arm"] == (reply.arm or "treatment"), customer_id
            for row, offer in zip(mine, reply.offers, strict=True):
                assert row["p_accept"] == pytest.approx(offer.p_accept, abs=1e-5)
                assert row["objective"] == pytest.approx(offer.objective, abs=1e-5)
                assert list(filter(None, row["reasons"].split(","))) == list(offer.reasons)
            compared += len(mine)
    return compared


@pytest.fixture(scope="module")
def datagen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_data(tmp_path_factory.mktemp("campaign"), customers=1500)


@pytest.mark.cluster
def test_campaign_equals_recommend_with_policy(datagen: Path, settings: Settings,
                                               client: redis.Redis, keys: schema.Keys,
                                               tmp_path: Path) -> None:
    """A few hundred customers (known, unknown, with accepts, declines, ignored impressions,
    contacts over the cap, do-not-contact): the campaign's offers are Recommend's, in order."""
    version = train(datagen, settings.redis_url, settings.key_prefix,
                    PERSONAL_CONFIG + DECISIONING)
    known = sorted(k.decode() for key in keys.customer_hashes(version)
                   for k in client.hkeys(key))[:300]
    offers = json.loads(client.get(keys.offers(version)))
    live_state(client, keys, time.time(), known, [o["offer_id"] for o in offers])
    ids = [*known, "nobody-1", "nobody-2", "Q1", "N1"]
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(ids) + "\n")
    code, err, summary = campaign(settings, path, tmp_path / "out.parquet", "--channel",
                                  "email", "--limit", "5", "--dry-run")
    assert code == 0, err
    assert summary["customers"] == len(ids) and summary["unknown"] == 2
    # The bulk path decided most of them; the live-state ones went one by one.
    assert 40 <= summary["decided_one_by_one"] < 100
    got = answers(tmp_path / "out.parquet")
    assert set(got) == set(ids)
    with running(settings) as (_server, stub, _channel):
        wait_for_version(stub, version)
    assert compare(settings, ids, got, 5, "email") > 1000


def test_campaign_equals_recommend_with_rules(settings: Settings, client: redis.Redis,
                                              tmp_path: Path) -> None:
    """Customer rules (attributes, context) and a transactional offer exempt from caps."""
    data = decisioning_data.write(tmp_path / "data")
    result = cli(["train", "--customers", str(data / "customers.csv"), "--offers",
                  str(data / "offers.csv"), "--interactions", str(data / "interactions.csv"),
                  "--config", str(data / "config.toml")], settings.redis_url,
                 settings.key_prefix)
    assert result.returncode == 0, result.stderr
    ids = [f"a{i}" for i in range(40)] + [f"b{i}" for i in range(80)] + \
        ["a-test", "a-calm", "a-nochurn", "stranger"]
    path = tmp_path / "ids.csv"
    path.write_text("customer_id\n" + "\n".join(ids) + "\n")
    code, err, _ = campaign(settings, path, tmp_path / "out.parquet", "--context",
                            "intent=cancel", "--dry-run")
    assert code == 0, err
    got = answers(tmp_path / "out.parquet")
    assert compare(settings, ids, got, 10, "", {"intent": "cancel"}) > 100
    assert "b4" in [r["offer_id"] for r in got["a0"]]  # the context rule held


def test_campaign_equals_recommend_with_a_holdout(settings: Settings, tmp_path: Path) -> None:
    """Control customers (the holdout's popular baseline) go through serving's own core: the
    same arm and offers as the server configured alike."""
    data = decisioning_data.write(tmp_path / "data")
    result = cli(["train", "--customers", str(data / "customers.csv"), "--offers",
                  str(data / "offers.csv"), "--interactions", str(data / "interactions.csv"),
                  "--config", str(data / "config.toml")], settings.redis_url,
                 settings.key_prefix)
    assert result.returncode == 0, result.stderr
    ids = [f"a{i}" for i in range(40)] + [f"b{i}" for i in range(80)]
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(ids) + "\n")
    holdout = {"RECSVC_HOLDOUT_SHARE": "0.5", "RECSVC_HOLDOUT_BASELINE": "popular",
               "RECSVC_HOLDOUT_SALT": "campaign-test"}
    code, err, summary = campaign(settings, path, tmp_path / "out.parquet", "--limit", "4",
                                  "--dry-run", env=holdout)
    assert code == 0, err
    got = answers(tmp_path / "out.parquet")
    arms = {r["customer_id"]: r["arm"] for r in pq.read_table(tmp_path / "out.parquet")
            .to_pylist()}
    assert 20 < sum(a == "control" for a in arms.values()) < 100
    assert summary["decided_one_by_one"] == sum(a == "control" for a in arms.values())
    alike = replace(settings, holdout_share=0.5, holdout_baseline="popular",
                    holdout_salt="campaign-test")
    assert compare(alike, ids, got, 4, "") > 300


def _budget_world(settings: Settings, tmp_path: Path) -> Path:
    data = decisioning_data.write(tmp_path / "data", rules={})
    result = cli(["train", "--customers", str(data / "customers.csv"), "--offers",
                  str(data / "offers.csv"), "--interactions", str(data / "interactions.csv"),
                  "--config", str(data / "config.toml")], settings.redis_url,
                 settings.key_prefix)
    assert result.returncode == 0, result.stderr
    return data


RETENTION = {"RECSVC_OBJECTIVE": "retention"}  # p x churn_risk x clv - cost: per customer


@pytest.mark.cluster
def test_budget_goes_to_the_highest_objective(settings: Settings, client: redis.Redis,
                                              keys: schema.Keys, tmp_path: Path) -> None:
    """3 customers, an offer with 2 units: the two with its highest objective get it; the third
    gets their next candidate instead; 2 units used."""
    _budget_world(settings, tmp_path)
    ids = tmp_path / "ids.txt"
    ids.write_text("b1\nb2\nb3\n")
    free = tmp_path / "free.parquet"
    assert campaign(settings, ids, free, "--limit", "3", "--dry-run", env=RETENTION)[0] == 0
    before = answers(free)
    offer = before["b1"][0]["offer_id"]
    assert all(r[0]["offer_id"] == offer for r in before.values())  # everyone's best
    worth = {c: rows[0]["objective"] for c, rows in before.items()}
    assert len(set(worth.values())) == 3
    winners = sorted(worth, key=worth.__getitem__)[1:]
    budget_scripts.set_budget(client, keys, offer, {"count": "serve", "total": 2})
    out = tmp_path / "out.parquet"
    code, err, summary = campaign(settings, ids, out, "--limit", "3", env=RETENTION)
    assert code == 0, err
    got = answers(out)
    assert sorted(c for c, rows in got.items()
                  if offer in [r["offer_id"] for r in rows]) == sorted(winners)
    loser = (set(worth) - set(winners)).pop()
    assert [r["offer_id"] for r in got[loser]] == \
        [r["offer_id"] for r in before[loser] if r["offer_id"] != offer] + \
        [got[loser][-1]["offer_id"]]
    assert len(got[loser]) == 3
    assert int(client.hget(keys.budgets, f"{offer}:used")) == 2
    assert summary["units_reserved"] == 2 and summary["units_refused"] == 0


class _Racing(CampaignStore):
    """A real second client takes units of the offer just before the campaign reserves."""

    taken = 0
    other: redis.Redis | None = None  # the second client (a cluster client on a cluster)
    offer = ""

    def reserve(self, offer_id: str, day: str, segments: Any) -> list[bool]:
        if offer_id == _Racing.offer and not _Racing.taken:
            other = _Racing.other
            assert other is not None
            for _ in range(5):
                granted = other.eval(budget_scripts.RESERVE_LUA, 1, self.keys.budgets, day, "",
                                     "1", offer_id, "1")
                _Racing.taken += len(granted)
        return super().reserve(offer_id, day, segments)


@pytest.mark.cluster
def test_never_overspent_when_another_process_reserves(
        settings: Settings, client: redis.Redis, keys: schema.Keys, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _budget_world(settings, tmp_path)
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(f"b{i}" for i in range(80)) + "\n")
    free = tmp_path / "free.parquet"
    assert campaign(settings, ids, free, "--limit", "2", "--dry-run")[0] == 0
    offer = answers(free)["b0"][0]["offer_id"]
    budget_scripts.set_budget(client, keys, offer, {"count": "serve", "total": 20})
    _Racing.other, _Racing.offer, _Racing.taken = client, offer, 0
    monkeypatch.setattr(campaign_run, "CampaignStore", _Racing)
    monkeypatch.setattr(store_campaign, "RESERVE_UNITS", 4)  # several script calls per offer
    summary = campaign_run.run(settings, campaign_run.Options(
        ids, tmp_path / "out.parquet", limit=2))
    assert _Racing.taken == 5
    got = answers(tmp_path / "out.parquet")
    holders = [c for c, rows in got.items() if offer in [r["offer_id"] for r in rows]]
    assert int(client.hget(keys.budgets, f"{offer}:used")) == 20
    assert len(holders) == 15  # 20 units, 5 taken meanwhile: never more than what was left
    assert summary.units_refused == 5 and summary.units_reserved == 15
    assert all(len(rows) == 2 for rows in got.values())  # refused customers were refilled


def test_bad_ids_are_named_by_line(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("C1\n\nC2\n" + "x" * 300 + "\nC1\n")
    code, err, _ = campaign(settings, path, tmp_path / "out.parquet")
    assert code == 2
    assert "line 2: customer id: must not be empty" in err
    assert "line 4: customer id: longer than 256 bytes" in err
    assert "line 5: customer id 'C1' repeats line 1" in err
    assert not (tmp_path / "out.parquet").exists()


def _snapshot(client: redis.Redis, prefix: str) -> dict[bytes, bytes]:
    """Every key of the test (on a cluster the control keys are ``{prefix}:...``)."""
    return {k: client.dump(k) for pattern in (f"{prefix}:*", f"{{{prefix}}}:*")
            for k in client.scan_iter(match=pattern, count=1000)}


@pytest.mark.cluster
def test_dry_run_leaves_redis_unchanged_and_a_real_run_logs(
        settings: Settings, client: redis.Redis, keys: schema.Keys, tmp_path: Path) -> None:
    _budget_world(settings, tmp_path)
    budget_scripts.set_budget(client, keys, "a1", {"count": "serve", "total": 3})
    ids = tmp_path / "ids.txt"
    names = [f"b{i}" for i in range(20)] + ["stranger"]
    ids.write_text("\n".join(names) + "\n")
    before = _snapshot(client, settings.key_prefix)
    code, err, summary = campaign(settings, ids, tmp_path / "dry.parquet", "--channel", "sms",
                                  "--dry-run")
    assert code == 0, err
    assert _snapshot(client, settings.key_prefix) == before
    assert summary["decisions_logged"] == 0
    code, err, summary = campaign(settings, ids, tmp_path / "out.parquet", "--channel", "sms")
    assert code == 0, err
    assert summary["decisions_logged"] == len(names)
    got = answers(tmp_path / "out.parquet")
    logged: dict[str, LoggedDecision] = {}
    for shard in range(schema.SHARDS):
        for _id, fields in client.xrange(keys.decisions(shard)):
            entry = LoggedDecision.from_fields(fields)
            logged[entry.customer_id] = entry
    assert set(logged) == set(names)
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    for customer_id, entry in logged.items():
        assert list(entry.offers) == [r["offer_id"] for r in got[customer_id]]
        assert entry.decision_id in {r["decision_id"] for r in table
                                     if r["customer_id"] == customer_id}
        assert entry.channel == "sms"
    assert int(client.hget(keys.budgets, "a1:used") or 0) <= 3
    # The report counts them as serving's answers.
    result = cli(["report", "--out", str(tmp_path / "report.html"), "--json",
                  str(tmp_path / "report.json")], settings.redis_url, settings.key_prefix)
    assert result.returncode == 0, result.stderr


def test_unknown_customer_row_and_empty_answers(settings: Settings, tmp_path: Path) -> None:
    _budget_world(settings, tmp_path)
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"customer_id": ["b0", "stranger"]}), path)
    out = tmp_path / "out.parquet"
    code, err, summary = campaign(settings, path, out, "--limit", "0", "--dry-run")
    assert code == 0, err
    rows = pq.read_table(out).to_pylist()
    stranger = [r for r in rows if r["customer_id"] == "stranger"]
    assert stranger and not stranger[0]["known"]
    assert stranger[0]["strategy"] == "global_popular"
    assert summary["unknown"] == 1
    # Everyone held out with no offer: one row each, a null offer, the reason.
    code, err, summary = campaign(settings, path, out, "--dry-run",
                                  env={"RECSVC_HOLDOUT_SHARE": "1.0"})
    assert code == 0, err
    rows = pq.read_table(out).to_pylist()
    assert [(r["customer_id"], r["offer_id"], r["rank"], r["arm"]) for r in rows] == \
        [("b0", None, 0, "control"), ("stranger", None, 0, "control")]
    assert rows[0]["reason"] == "control group (holdout): no offer"
    assert summary["without_offers"] == 2



def test_many_chunks_write_the_same_file_as_one(settings: Settings, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 7 customers (reads in flight, a row group per chunk) and one chunk: the same
    rows (decision ids aside: each run has its own token)."""
    _budget_world(settings, tmp_path)
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join([f"b{i}" for i in range(60)] + ["stranger"]) + "\n")

    def rows(path: Path) -> list[dict[str, Any]]:
        out = pq.read_table(path).to_pylist()
        for row in out:
            row["decision_id"] = row["decision_id"].split("-")[1]
        return out

    campaign_run.run(settings, campaign_run.Options(ids, tmp_path / "one.parquet",
                                                    dry_run=True))
    monkeypatch.setattr(campaign_run, "CHUNK", 7)
    campaign_run.run(settings, campaign_run.Options(ids, tmp_path / "many.parquet",
                                                    dry_run=True))
    assert pq.ParquetFile(tmp_path / "many.parquet").metadata.num_row_groups == 9
    assert rows(tmp_path / "many.parquet") == rows(tmp_path / "one.parquet")


def _dead_address() -> tuple[str, int]:
    """A local port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return "127.0.0.1", port


def _every_slot_on(store: CampaignStore, address: tuple[str, int]) -> None:
    """A stale map in the store's cluster connections: every slot on ``address`` (the real
    cluster then answers MOVED, or nothing listens there)."""
    batch = store._batch
    assert batch is not None
    batch._map = SlotMap((address,) * SLOTS, (address,))


def test_a_moved_is_followed_and_a_lost_master_named_on_a_cluster(
        redis_cluster: localredis.LocalCluster, prefix: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads and writes behind a stale map: the cluster answers MOVED for two masters' slots,
    the map is read again and the commands retried; a master that cannot be reached is
    named."""
    keys = schema.Keys(prefix, cluster=True)
    client = redis.RedisCluster.from_url(redis_cluster.url, socket_timeout=10)
    ids = [f"c{i}" for i in range(300)]
    shards = [schema.shard_of(c) for c in ids]
    for customer_id, shard in zip(ids, shards, strict=True):
        client.hset(keys.customer_hash("v1", shard), customer_id, customer_id.encode())
    client.hset(keys.live(ids[7]), "c:sms", "1 2")
    client.close()
    store = CampaignStore(redis_cluster.url, keys, 10.0, cluster=True)
    try:
        first = store._batch._map.owners[0]  # type: ignore[union-attr]
        assert first is not None
        _every_slot_on(store, first)
        records, lives, _ = store.states("v1", ids, shards)
        assert records == [c.encode() for c in ids]
        assert lives[7] == {b"c:sms": b"1 2"} and not any(lives[:7])
        assert len(store._batch._map.masters) == 3  # type: ignore[union-attr]
        # Writes in blocks of 40, several in flight: the redirected ones retried at the end.
        monkeypatch.setattr(store_campaign, "WRITE_BLOCK", 40)
        _every_slot_on(store, first)
        entries = [(shard, [b"id", c.encode()]) for c, shard in zip(ids, shards, strict=True)]
        assert store.write_log(entries, 1000) == len(ids)
        assert store.written["decision-log entries"] == len(ids)
        check = redis.RedisCluster.from_url(redis_cluster.url, socket_timeout=10)
        assert sum(check.xlen(keys.decisions(s)) for s in range(schema.SHARDS)) == len(ids)
        check.close()
        dead = _dead_address()
        _every_slot_on(store, dead)
        with pytest.raises(StoreError, match=f"master 127.0.0.1:{dead[1]} cannot be reached"):
            store.budgets()
    finally:
        store.close()


class _LosesAMaster(CampaignStore):
    """Reserves as usual, then every master is unreachable when the decision log is written."""

    def write_log(self, entries: Any, max_per_shard: int) -> int:
        _every_slot_on(self, _dead_address())
        return super().write_log(entries, max_per_shard)


def test_a_failed_write_phase_says_what_was_written_on_a_cluster(
        redis_cluster: localredis.LocalCluster, settings: Settings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Budget units reserved, then the decision log cannot be written: the campaign fails
    naming the master and the units already reserved; no output file."""
    on_cluster = replace(settings, redis_url=redis_cluster.url, redis_cluster=True)
    _budget_world(on_cluster, tmp_path)
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(f"b{i}" for i in range(10)) + "\n")
    keys = schema.keys_for(on_cluster)
    client = cast(redis.Redis, redis.RedisCluster.from_url(redis_cluster.url,
                                                           socket_timeout=10))
    try:
        free = tmp_path / "free.parquet"
        campaign_run.run(on_cluster, campaign_run.Options(ids, free, limit=2, dry_run=True))
        offer = answers(free)["b0"][0]["offer_id"]
        budget_scripts.set_budget(client, keys, offer, {"count": "serve", "total": 3})
        monkeypatch.setattr(campaign_run, "CampaignStore", _LosesAMaster)
        out = tmp_path / "out.parquet"
        with pytest.raises(StoreError) as failed:
            campaign_run.run(on_cluster, campaign_run.Options(ids, out, limit=2))
        used = int(client.hget(keys.budgets, f"{offer}:used") or 0)
    finally:
        client.close()
    message = str(failed.value)
    assert "cannot be reached" in message and "no output file was written" in message
    assert used == 3 and f"3 budget units reserved ({offer}: 3)" in message
    assert not out.exists()
