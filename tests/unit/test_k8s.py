"""The Kubernetes example (deploy/k8s/) names only real settings with allowed values, uses
recsvc's ports and health paths, and runs commands the console script accepts."""

from __future__ import annotations

import re
import shlex
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from recsvc.api.http import openapi
from recsvc.cli.main import _parser
from recsvc.core.config import Settings, problems

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SETTINGS = {f"RECSVC_{f.name.upper()}" for f in fields(Settings)}
NAME = re.compile(r"\bRECSVC_[A-Z0-9_]+\b")
# What the image sets (Dockerfile) and docker-compose publishes: the ports the example must use.
METRICS_PORT, HTTP_PORT = 9464, 8080


def documents() -> list[dict[str, Any]]:
    """Every Kubernetes object of the example (kustomization.yaml is kustomize's, not one)."""
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents() if d["kind"] == kind}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    return workload["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def container(name: str) -> dict[str, Any]:
    """The container called ``name`` (each workload runs one)."""
    for workload in [*of_kind("Deployment").values(), *of_kind("CronJob").values()]:
        (only,) = pod_spec(workload)["containers"]
        if only["name"] == name:
            return only  # type: ignore[no-any-return]
    raise AssertionError(f"no container {name!r}")


def environment(name: str) -> dict[str, str]:
    """The container's RECSVC_* environment: its ConfigMaps, then its own values (a value
    from a Secret reads as the Secret's example value)."""
    maps, secrets = of_kind("ConfigMap"), of_kind("Secret")
    spec = container(name)
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]]["data"])
    for item in spec.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]]["stringData"][ref["key"]]
    return env


def test_every_recsvc_variable_named_anywhere_is_a_real_setting() -> None:
    """Env names, ConfigMap and Secret keys, and any RECSVC_* word in the files' text."""
    named: set[str] = set()
    for path in K8S.glob("*.yaml"):
        named |= set(NAME.findall(path.read_text()))
    assert named, "the example names no setting"
    assert named <= SETTINGS, sorted(named - SETTINGS)
    for doc in of_kind("ConfigMap").values():
        assert set(doc["data"]) <= SETTINGS


@pytest.mark.parametrize("name", ["serve", "foldin", "train"])
def test_each_container_environment_is_a_valid_configuration(name: str) -> None:
    env = environment(name)
    assert {k for k in env if k.startswith("RECSVC_")} <= SETTINGS
    assert env["RECSVC_REDIS_URL"].startswith(("redis://", "rediss://"))
    assert problems(Settings.from_env(env)) == []


def test_serve_uses_recsvc_ports_and_probes_its_health_paths() -> None:
    serve = container("serve")
    ports = {p["name"]: p["containerPort"] for p in serve["ports"]}
    settings = Settings.from_env(environment("serve"))
    assert ports["grpc"] == settings.port == Settings().port == 50051
    assert ports["http"] == settings.http_port == HTTP_PORT
    assert ports["metrics"] == settings.metrics_port == METRICS_PORT
    documented = set(openapi.document()["paths"])
    for probe, path in (("readinessProbe", "/healthz"), ("livenessProbe", "/livez"),
                        ("startupProbe", "/livez")):
        assert serve[probe]["httpGet"] == {"path": path, "port": "http"}
        assert path in documented
    # Graceful stop fits in the pod's termination grace period (with the preStop pause).
    pause = float(serve["lifecycle"]["preStop"]["exec"]["command"][1])
    period = pod_spec(of_kind("Deployment")["recsvc-serve"])["terminationGracePeriodSeconds"]
    assert pause + settings.grace_seconds < period


def test_services_select_the_serving_pods_and_target_named_ports() -> None:
    deployment = of_kind("Deployment")["recsvc-serve"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"]: p["containerPort"] for p in container("serve")["ports"]}
    for service in of_kind("Service").values():
        assert service["spec"]["selector"].items() <= labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports
            assert port["port"] == ports[port["targetPort"]]


def test_the_commands_are_ones_the_console_script_accepts() -> None:
    serve, foldin = container("serve"), container("foldin")
    assert serve["command"] == foldin["command"] == ["recsvc"]
    assert _parser().parse_args(serve["args"]).command == "serve"
    assert _parser().parse_args(foldin["args"]).command == "feedback"
    script = container("train")["args"][0]
    first = script.split(";")[0].replace("$(date +%F)", "2026-01-01")
    words = shlex.split(first)
    assert words[:2] == ["recsvc", "train"]
    args = _parser().parse_args(words[1:])
    assert args.command == "train" and args.report.startswith("/data/")
    mounts = {m["mountPath"] for m in container("train")["volumeMounts"]}
    assert "/data" in mounts


def test_redis_is_left_outside_and_every_referenced_object_exists() -> None:
    docs = documents()
    assert not any("redis" in d["metadata"]["name"] and d["kind"] in
                   ("Deployment", "StatefulSet", "Service") for d in docs)
    maps, secrets = of_kind("ConfigMap"), of_kind("Secret")
    claims = of_kind("PersistentVolumeClaim")
    for workload in [*of_kind("Deployment").values(), *of_kind("CronJob").values()]:
        spec = pod_spec(workload)
        for item in spec["containers"][0].get("env", []):
            if "valueFrom" in item:
                ref = item["valueFrom"]["secretKeyRef"]
                assert ref["key"] in secrets[ref["name"]]["stringData"]
        for source in spec["containers"][0].get("envFrom", []):
            assert source["configMapRef"]["name"] in maps
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml")
                                    if p.name != "kustomization.yaml")
