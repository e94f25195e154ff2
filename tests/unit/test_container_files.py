"""No Docker engine here: the Dockerfile and compose file are checked against their structure."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_is_multi_stage_non_root_with_grpc_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+) AS (\S+)$", text, flags=re.M)
    assert [name for _, name in stages] == ["build", "serve", "full"]
    assert all("slim" in image for image, _ in stages[:2])
    assert re.search(r"^USER recsvc$", text, flags=re.M)
    assert text.rstrip().endswith('CMD ["recsvc", "serve"]')
    assert 'CMD ["recsvc", "health"' in text and "HEALTHCHECK" in text
    assert "OPENBLAS_NUM_THREADS=1" in text
    assert '"recsvc[train]"' in text  # `recsvc train` runs from the default image


def test_compose_runs_redis_a_one_shot_training_job_and_the_service() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "train", "recsvc"}
    assert "noeviction" in services["redis"]["command"]
    assert services["train"]["restart"] == "no"
    assert "recsvc train" in services["train"]["command"][-1]
    depends = services["recsvc"]["depends_on"]
    assert depends["train"]["condition"] == "service_completed_successfully"
    assert services["recsvc"]["ports"] == ["50051:50051"]
