"""The admin commands on a Redis Cluster: live offer control, do-not-contact, budgets,
experiments and models all write the control slot (one hash tag, so their scripts and MULTIs
stay atomic), and a server's watcher follows them within a poll. On a single Redis the same
commands are tested in test_decisioning, test_challenger and test_training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import pytest
import redis
from redis.cluster import RedisCluster

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.store.control.registry import Registry, eviction_risk
from tests.integration import decisioning_data
from tests.integration.helpers import cli, train_args
from tests.integration.test_decisioning import eventually, served
from training import localredis

pytestmark = pytest.mark.integration


def test_admin_commands_write_the_control_slot_and_the_watcher_follows(
        tmp_path: Path, redis_cluster: localredis.LocalCluster, prefix: str) -> None:
    settings = Settings(redis_url=redis_cluster.url, redis_cluster=True, key_prefix=prefix,
                        host="127.0.0.1", port=0, redis_timeout_ms=500, model_poll_ms=100,
                        default_deadline_ms=1000, server_model="sync")
    keys = schema.keys_for(settings)
    client = RedisCluster.from_url(redis_cluster.url, socket_timeout=10)

    def run(*args: str) -> str:
        result = cli(list(args), settings.redis_url, prefix)
        assert result.returncode == 0, result.stderr
        return result.stdout

    data = decisioning_data.write(tmp_path)
    first = run(*train_args(data, data / "config.toml")).strip().splitlines()[-1]
    second = run(*train_args(data, data / "config.toml", "--no-activate",
                             "--force")).strip().splitlines()[-1]
    controlled = {client.keyslot(k) for k in (keys.active, keys.budgets, keys.offers_live,
                                              keys.do_not_contact, keys.experiments)}
    assert controlled == {client.keyslot(keys.versions)}  # one slot
    with served(settings) as (server, _stub, _channel):
        holder = server.watcher.holder
        run("offers", "pause", "a1")
        run("contacts", "dnc", "add", "x1", "x2")
        run("offers", "budget", "a5", "--count", "accept", "--total", "3")
        listing = {row["offer_id"]: row for row in json.loads(run("offers", "list", "--json"))}
        assert listing["a1"]["paused"] is True and json.loads(listing["a5"]["budget"])["total"] == 3
        eventually(lambda: "a5" in holder.budgets.specs and "x1" in holder.require_decider().dnc,
                   within=2)
        run("experiments", "start", "--challenger", second, "--share", "0.5")
        eventually(lambda: holder.challenger is not None
                   and holder.challenger.version == second, within=5)
        run("experiments", "promote")
        assert Registry(cast(redis.Redis, client), keys).pointers() == (second, first)
        eventually(lambda: holder.current is not None and holder.current.version == second
                   and holder.challenger is None, within=5)
        run("models", "rollback")
        eventually(lambda: holder.current is not None and holder.current.version == first,
                   within=5)
        run("offers", "budget", "a5", "--clear", "--reset")
        run("offers", "resume", "a1")
        eventually(lambda: "a5" not in holder.budgets.specs, within=2)
    client.close()


def test_an_evicting_policy_on_any_master_is_reported_with_its_node(
        redis_cluster: localredis.LocalCluster) -> None:
    client = RedisCluster.from_url(redis_cluster.url, socket_timeout=10)
    assert eviction_risk(cast(redis.Redis, client)) is None
    node = client.get_primaries()[-1]
    client.config_set("maxmemory-policy", "allkeys-lru", target_nodes=node)
    try:
        risk = eviction_risk(cast(redis.Redis, client))
    finally:
        client.config_set("maxmemory-policy", "noeviction", target_nodes=node)
    assert risk is not None and risk.startswith(node.name) and "allkeys-lru" in risk
    client.close()
