"""``recsvc train --decisions DIR`` end to end: a decision log export with logged propensities and
explored answers joins the interactions by decision_id; the run report and the version metadata
show naive, de-biased (with the logged propensities) and exploration-slice metrics side by side,
and which chose. The statistics themselves are tested against known answers in
tests/unit/test_logged_propensity_metrics.py."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.experiments.decision_log import Decision
from recsvc.experiments.parquet_log import table_of
from recsvc.store.feedback.decisions import read_decisions
from recsvc.v1 import offers_pb2 as pb
from tests.integration.helpers import FAST_CONFIG, cli, planted
from tests.integration.serving import running, train, wait_for_version
from training import localredis
from training.inputs import decisions

pytestmark = pytest.mark.integration

CUSTOMERS, OFFERS, DECISIONS, SHOWN_PER_DECISION = 1500, 30, 6, 4
CONFIG = """
seed = 3
[evaluation]
holdout = 1
min_history = 2
[tuning]
factors = [4]
regularization = [0.1]
alpha = [5.0]
iterations = [5]
blend_weights = [0.0, 1.0]
[exposure]
factors = [4]
regularization = [10.0]
iterations = 4
competitors = false
"""


@pytest.fixture(scope="module")
def logged_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Customers shown offers by a biased policy with known per-decision propensities; a quarter
    of them only by explored answers (SHOWN_PER_DECISION of OFFERS drawn uniformly)."""
    out = tmp_path_factory.mktemp("logged")
    rng = np.random.default_rng(3)
    taste = rng.normal(size=(CUSTOMERS, 3))
    p = 1 / (1 + np.exp(-(-1.2 + taste @ rng.normal(size=(OFFERS, 3)).T)))
    bias = np.exp(rng.normal(0, 1.5, OFFERS))
    explores = rng.random(CUSTOMERS) < 0.25
    entries: list[Decision] = []
    rows: list[tuple[str, str, str, int, str]] = []
    for c in range(CUSTOMERS):
        for d in range(DECISIONS):
            if explores[c]:
                shown = rng.choice(OFFERS, SHOWN_PER_DECISION, replace=False)
                q = np.full(SHOWN_PER_DECISION, SHOWN_PER_DECISION / OFFERS)
            else:
                weights = bias / bias.sum()
                shown = rng.choice(OFFERS, SHOWN_PER_DECISION, replace=False, p=weights)
                q = np.minimum(1.0, SHOWN_PER_DECISION * weights[shown])  # logged as is
            decision_id = f"d{c}-{d}"
            offers = tuple(f"o{o}" for o in shown)
            zeros = np.zeros(len(offers), np.float32)
            entries.append(Decision(decision_id, 1_790_000_000.0 + d, f"c{c}", "s1", "v0",
                                    "treatment", "personalized", "email", offers, zeros,
                                    q.astype(np.float32), zeros, zeros, zeros,
                                    explored=bool(explores[c])))
            for o in shown:
                ts = 1_790_000_000 + 1000 * d
                rows.append((f"c{c}", f"o{o}", "impression", ts, decision_id))
                if rng.random() < p[c, o]:
                    rows.append((f"c{c}", f"o{o}", "accept", ts + 10, decision_id))
    (out / "decisions").mkdir()
    pq.write_table(table_of([(0, e.decision_id, e) for e in entries]),
                   out / "decisions" / "log.parquet")
    pq.write_table(pa.table({name: [r[i] for r in rows] for i, name in enumerate(
        ("customer_id", "offer_id", "event", "ts", "decision_id"))}),
        out / "interactions.parquet")
    pq.write_table(pa.table({"customer_id": [f"c{c}" for c in range(CUSTOMERS)],
                             "segment": ["s1"] * CUSTOMERS}), out / "customers.parquet")
    pq.write_table(pa.table({"offer_id": [f"o{o}" for o in range(OFFERS)],
                             "segments": ["*"] * OFFERS}), out / "offers.parquet")
    (out / "config.toml").write_text(CONFIG)
    return out


def _train(world: Path, decisions: Path, url: str, prefix: str, report: Path
           ) -> tuple[int, str, str]:
    result = cli(["train", "--customers", str(world / "customers.parquet"), "--offers",
                  str(world / "offers.parquet"), "--interactions",
                  str(world / "interactions.parquet"), "--config", str(world / "config.toml"),
                  "--decisions", str(decisions), "--report", str(report)], url, prefix)
    return result.returncode, result.stdout, result.stderr


