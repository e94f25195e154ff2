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
    assert services["recsvc"]["ports"] == ["50051:50051", "8080:8080", "9464:9464"]


def test_the_training_volume_is_writable_by_the_non_root_user() -> None:
    """A named volume copies the ownership of the image's directory it is mounted on: /data
    must exist in the image and belong to recsvc, or the job cannot write its data."""
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"mkdir -p /data && chown recsvc:recsvc /data", text)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert "train-data:/data" in compose["services"]["train"]["volumes"]
    assert "--out /data" in compose["services"]["train"]["command"][-1]


def test_the_readme_cronjob_mounts_its_data_and_does_not_fail_on_a_refused_gate() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("kind: CronJob", 1)[1].split("```", 1)[0]
    job = yaml.safe_load("kind: CronJob" + block)
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/data" in mounts and {v["name"] for v in pod["volumes"]} == \
        {m["name"] for m in container["volumeMounts"]}
    script = container["args"][-1]
    assert "recsvc train" in script and "-eq 3" in script  # exit 3 (gate refused) is not a failure
    assert pod["securityContext"]["fsGroup"] == 10001  # the image's user (Dockerfile)
