"""Fixtures for serving tests: a trained, published model and a real in-process gRPC server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import redis

from recsvc.api.server import RunningServer, build_server
from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.store.reads.reader import RedisStore, connect
from recsvc.v1 import offers_pb2 as pb
from recsvc.v1 import offers_pb2_grpc as pb_grpc
from tests.integration.helpers import FAST_CONFIG, cli, train_args

PERSONAL_CONFIG = FAST_CONFIG.replace("blend_weights = [0.0, 0.5, 1.0]", "blend_weights = [1.0]")


def make_data(out: Path, customers: int = 2000, seed: int = 5) -> Path:
    result = cli(["datagen", "--out", str(out), "--customers", str(customers), "--offers", "60",
                  "--segments", "3", "--seed", str(seed)], "redis://127.0.0.1:1/0", "unused")
    assert result.returncode == 0, result.stderr
    # Two known customers of a segment with no interactions at all: served by popularity; and
    # one customer of a modelled segment without any interaction: no vector, segment popularity.
    with open(out / "customers.csv", "a") as handle:
        handle.write('"Q1","quiet",1,0.1\n"Q2","quiet",1,0.1\n"N1","at_risk",1,0.1\n')
    return out


def train(data: Path, url: str, prefix: str, config_text: str = PERSONAL_CONFIG,
          seed: int | None = None, cluster: bool = False) -> str:
    """Train and publish; ``cluster``: ``url`` names a node of a Redis Cluster."""
    config = data / "config.toml"
    config.write_text(config_text)
    extra = ["--seed", str(seed)] if seed is not None else []
    result = cli(train_args(data, config, *extra), url, prefix, cluster_env(cluster))
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout.strip().splitlines()[-1]


def cluster_env(cluster: bool) -> dict[str, str]:
    """The environment of a CLI run against a Redis Cluster (nothing for a single Redis)."""
    return {"RECSVC_REDIS_CLUSTER": "1"} if cluster else {}


@contextmanager
def running(settings: Settings) -> Iterator[tuple[RunningServer, pb_grpc.RetentionOfferServiceStub,
                                                  grpc.Channel]]:
    store = RedisStore(connect(settings), schema.keys_for(settings), settings)
    server = build_server(settings, store)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield server, pb_grpc.RetentionOfferServiceStub(channel), channel
    finally:
        channel.close()
        server.stop(0)


def wait_for_version(stub: pb_grpc.RetentionOfferServiceStub, version: str,
                     timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=1).active_version == version:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"server did not switch to {version}")


def reference_ranking(client: redis.Redis, prefix: str, version: str, customer_id: str,
                      limit: int = 10, cluster: bool = False) -> list[str]:
    """Plain numpy on the published bytes, independent of recsvc.ranking."""
    keys = schema.Keys(prefix, cluster=cluster)
    meta = json.loads(client.get(keys.meta(version)))
    catalogue = json.loads(client.get(keys.offers(version)))
    raw = client.hget(keys.customer_hash_of(version, customer_id), customer_id)
    assert raw[0] == 2  # record format 2: a 12-byte header
    segment_index = int.from_bytes(raw[2:4], "little")
    dim = int.from_bytes(raw[4:6], "little")
    n_acc = int.from_bytes(raw[6:8], "little")
    vector = np.frombuffer(raw[12:12 + 4 * dim], dtype="<f4")
    accepted = set(np.frombuffer(raw[12 + 4 * dim:12 + 4 * dim + 4 * n_acc],
                                 dtype="<u4").tolist())
    seg = client.hgetall(keys.segment(version, segment_index))
    offers = np.frombuffer(seg[b"offers"], dtype="<u4")
    factors = np.frombuffer(seg[b"factors"], dtype="<f4").reshape(len(offers), -1)
    assert meta["segments"][segment_index]["strategy"] == "personalized"
    scores = factors @ vector
    now = time.time()
    candidates = []
    for local, global_index in enumerate(offers.tolist()):
        offer = catalogue[global_index]
        if global_index in accepted:
            continue
        if offer["valid_from"] is not None and now < offer["valid_from"]:
            continue
        if offer["valid_to"] is not None and now >= offer["valid_to"]:
            continue
        candidates.append((-float(scores[local]), global_index, offer["offer_id"]))
    return [offer_id for _, _, offer_id in sorted(candidates)[:limit]]


def fast_settings(settings: Settings, **changes: object) -> Settings:
    return replace(settings, **changes)  # type: ignore[arg-type]
