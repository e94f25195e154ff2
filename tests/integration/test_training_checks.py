"""Never a silent wrong answer, training side: data checks between runs, bad rows located,
the quality gate comparing like with like, versions checked before they serve, Redis failures
as one line. Real Redis, real CLI subprocesses."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from recsvc.core import schema
from recsvc.store.control.registry import Registry, TrainLock, eviction_risk
from tests.integration.helpers import FAST_CONFIG, LOCK_TTL_SECONDS, cli, planted, train_args
from training import localredis

pytestmark = pytest.mark.integration

# A longer lock than FAST_CONFIG's: these runs never need it to expire.
CONFIG = FAST_CONFIG.replace(f"lock_ttl_seconds = {LOCK_TTL_SECONDS}", "lock_ttl_seconds = 30.0")
# A genuinely worse model: one factor regularized to nothing, served alone (no popularity blend).
WORSE = CONFIG.replace("factors = [8]", "factors = [1]\nregularization = [10000.0]").replace(
    "blend_weights = [0.0, 0.5, 1.0]", "blend_weights = [1.0]") + (
    '\n[exposure]\nmodel = "implicit"\n')  # the exposure model would still validate well


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("checks")
    result = cli(["datagen", "--out", str(out), "--customers", "2400", "--offers", "50",
                  "--segments", "2", "--seed", "11"], "redis://127.0.0.1:1/0", "unused")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "train.toml"
    path.write_text(CONFIG)
    return path


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def subset(src: Path, dst: Path, keep_customer: object) -> Path:
    """The customers for which ``keep_customer(index, line)`` holds, with their interactions."""
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "offers.csv").write_text((src / "offers.csv").read_text())
    customers = lines(src / "customers.csv")
    kept = [c for i, c in enumerate(customers[1:]) if keep_customer(i, c)]  # type: ignore[operator]
    ids = {c.split(",")[0] for c in kept}
    (dst / "customers.csv").write_text("\n".join([customers[0], *kept]) + "\n")
    interactions = lines(src / "interactions.csv")
    (dst / "interactions.csv").write_text("\n".join(
        [interactions[0], *(r for r in interactions[1:] if r.split(",")[0] in ids)]) + "\n")
    return dst


def report_of(path: Path) -> dict:  # type: ignore[type-arg]
    return dict(json.loads(path.read_text()))


@pytest.fixture
def allkeys_policy(client: redis.Redis) -> Iterator[None]:
    client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        yield
    finally:
        client.config_set("maxmemory-policy", "noeviction")


def test_eviction_risk_is_reported_only_for_policies_that_can_evict_model_keys(
        client: redis.Redis) -> None:
    for policy, risky in (("noeviction", False), ("volatile-lru", False),
                          ("volatile-ttl", False), ("allkeys-lru", True),
                          ("allkeys-random", True)):
        client.config_set("maxmemory-policy", policy)
        try:
            risk = eviction_risk(client)
        finally:
            client.config_set("maxmemory-policy", "noeviction")
        assert (risk is not None) == risky, policy
        if risk:
            assert policy in risk and "noeviction" in risk


def test_a_header_only_interactions_file_never_publishes_and_an_allkeys_policy_is_warned(
        redis_server: localredis.LocalRedis, prefix: str, client: redis.Redis, dataset: Path,
        config: Path, tmp_path: Path, allkeys_policy: None) -> None:
    empty = subset(dataset, tmp_path / "empty", lambda i, c: True)
    (empty / "interactions.csv").write_text("customer_id,offer_id,event,ts\n")
    report_path = tmp_path / "r.json"
    result = cli(train_args(empty, config, "--report", str(report_path)), redis_server.url,
                 prefix)
    assert result.returncode == 3, result.stderr
    assert "FAIL min_interactions: 0 usable interactions" in result.stdout
    assert "maxmemory-policy is allkeys-lru" in result.stderr
    report = report_of(report_path)
    assert report["status"] == "refused" and not report["data_checks"]["passed"]
    assert any("allkeys-lru" in w for w in report["warnings"])
    keys = schema.Keys(prefix)
    assert client.get(keys.active) is None and client.hlen(keys.versions) == 0


def test_degenerate_data_is_refused_side_by_side_unless_forced_and_forcing_is_recorded(
        redis_server: localredis.LocalRedis, prefix: str, client: redis.Redis, dataset: Path,
        config: Path, tmp_path: Path) -> None:
    keys = schema.Keys(prefix)
    assert cli(train_args(dataset, config), redis_server.url, prefix).returncode == 0
    active = client.get(keys.active).decode()
    segment = lines(dataset / "customers.csv")[1].split(",")[1]
    # one segment vanishes; of the rest, a third of the customers remain
    degenerate = subset(dataset, tmp_path / "degenerate",
                        lambda i, c: c.split(",")[1] != segment and i % 3 == 0)
    report_path = tmp_path / "r.json"
    refused = cli(train_args(degenerate, config, "--report", str(report_path)),
                  redis_server.url, prefix)
    assert refused.returncode == 3, refused.stderr
    name = segment.strip('"')
    assert f"FAIL segment_present:{name}" in refused.stdout
    assert "FAIL interaction_drop" in refused.stdout and "nothing published" in refused.stderr
    checks = {c["name"]: c for c in report_of(report_path)["data_checks"]["checks"]}
    vanished = checks[f"segment_present:{name}"]
    assert vanished["new"] == 0 and vanished["active"] > 0 and not vanished["passed"]
    drop = checks["interaction_drop"]
    assert drop["new"] < drop["active"] / 2 and drop["limit"] == 0.5
    assert "fit" not in report_of(report_path)["phases"]  # refused before any fitting
    assert client.get(keys.active).decode() == active

    forced = cli(train_args(degenerate, config, "--force", "--report", str(report_path)),
                 redis_server.url, prefix)
    assert forced.returncode == 0, forced.stderr
    assert "FORCED (--force): data_checks" in forced.stdout
    report = report_of(report_path)
    assert report["data_checks"]["forced"] and "data_checks" in report["forced"]
    meta = json.loads(client.get(keys.meta(report["version"])))
    assert "data_checks" in meta["forced"]
    assert meta["data_profile"]["interactions"] == report["data_profile"]["interactions"]


def test_bad_rows_are_located_and_invalid_values_and_millisecond_times_keep_their_rows(
        redis_server: localredis.LocalRedis, prefix: str, client: redis.Redis, dataset: Path,
        config: Path, tmp_path: Path) -> None:
    data_dir = subset(dataset, tmp_path / "noisy", lambda i, c: True)
    customers = lines(data_dir / "customers.csv")
    victim = customers[5].split(",")[0].strip('"')
    customers[5] = f'"{victim}",{customers[5].split(",")[1]},-50.5,NaN'
    (data_dir / "customers.csv").write_text("\n".join(customers) + "\n")
    interactions = lines(data_dir / "interactions.csv")
    interactions.insert(10, '"C0000001","OFF00001"')  # line 11: two fields of four
    for i in range(20, 40):  # 20 rows in milliseconds
        cid, oid, event, ts = interactions[i].split(",")
        interactions[i] = f"{cid},{oid},{event},{int(ts) * 1000}"
    (data_dir / "interactions.csv").write_text("\n".join(interactions) + "\n")
    report_path = tmp_path / "r.json"
    result = cli(train_args(data_dir, config, "--report", str(report_path)), redis_server.url,
                 prefix)
    assert result.returncode == 0, result.stderr
    report = report_of(report_path)
    (malformed,) = [e for e in report["bad_rows"]["by_file_and_kind"]
                    if e["kind"] == "malformed_line"]
    assert malformed["lines"] == [11] and malformed["count"] == 1
    assert "malformed_line x1 (lines 11" in result.stdout
    (clv,) = [e for e in report["invalid_values"]["by_file_and_kind"] if e["kind"] == "bad_clv"]
    assert clv["lines"] == [6]
    assert report["ts_converted_to_seconds"] == {"milliseconds": 20}
    assert report["data_profile"]["time_range"]["last"] < "2030"
    keys = schema.Keys(prefix)
    assert client.hget(keys.customers(report["version"]), victim) is not None
    assert client.hlen(keys.customers(report["version"])) == len(customers) - 1


def test_too_many_bad_rows_fail_the_run_and_the_unknown_event_seen_is_named(
        redis_server: localredis.LocalRedis, prefix: str, client: redis.Redis, dataset: Path,
        config: Path, tmp_path: Path) -> None:
    data_dir = subset(dataset, tmp_path / "typo", lambda i, c: True)
    text = (data_dir / "interactions.csv").read_text()
    (data_dir / "interactions.csv").write_text(text.replace('"click"', '"Click"'))
    report_path = tmp_path / "r.json"
    result = cli(train_args(data_dir, config, "--report", str(report_path)), redis_server.url,
                 prefix)
    assert result.returncode == 1
    assert "too many bad rows: interactions:" in result.stderr
    assert "Traceback" not in result.stderr
    (entry,) = report_of(report_path)["bad_rows"]["by_file_and_kind"]
    assert entry["kind"] == "unknown_event" and entry["seen"] == {"Click": entry["count"]}
    assert "seen: 'Click'" in result.stdout
    assert client.get(schema.Keys(prefix).active) is None


def test_the_gate_passes_a_retrain_on_new_data_of_the_same_distribution_and_refuses_a_worse_model(
        redis_server: localredis.LocalRedis, prefix: str, client: redis.Redis, dataset: Path,
        config: Path, tmp_path: Path) -> None:
    """Two disjoint halves of one generated world: same distribution, different customers."""
    keys = schema.Keys(prefix)
    first = subset(dataset, tmp_path / "a", lambda i, c: i % 2 == 0)
    second = subset(dataset, tmp_path / "b", lambda i, c: i % 2 == 1)
    assert cli(train_args(first, config), redis_server.url, prefix).returncode == 0
    report_path = tmp_path / "r.json"
    retrain = cli(train_args(second, config, "--report", str(report_path)), redis_server.url,
                  prefix)
    assert retrain.returncode == 0, retrain.stdout + retrain.stderr
    gate = report_of(report_path)["quality_gate"]
    assert gate["passed"] and gate["new_lift"] > 1.2, gate  # the model beats popularity
    active = client.get(keys.active).decode()

    config.write_text(WORSE)
    worse = cli(train_args(second, config, "--report", str(report_path)), redis_server.url,
                prefix)
    assert worse.returncode == 3, worse.stdout + worse.stderr
    assert "refusing to publish a worse version" in worse.stdout
    assert report_of(report_path)["quality_gate"]["new_lift"] < 1.0  # worse than popularity
    assert client.get(keys.active).decode() == active

    forced = cli(train_args(second, config, "--force", "--report", str(report_path)),
                 redis_server.url, prefix)
    assert forced.returncode == 0
    report = report_of(report_path)
    assert report["forced"] == ["quality_gate"] and "activated anyway" in forced.stdout
    assert json.loads(client.get(keys.meta(report["version"])))["forced"] == ["quality_gate"]


def test_activate_and_rollback_refuse_a_version_that_is_incomplete_in_redis(
        redis_server: localredis.LocalRedis, prefix: str, client: redis.Redis, config: Path,
        tmp_path: Path) -> None:
    data_dir = planted(tmp_path / "planted")
    keys = schema.Keys(prefix)
    versions = []
    for _ in range(2):
        result = cli(train_args(data_dir, config), redis_server.url, prefix)
        assert result.returncode == 0, result.stderr
        versions.append(result.stdout.strip().splitlines()[-1])
    old, new = versions
    manifest = json.loads(client.hget(keys.versions, old))
    assert manifest["customers"] == 121 and len(manifest["digest"]) == 64

    # a partly evicted customers hash
    record = client.hget(keys.customers(old), "a1")
    client.hdel(keys.customers(old), "a1")
    for command in (["models", "rollback"], ["models", "activate", old]):
        refused = cli(command, redis_server.url, prefix)
        assert refused.returncode == 1
        assert f"version {old} is incomplete in Redis" in refused.stderr
        assert "120 customer records, 121 published" in refused.stderr
    assert Registry(client, keys).pointers() == (new, old)
    client.hset(keys.customers(old), "a1", record)

    # an evicted segment hash; then meta changed behind the registry's back
    segment = client.hgetall(keys.segment(old, 0))
    client.delete(keys.segment(old, 0))
    assert "model keys (meta, catalogue, segments, global) are missing" in cli(
        ["models", "rollback"], redis_server.url, prefix).stderr
    client.hset(keys.segment(old, 0), mapping=segment)
    meta = client.get(keys.meta(old))
    client.set(keys.meta(old), meta.replace(b'"trained_at"', b'"trained_at_"'))
    assert "digest mismatch" in cli(["models", "rollback"], redis_server.url, prefix).stderr
    client.set(keys.meta(old), meta)

    restored = cli(["models", "rollback"], redis_server.url, prefix)
    assert restored.returncode == 0, restored.stderr
    assert Registry(client, keys).pointers() == (old, new)
    activated = cli(["models", "activate", new], redis_server.url, prefix)
    assert activated.returncode == 0 and "checked: 121 customer records" in activated.stdout


def test_train_and_models_say_one_line_when_redis_is_unreachable_and_train_still_reports(
        dataset: Path, config: Path, tmp_path: Path) -> None:
    url = "redis://:s3cret@127.0.0.1:1/0"  # nothing listens on port 1
    report_path = tmp_path / "r.json"
    result = cli(train_args(dataset, config, "--report", str(report_path)), url, "down")
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("recsvc train: Redis at redis://127.0.0.1:1/0 failed: ConnectionError")
    assert "s3cret" not in result.stderr + result.stdout
    report = report_of(report_path)
    assert report["status"] == "failed" and "Redis at redis://127.0.0.1:1/0" in report["error"]
    for command in (["models", "list"], ["models", "activate", "v1"], ["models", "rollback"]):
        answer = cli(command, url, "down")
        assert answer.returncode == 1, command
        (line,) = answer.stderr.strip().splitlines()
        assert line.startswith("recsvc: Redis at redis://127.0.0.1:1/0 failed"), line


def test_redis_out_of_memory_during_publish_is_one_line_and_leaves_nothing_behind(
        redis_server: localredis.LocalRedis, prefix: str, client: redis.Redis, dataset: Path,
        config: Path, tmp_path: Path) -> None:
    keys = schema.Keys(prefix)
    client.config_set("maxmemory", client.info("memory")["used_memory"] + 100_000)
    try:
        report_path = tmp_path / "r.json"
        result = cli(train_args(dataset, config, "--report", str(report_path)),
                     redis_server.url, prefix)
    finally:
        client.config_set("maxmemory", 0)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]  # after the phase log lines
    assert line.startswith("recsvc train: Redis at ")
    assert "OutOfMemoryError" in line and "raise maxmemory" in line
    assert "\\x" not in line and "HSET" not in line  # no quoted command, no record bytes
    report = report_of(report_path)
    assert report["status"] == "failed" and len(report["deleted_versions"]) == 1
    assert client.get(keys.active) is None and client.hlen(keys.versions) == 0
    assert not list(client.scan_iter(match=f"{prefix}:v:*"))


def test_a_lapsed_training_lock_is_taken_back_but_never_from_another_run(
        client: redis.Redis, prefix: str) -> None:
    """A stalled heartbeat lets the lock expire; with nobody else holding it, the run takes it
    back (safe: see _RENEW); once another run holds it, the run has lost it for good."""
    keys = schema.Keys(prefix)

    def wait_for(condition: object) -> bool:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if condition():  # type: ignore[operator]
                return True
            time.sleep(0.02)
        return False

    with TrainLock(client, keys, ttl_seconds=0.3) as lock:
        client.delete(keys.train_lock)  # as if it had expired during a stall
        assert wait_for(lambda: client.get(keys.train_lock) == lock.token.encode())
        assert lock.lapses >= 1 and not lock.lost
        client.set(keys.train_lock, "another-run")
        assert wait_for(lambda: lock.lost)
    assert client.get(keys.train_lock) == b"another-run"
