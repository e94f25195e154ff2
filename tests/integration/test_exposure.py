"""Learning from logged exposure, end to end on a biased world with ground truth: what the real
gRPC API serves is scored on the accepts of the unbiased window, against the oracle and the two
competitors (segment popularity, implicit ALS used directly)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from bench.offline.exposure import served_rankings
from recsvc.core import calibration, schema
from recsvc.core.config import Settings
from tests.integration.helpers import cli
from tests.integration.serving import running, wait_for_version
from training import localredis
from training.exposure import ExposureParams
from training.synth.worldeval import Truth, World, competitor_rankings, exposure_rankings

pytestmark = pytest.mark.integration

CONFIG = """
seed = 7
[tuning]
factors = [8]
alpha = [5.0]
blend_weights = [0.0, 0.5, 1.0]
[exposure]
factors = [8]
regularization = [10.0]
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("biased")
    result = cli(["datagen", "--world", "biased", "--out", str(out), "--customers", "12000",
                  "--offers", "120", "--segments", "2", "--seed", "5", "--format", "parquet"],
                 "redis://127.0.0.1:1/0", "unused")
    assert result.returncode == 0, result.stderr
    (out / "config.toml").write_text(CONFIG)
    return out


def test_served_ranking_reaches_85_percent_of_the_oracle_and_beats_both_competitors(
        world: Path, redis_server: localredis.LocalRedis, prefix: str, settings: Settings,
        client: redis.Redis, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result = cli(["train", "--customers", str(world / "customers.parquet"), "--offers",
                  str(world / "offers.parquet"), "--interactions",
                  str(world / "interactions.parquet"), "--config", str(world / "config.toml"),
                  "--report", str(report)], redis_server.url, prefix)
    assert result.returncode == 0, result.stderr + result.stdout
    version = result.stdout.strip().splitlines()[-1]
    truth = Truth.load(world)
    with running(settings) as (server, stub, _):
        wait_for_version(stub, version)
        served, _ = served_rankings(f"127.0.0.1:{server.port}", truth.customer_ids)
    rivals = competitor_rankings(world, truth.customer_ids)
    oracle = truth.summary["oracle_precision_at_10"]
    ours = truth.score(served)["precision_at_10"]
    popular = truth.score(rivals["segment_popularity"])["precision_at_10"]
    direct = truth.score(rivals["implicit_default"])["precision_at_10"]
    assert ours >= 0.85 * oracle, (ours, oracle, popular, direct)
    assert ours > popular and ours > direct, (ours, popular, direct)

    # The report puts naive and de-biased side by side and says which one chose.
    segments = json.loads(report.read_text())["segments"]
    for segment in segments:
        assert "debiased_precision_at_10" in segment["metrics"]
        assert "debiased_precision_at_10" in segment["implicit_default_metrics"]
        assert any("chosen on the debiased" in note for note in segment["notes"])
    # Every segment's p_accept map, and the global one, are valid maps in the metadata.
    meta = json.loads(client.get(schema.Keys(prefix).meta(version)))
    for segment in meta["segments"]:
        calibration.validate(segment["calibration"], segment["name"])
        if segment["strategy"] != "popular":  # its customers without a vector get popularity
            calibration.validate(segment["popularity_calibration"], segment["name"])
        assert segment["calibration_reliability"]["ece"] < 0.05
    calibration.validate(meta["global_calibration"], "global")


def test_the_grid_tool_scores_the_exposure_model_alone_on_the_truth(world: Path) -> None:
    """``python -m bench.offline.exposure_grid``'s scoring: the model fit on every shown cell,
    no validation, ranks far above segment popularity and every evaluated customer gets 10."""
    truth = Truth.load(world)
    rankings = exposure_rankings(World.load(world, truth.customer_ids), ExposureParams(8, 10.0))
    assert set(rankings) == set(truth.customer_ids)
    assert all(len(top) == 10 for top in rankings.values())
    popular = truth.score(competitor_rankings(world, truth.customer_ids)["segment_popularity"])
    ours = truth.score(rankings)["precision_at_10"]
    assert ours > 1.5 * popular["precision_at_10"], (ours, popular)
    assert ours >= 0.8 * truth.summary["oracle_precision_at_10"]
