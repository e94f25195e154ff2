"""`recsvc decisions export`: the decision log drained into partitioned Parquet, incrementally,
each entry exactly once, crashes redone, trimming behind the export; and `recsvc report` reads
the export (and `recsvc events export` files) with the same numbers as from Redis. A real
Redis, the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
import redis

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.experiments import export_dir
from recsvc.experiments.decision_log import Decision
from tests.integration.helpers import cli

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

T0 = 1_790_000_000.0


def _log(client: redis.Redis, keys: schema.Keys, start: int, count: int,
         maxlen: int | None = None, shard: int | None = None) -> list[str]:
    """Appends decisions as serving does (XADD of Decision.fields()); returns their ids."""
    ids = []
    pipe = client.pipeline(transaction=False)
    for i in range(start, start + count):
        customer = f"c{i % 97}"
        arm = "control" if i % 4 == 0 else "treatment"
        offers = () if arm == "control" else (f"o{i % 5}", f"o{(i + 1) % 5}")
        k = len(offers)
        decision = Decision(f"d{i}", T0 + i * 3600, customer, "s1", "v1", arm, "personalized",
                            "email", offers, np.ones(k, np.float32), np.ones(k, np.float32),
                            np.full(k, 0.3, np.float32), np.full(k, 20.0, np.float32),
                            np.full(k, 5.0, np.float32))
        key = keys.decisions(schema.shard_of(customer) if shard is None else shard)
        pipe.xadd(key, dict(zip(decision.fields()[::2], decision.fields()[1::2],
                                strict=True)), maxlen=maxlen, approximate=False)
        ids.append(decision.decision_id)
    pipe.execute()
    return ids


def _exported(directory: Path) -> list[str]:
    files = [str(f) for f in export_dir.committed_files(directory)]
    return ds.dataset(files, format="parquet").to_table(columns=["decision_id"])[
        "decision_id"].to_pylist() if files else []


def _export(settings: Settings, out: Path, *more: str) -> tuple[int, str]:
    result = cli(["decisions", "export", "--out", str(out), *more], settings.redis_url,
                 settings.key_prefix)
    return result.returncode, result.stdout + result.stderr


def _backlog(client: redis.Redis, keys: schema.Keys) -> int:
    return sum(client.xlen(keys.decisions(s)) for s in range(schema.SHARDS))


def test_export_is_incremental_exactly_once_and_trims_only_what_it_wrote(
        tmp_path: Path, settings: Settings, client: redis.Redis) -> None:
    keys = schema.keys_for(settings)
    out = tmp_path / "export"
    first = _log(client, keys, 0, 300)
    code, text = _export(settings, out, "--page", "64")  # several parts per run
    assert code == 0, text
    assert sorted(_exported(out)) == sorted(first)
    assert _backlog(client, keys) == 0  # exported entries left Redis
    days = sorted(p.name for p in out.glob("day=*"))
    assert days[0] == "day=2026-09-21" and len(days) == 14  # 300 hours of decisions by UTC day
    second = _log(client, keys, 300, 200)
    assert _export(settings, out)[0] == 0
    assert _export(settings, out)[0] == 0  # nothing new: nothing written twice
    exported = _exported(out)
    assert len(exported) == 500 and sorted(exported) == sorted(first + second)
    assert export_dir.read_commit(out).run == 2


def test_a_run_that_died_before_its_commit_is_redone_and_after_it_only_trimmed(
        tmp_path: Path, settings: Settings, client: redis.Redis) -> None:
    keys = schema.keys_for(settings)
    out = tmp_path / "export"
    ids = _log(client, keys, 0, 120)
    assert _export(settings, out, "--keep")[0] == 0  # committed, not trimmed: a crash after
    assert _backlog(client, keys) == 120
    # a run that wrote a file and died before committing
    orphan = export_dir.part_path(out, "2026-09-21", 2, 0)
    orphan.write_bytes((out / "day=2026-09-21" / "run-00000001-0000.parquet").read_bytes())
    assert len(_exported(out)) == 120  # readers ignore it
    more = _log(client, keys, 120, 30)
    code, text = _export(settings, out)
    assert code == 0, text
    assert sorted(_exported(out)) == sorted(ids + more)  # each once
    assert _backlog(client, keys) == 0


def test_trimming_that_outran_the_export_is_detected_and_named(
        tmp_path: Path, settings: Settings, client: redis.Redis) -> None:
    keys = schema.keys_for(settings)
    out = tmp_path / "export"
    _log(client, keys, 0, 5, shard=7)
    assert _export(settings, out)[0] == 0
    kept = _log(client, keys, 5, 50, maxlen=10, shard=7)[-10:]  # serving's bound at work
    code, text = _export(settings, out)
    assert code == 3 and "shard 7: 40 entries after" in text and "lost" in text, text
    assert len(_exported(out)) == 15 and set(kept) <= set(_exported(out))
    assert export_dir.read_commit(out).lost == {7: 40}
    _log(client, keys, 55, 3, shard=7)
    assert _export(settings, out)[0] == 0  # reported once, then clean


def test_the_report_reads_the_export_with_the_same_numbers_as_from_redis(
        tmp_path: Path, settings: Settings, client: redis.Redis) -> None:
    keys = schema.keys_for(settings)
    ids = _log(client, keys, 0, 400)
    pipe = client.pipeline(transaction=False)
    for n, decision_id in enumerate(ids):
        i = int(decision_id[1:])
        customer = f"c{i % 97}"
        if i % 4 and n % 3 == 0:
            event = {"customer": customer, "offer": f"o{i % 5}", "event": "accept",
                     "ts": str(T0 + i * 3600 + 60), "decision": decision_id, "value": ""}
            pipe.xadd(keys.events(schema.shard_of(customer)), event)  # type: ignore[arg-type]
    for c in range(97):
        outcome = {"customer": f"c{c}", "offer": "", "event": "renew" if c % 3 else "churn",
                   "ts": str(T0 + 500 * 3600), "decision": "", "value": ""}
        pipe.xadd(keys.events(schema.shard_of(f"c{c}")), outcome)  # type: ignore[arg-type]
    pipe.execute()
    out = tmp_path / "export"
    assert _export(settings, out, "--keep")[0] == 0
    events = tmp_path / "events.parquet"  # `recsvc events export`: every column text
    exported = cli(["events", "export", "--out", str(events)], settings.redis_url,
                   settings.key_prefix)
    assert exported.returncode == 0, exported.stderr
    cards = []
    for name, flags in (("redis", []), ("parquet", ["--decisions", str(out)]),
                        ("both", ["--decisions", str(out), "--events", str(events)]),
                        ("events", ["--events", str(events)])):
        result = cli(["report", "--out", str(tmp_path / f"{name}.html"), "--json",
                      str(tmp_path / f"{name}.json"), *flags], settings.redis_url,
                     settings.key_prefix)
        assert result.returncode == 0, result.stderr
        cards.append(json.loads((tmp_path / f"{name}.json").read_text()))
    assert cards[0]["arms"]["treatment"]["acceptance_rate"]["value"] > 0
    assert cards[0] == cards[1] == cards[2] == cards[3]
