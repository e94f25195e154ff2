"""The training job against a real Redis: publish, strictness, crashes, lock, rollback, gate."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from recsvc.core import schema
from recsvc.core.meta import ModelMeta
from recsvc.core.model import ModelVersion
from recsvc.core.ranking import Rules, rank
from recsvc.store.control.registry import Registry
from tests.integration.helpers import (
    FAST_CONFIG,
    LOCK_TTL_SECONDS,
    cli,
    planted,
    popen_cli,
    train_args,
)
from training import localredis

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data")
    result = cli(["datagen", "--out", str(out), "--customers", "3000", "--offers", "80",
                  "--segments", "3", "--seed", "3"], "redis://127.0.0.1:1/0", "unused")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "train.toml"
    path.write_text(FAST_CONFIG)
    return path


def load_active(client: redis.Redis, keys: schema.Keys) -> ModelVersion:
    version = client.get(keys.active).decode()
    meta = json.loads(client.get(keys.meta(version)))
    segments = [client.hgetall(keys.segment(version, i)) for i in range(len(meta["segments"]))]
    return ModelVersion.from_blobs(version, ModelMeta.from_json(client.get(keys.meta(version))),
                                   client.get(keys.offers(version)), segments,
                                   client.hgetall(keys.global_popularity(version)))


def test_planted_known_answer_ranks_first(redis_server: localredis.LocalRedis, prefix: str,
                                          client: redis.Redis, tmp_path: Path,
                                          config: Path) -> None:
    data_dir = planted(tmp_path / "planted")
    config.write_text(FAST_CONFIG.replace("min_evaluated = 5", "min_evaluated = 5\nholdout = 1"
                                          "\nmin_history = 3"))
    result = cli(train_args(data_dir, config, "--report", str(tmp_path / "r.json")),
                 redis_server.url, prefix)
    assert result.returncode == 0, result.stderr + result.stdout
    model = load_active(client, schema.Keys(prefix))
    segment = model.segments[0]
    assert segment.strategy in ("personalized", "blended")
    record = schema.decode_customer_record(
        client.hget(schema.Keys(prefix).customers(model.version), "a-test"))
    ranked = rank(segment, model.catalogue, Rules(limit=3, now=time.time()), record.vector,
                  record.accepted)
    assert model.catalogue.offer_ids[int(ranked.offers[0])] == "a5"
    popular = rank(segment, model.catalogue, Rules(limit=1, now=time.time()))
    assert model.catalogue.offer_ids[int(popular.offers[0])].startswith("b")


@pytest.mark.cluster
def test_train_publishes_a_complete_version_and_reports_every_phase(
        redis_url: str, prefix: str, keys: schema.Keys, client: redis.Redis, dataset: Path,
        config: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    result = cli(train_args(dataset, config, "--report", str(report_path)), redis_url,
                 prefix)
    assert result.returncode == 0, result.stderr
    version = result.stdout.strip().splitlines()[-1]
    assert client.get(keys.active).decode() == version
    report = json.loads(report_path.read_text())
    assert set(report["phases"]) == {"read", "build", "fit", "evaluate", "competitors",
                                     "publish"}
    assert Registry(client, keys).record_count(version) == report["rows_read"]["customers"] == 3000
    for segment in report["segments"]:
        # datagen plants tastes a personal model can learn and popularity cannot
        assert segment["model_metrics"]["ndcg_at_10"] > \
            1.2 * segment["baseline_metrics"]["ndcg_at_10"], segment
        assert segment["metrics"]["ndcg_at_10"] >= segment["baseline_metrics"]["ndcg_at_10"]
    assert report["overall_ndcg_at_10"] > 0
    assert "segment" in result.stdout and "baseline" in result.stdout
    meta = json.loads(client.get(keys.meta(version)))
    assert meta["data_fingerprint"] and meta["trained_at"]


def test_strict_mode_fails_on_a_bad_row_before_publishing(
        redis_server: localredis.LocalRedis, prefix: str, client: redis.Redis, dataset: Path,
        config: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("customers.csv", "offers.csv"):
        (bad / name).write_text((dataset / name).read_text())
    lines = (dataset / "interactions.csv").read_text().splitlines()
    lines.insert(3, '"C9999999","OFF00001","click","1700000000"')
    (bad / "interactions.csv").write_text("\n".join(lines) + "\n")
    report_path = tmp_path / "r.json"
    result = cli(train_args(bad, config, "--strict", "--report", str(report_path)),
                 redis_server.url, prefix)
    assert result.returncode == 1
    assert "--strict" in result.stderr
    report = json.loads(report_path.read_text())
    (entry,) = report["bad_rows"]["by_file_and_kind"]
    assert entry["kind"] == "unknown_customer" and entry["rows"] == [3] and entry["count"] == 1
    assert client.get(schema.Keys(prefix).active) is None
    assert client.hlen(schema.Keys(prefix).versions) == 0
    relaxed = cli(train_args(bad, config), redis_server.url, prefix)
    assert relaxed.returncode == 0 and "unknown_customer x1" in relaxed.stdout


@pytest.mark.cluster
def test_a_second_concurrent_run_is_refused_by_the_lock(
        redis_url: str, prefix: str, keys: schema.Keys, client: redis.Redis, dataset: Path,
        config: Path) -> None:
    client.set(keys.train_lock, "someone-else", px=30_000)
    result = cli(train_args(dataset, config), redis_url, prefix)
    assert result.returncode == 1
    assert "another training run holds the lock" in result.stderr
    assert client.get(keys.active) is None


@pytest.mark.cluster
def test_a_run_killed_mid_publish_leaves_the_old_version_active_and_the_next_run_succeeds(
        redis_url: str, prefix: str, keys: schema.Keys, client: redis.Redis, dataset: Path,
        config: Path) -> None:
    first = cli(train_args(dataset, config), redis_url, prefix)
    assert first.returncode == 0, first.stderr
    old = client.get(keys.active).decode()
    old_count = Registry(client, keys).record_count(old)
    config.write_text(FAST_CONFIG.replace("[publish]", "[publish]\nbatch_size = 10"))
    run = popen_cli(train_args(dataset, config), redis_url, prefix)
    killed_at = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:
        writing = [v.decode() for v, m in client.hgetall(keys.versions).items()
                   if json.loads(m)["state"] == "writing"]
        if writing and Registry(client, keys).record_count(writing[0]) > 0:
            run.send_signal(signal.SIGKILL)
            killed_at = writing[0]
            break
        time.sleep(0.001)
    run.wait(timeout=30)
    assert killed_at is not None, "the run finished before it could be killed mid-publish"
    assert client.get(keys.active).decode() == old
    assert Registry(client, keys).record_count(old) == old_count
    assert Registry(client, keys).record_count(killed_at) < old_count
    time.sleep(LOCK_TTL_SECONDS + 0.2)  # the killed run's lock expires
    second = cli(train_args(dataset, config), redis_url, prefix)
    assert second.returncode == 0, second.stderr
    new = client.get(keys.active).decode()
    assert new not in (old, killed_at)
    assert client.exists(*keys.customer_hashes(killed_at)) == 0
    assert killed_at not in {v.decode() for v in client.hkeys(keys.versions)}


@pytest.mark.cluster
def test_rollback_and_activate_swap_versions_and_old_versions_are_deleted(
        redis_url: str, prefix: str, keys: schema.Keys, client: redis.Redis, dataset: Path,
        config: Path) -> None:
    versions = []
    for _ in range(3):
        result = cli(train_args(dataset, config), redis_url, prefix)
        assert result.returncode == 0, result.stderr
        versions.append(result.stdout.strip().splitlines()[-1])
    assert {v.decode() for v in client.hkeys(keys.versions)} == set(versions[1:])
    assert client.exists(*keys.customer_hashes(versions[0])) == 0
    listed = cli(["models", "list"], redis_url, prefix)
    assert f"{versions[2]}  complete" in listed.stdout and "active" in listed.stdout
    rolled = cli(["models", "rollback"], redis_url, prefix)
    assert rolled.returncode == 0, rolled.stderr
    assert Registry(client, keys).pointers() == (versions[1], versions[2])
    again = cli(["models", "activate", versions[2]], redis_url, prefix)
    assert again.returncode == 0
    assert Registry(client, keys).pointers() == (versions[2], versions[1])
    missing = cli(["models", "activate", "nope"], redis_url, prefix)
    assert missing.returncode == 1 and "not a complete published version" in missing.stderr


def test_quality_gate_refuses_a_worse_version_unless_forced(
        redis_server: localredis.LocalRedis, prefix: str, client: redis.Redis, dataset: Path,
        config: Path) -> None:
    keys = schema.Keys(prefix)
    assert cli(train_args(dataset, config), redis_server.url, prefix).returncode == 0
    active = client.get(keys.active).decode()
    meta = json.loads(client.get(keys.meta(active)))
    meta["quality"]["lift"] = 9.9  # pretend the active version was far better
    client.set(keys.meta(active), json.dumps(meta))
    refused = cli(train_args(dataset, config), redis_server.url, prefix)
    assert refused.returncode == 3
    assert "refusing to publish a worse version" in refused.stdout
    assert client.get(keys.active).decode() == active
    forced = cli(train_args(dataset, config, "--force"), redis_server.url, prefix)
    assert forced.returncode == 0
    assert client.get(keys.active).decode() != active


@pytest.mark.cluster
def test_no_activate_publishes_without_moving_the_pointer(
        redis_url: str, prefix: str, keys: schema.Keys, client: redis.Redis, dataset: Path,
        config: Path) -> None:
    result = cli(train_args(dataset, config, "--no-activate"), redis_url, prefix)
    assert result.returncode == 0
    version = result.stdout.strip().splitlines()[-1]
    assert client.get(keys.active) is None
    assert json.loads(client.hget(keys.versions, version))["state"] == "complete"
    np.testing.assert_equal(Registry(client, keys).record_count(version), 3000)
