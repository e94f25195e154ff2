"""The spark engine (Spark MLlib ALS in local mode) against the implicit engine on one data set.

Both runs go through the whole job in process (read, validate, tune, evaluate, publish) into the
suite's redis-server; one SparkSession (local[2]) serves every Spark fit of the session.
Stated tolerance: the mean top-10 overlap of the two engines' served rankings is >= 0.8, and
each engine's model beats segment popularity on the held-out test split.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.v1 import offers_pb2 as pb
from tests.integration.helpers import cli, train_args
from tests.integration.serving import running, wait_for_version
from training import localredis
from training.commands import add_train
from training.config import Spark

pytestmark = [pytest.mark.integration, pytest.mark.spark]

MIN_MEAN_OVERLAP = 0.8
CONFIG = """
seed = 7
engine = "{engine}"
negative_impressions = false
[tuning]
factors = [4]  # the data plants 4 latent themes (see the module docstring)
alpha = [5.0]
iterations = [10]
blend_weights = [1.0]
[evaluation]
min_evaluated = 5
[exposure]
model = "implicit"  # ALS against ALS: the exposure model is numpy on either engine
competitors = false
[publish]
lock_ttl_seconds = 5.0
"""


@dataclass
class Trained:
    version: str
    report: dict[str, Any]
    settings: Settings


@pytest.fixture(scope="session")
def spark_session() -> Iterator[Any]:
    """One local[2] SparkSession for the whole test session: the engine reuses the active one."""
    try:
        from training.engines.spark import session
    except ImportError as exc:  # pragma: no cover - the Makefile installs the extra
        pytest.fail(f"the spark tests need pyspark ({exc}): make spark-env", pytrace=False)
    spark = session(Spark(master="local[2]", conf={
        "spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2",
        "spark.default.parallelism": "2"}))
    yield spark
    spark.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("spark-data")
    result = cli(["datagen", "--out", str(out), "--customers", "3000", "--offers", "40",
                  "--segments", "1", "--seed", "3"], "redis://127.0.0.1:1/0", "unused")
    assert result.returncode == 0, result.stderr
    return out


def _train(data: Path, engine: str, redis_server: localredis.LocalRedis) -> Trained:
    from training import job

    config = data / f"{engine}.toml"
    config.write_text(CONFIG.format(engine=engine))
    report = data / f"{engine}-report.json"
    parser = argparse.ArgumentParser()
    add_train(parser.add_subparsers())
    args = parser.parse_args(train_args(data, config, "--report", str(report)))
    settings = Settings(redis_url=redis_server.url, key_prefix=f"spark-{engine}",
                        host="127.0.0.1", port=0, redis_timeout_ms=200, model_poll_ms=100,
                        default_deadline_ms=2000)
    assert job.main(args, settings) == 0
    content = json.loads(report.read_text())
    return Trained(content["version"], content, settings)


@pytest.fixture(scope="module")
def trained(data: Path, redis_server: localredis.LocalRedis, spark_session: Any
            ) -> dict[str, Trained]:
    started = time.perf_counter()
    spark = _train(data, "spark", redis_server)
    spark.report["test_seconds"] = time.perf_counter() - started
    return {"implicit": _train(data, "implicit", redis_server), "spark": spark}


def _customers_with_vectors(client: redis.Redis, trained: Trained, limit: int) -> list[str]:
    keys = schema.Keys(trained.settings.key_prefix)
    ids = []
    for raw_id, record in client.hscan_iter(keys.customers(trained.version), count=1000):
        if int.from_bytes(record[4:6], "little"):  # F > 0: a personal vector
            ids.append(raw_id.decode())
        if len(ids) == limit:
            break
    return sorted(ids)


def test_both_engines_beat_popularity_on_the_held_out_split(trained: dict[str, Trained]) -> None:
    for engine, run in trained.items():
        modelled = [s for s in run.report["segments"] if s["strategy"] != "popular"]
        assert modelled, f"{engine}: no segment got a model"
        for segment in modelled:
            model = segment["model_metrics"]["ndcg_at_10"]
            baseline = segment["baseline_metrics"]["ndcg_at_10"]
            assert model > baseline, f"{engine} {segment['name']}: {model} vs {baseline}"


def test_spark_and_implicit_served_rankings_agree_within_the_stated_tolerance(
        trained: dict[str, Trained], client: redis.Redis) -> None:
    ids = _customers_with_vectors(client, trained["spark"], 300)
    assert len(ids) >= 100
    answers: dict[str, list[list[str]]] = {}
    for engine, run in trained.items():
        with running(run.settings) as (_, stub, _channel):
            wait_for_version(stub, run.version)
            answers[engine] = []
            for customer_id in ids:
                response = stub.Recommend(pb.RecommendRequest(customer_id=customer_id), timeout=5)
                assert response.strategy == pb.STRATEGY_PERSONALIZED, engine
                answers[engine].append([o.offer_id for o in response.offers])
    overlaps = [len(set(a) & set(b)) / max(len(a), 1)
                for a, b in zip(answers["implicit"], answers["spark"], strict=True)]
    mean = float(np.mean(overlaps))
    print(f"mean top-10 overlap spark vs implicit over {len(ids)} customers: {mean:.3f}")
    assert mean >= MIN_MEAN_OVERLAP


def test_a_spark_version_is_published_like_any_other_and_served_over_grpc(
        trained: dict[str, Trained], client: redis.Redis) -> None:
    run = trained["spark"]
    keys = schema.Keys(run.settings.key_prefix)
    meta = json.loads(client.get(keys.meta(run.version)))
    assert meta["parameters"]["config"]["engine"] == "spark"
    customer_id = _customers_with_vectors(client, run, 1)[0]
    record = client.hget(keys.customers(run.version), customer_id)
    assert record is not None and record[0] == 2  # format 2, confidence row included
    assert int.from_bytes(record[8:10], "little") > 0
    with running(run.settings) as (_, stub, _channel):
        wait_for_version(stub, run.version)
        response = stub.Recommend(pb.RecommendRequest(customer_id=customer_id, limit=5),
                                  timeout=5)
        info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
    assert response.model_version == run.version
    assert response.strategy == pb.STRATEGY_PERSONALIZED
    assert len(response.offers) == 5
    assert info.active_version == run.version
    print(f"spark run (session reused): {run.report['test_seconds']:.1f} s, "
          f"phases {run.report['phases']}")