def test_train_with_a_decision_log_reports_logged_debiased_and_exploration_metrics(
        logged_world: Path, redis_server: localredis.LocalRedis, prefix: str,
        tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    code, out, err = _train(logged_world, logged_world / "decisions", redis_server.url, prefix,
                            report_path)
    assert code == 0, err + out
    report = json.loads(report_path.read_text())
    joined = report["decision_log"]
    assert joined["decisions_read"] == CUSTOMERS * DECISIONS
    assert joined["interactions_joined"] == joined["interactions_with_decision_id"] > 0
    assert joined["interactions_explored"] > 0
    [segment] = report["segments"]
    evaluation = segment["evaluation"]
    assert evaluation["selected_on"] == "debiased_precision_at_10"
    # Every held-out accept was joined: the de-biased metric used no estimated propensity.
    assert evaluation["logged_propensity_pairs"] == evaluation["held_out_pairs"] > 0
    assert evaluation["estimated_propensity_pairs"] == 0
    served = segment["metrics"]
    assert evaluation["served"] == {  # side by side in the metadata's extra
        kind: {"precision_at_10": served[f"{prefix_}precision_at_10"],
               "ndcg_at_10": served[f"{prefix_}ndcg_at_10"]}
        for kind, prefix_ in (("naive", ""), ("debiased", "debiased_"),
                              ("exploration", "exploration_"))}
    assert 0 < evaluation["exploration_customers"] < segment["evaluated_customers"]
    for key in ("metrics", "model_metrics", "baseline_metrics"):
        metrics = segment[key]
        assert {"precision_at_10", "debiased_precision_at_10",
                "exploration_precision_at_10", "exploration_ndcg_at_10"} <= set(metrics)
        assert metrics["exploration_customers"] == evaluation["exploration_customers"]
    assert "exploration p@10" in out and "chosen on debiased_precision_at_10" in out
    assert "decision log: " in out


def test_a_bad_decision_log_fails_the_run_naming_it(
        logged_world: Path, redis_server: localredis.LocalRedis, prefix: str,
        tmp_path: Path) -> None:
    code, out, err = _train(logged_world, tmp_path / "nowhere", redis_server.url, prefix,
                            tmp_path / "r.json")
    assert code == 1
    assert "--decisions" in err + out and "no such directory" in err + out


@pytest.mark.both_models
def test_serving_logs_whether_each_answer_explored(tmp_path: Path, settings: Settings,
                                                   client: redis.Redis) -> None:
    """With half the answers exploring, the logged ``explored`` is true exactly for the answers
    whose offers carry the "exploration" reason, and survives the Parquet export."""
    version = train(planted(tmp_path), settings.redis_url, settings.key_prefix, FAST_CONFIG)
    customers = [f"a{i}" for i in range(40)]
    with running(replace(settings, decision_log=True, explore_share=0.5)) as (_, stub, _c):
        wait_for_version(stub, version)
        answers = [stub.Recommend(pb.RecommendRequest(customer_id=c, limit=3), timeout=5)
                   for c in customers]
        keys = schema.Keys(settings.key_prefix)
        deadline = time.monotonic() + 5
        while sum(client.xlen(keys.decisions(s)) for s in range(schema.SHARDS)) < len(answers) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
    explored = {a.decision_id: any("exploration" in o.reasons for o in a.offers)
                for a in answers}
    logged = {d.decision_id: d.explored for d in read_decisions(client, keys)}
    assert logged == explored and 0 < sum(logged.values()) < len(logged)
    result = cli(["decisions", "export", "--out", str(tmp_path / "export")],
                 settings.redis_url, settings.key_prefix)
    assert result.returncode == 0, result.stderr
    shown = decisions.read(str(tmp_path / "export"))
    assert shown.decisions == len(logged) and shown.explored.sum() == 3 * sum(logged.values())


def test_biased_world_exploration_window_is_the_training_exploration_slice(
        redis_server: localredis.LocalRedis, prefix: str, tmp_path: Path) -> None:
    """``datagen --world biased --explore-share``: explored answers logged with decision ids and
    a decision log; training joins every explored interaction and reports the slice, on which
    the chosen model beats segment popularity (as the world's truth says it does)."""
    out = tmp_path / "world"
    made = cli(["datagen", "--world", "biased", "--out", str(out), "--customers", "4000",
                "--offers", "80", "--segments", "2", "--seed", "5", "--format", "parquet",
                "--explore-share", "0.3"], "redis://127.0.0.1:1/0", "unused")
    assert made.returncode == 0, made.stderr
    (out / "config.toml").write_text(CONFIG)
    report_path = tmp_path / "report.json"
    code, stdout, err = _train(out, out / "decisions", redis_server.url, prefix, report_path)
    assert code == 0, err + stdout
    report = json.loads(report_path.read_text())
    joined = report["decision_log"]
    assert joined["interactions_joined"] == joined["interactions_with_decision_id"] \
        == joined["interactions_explored"] > 0
    for segment in report["segments"]:
        evaluation = segment["evaluation"]
        assert evaluation["exploration_customers"] > 0
        assert evaluation["logged_propensity_pairs"] == evaluation["exploration_pairs"] > 0
        if segment["strategy"] != "segment_popular":
            assert segment["model_metrics"]["exploration_precision_at_10"] > \
                segment["baseline_metrics"]["exploration_precision_at_10"]


def test_explore_share_is_validated() -> None:
    bad = cli(["datagen", "--out", "/tmp/unused-i13p", "--explore-share", "0.5"],
              "redis://127.0.0.1:1/0", "unused")
    assert bad.returncode != 0 and "--explore-share: allowed with --world biased only" \
        in bad.stderr
    bad = cli(["datagen", "--world", "biased", "--out", "/tmp/unused-i13p", "--explore-share",
               "1.5"], "redis://127.0.0.1:1/0", "unused")
    assert bad.returncode != 0 and "--explore-share: 1.5 is not allowed" in bad.stderr
