"""Every command of the README runs: its `sh` blocks in order in one shell, its Python block
against the server those blocks started, and its YAML parses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from training import localredis

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def blocks(language: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_the_readme_shows_the_two_commands_first() -> None:
    first = blocks("bash")[0]
    assert first.splitlines()[0].startswith("make demo")
    assert first.splitlines()[1].startswith("make test")


def test_readme_shell_and_python_blocks_run(tmp_path: Path,
                                            redis_server: localredis.LocalRedis) -> None:
    port = str(localredis.free_port())
    shell = [b.replace("50051", port) for b in blocks("sh")]
    python_code = blocks("python")[0].replace("50051", port)
    (tmp_path / "client.py").write_text(python_code)
    train_again = ("recsvc train --customers data/customers.csv --offers data/offers.csv "
                   "--interactions data/interactions.csv --force > /dev/null")
    # The rollback block needs a previous version: train once more before it.
    script = "\n".join([
        "set -euo pipefail",
        "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT",
        shell[0], shell[1], shell[2],
        f"{sys.executable} client.py",
        shell[3],  # feedback: RecordFeedback, the fold-in consumer, export
        train_again, shell[4],
    ])
    env = dict(os.environ, RECSVC_REDIS_URL=redis_server.url, RECSVC_KEY_PREFIX="readme",
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, text=True,
                            capture_output=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "SERVING" in out
    assert "strategy segment_popular" in out  # the unknown customer with a segment
    assert "recsvc.v1.RetentionOfferService" in out  # grpcurl list
    assert '"offer_id"' in out  # grpcurl Recommend
    assert "\n5000\n" in out  # grpcurl RecommendBatch of all 5,000 customers, no deadline
    assert "STRATEGY_" in out  # the Python client
    assert "FEEDBACK_STATUS_RECORDED" in out
    assert "1 events written to events.parquet" in out
    assert "rolled back" in out


def test_readme_yaml_parses_as_a_cronjob() -> None:
    (cron,) = blocks("yaml")
    job = yaml.safe_load(cron)
    assert job["kind"] == "CronJob" and job["spec"]["concurrencyPolicy"] == "Forbid"
    container = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-1].lstrip().startswith("recsvc train")
