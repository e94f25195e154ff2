"""Helpers for integration tests: run the real CLI, write small data sets."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import redis

# Long enough that a loaded machine's heartbeat (every ttl/3) still renews the training lock in
# time (2 s lost it under a load average of 18); the kill test waits this long for expiry.
LOCK_TTL_SECONDS = 5.0
FAST_CONFIG = f"""
seed = 7
[tuning]
factors = [8]
alpha = [5.0]
blend_weights = [0.0, 0.5, 1.0]
[evaluation]
min_evaluated = 5
[publish]
lock_ttl_seconds = {LOCK_TTL_SECONDS}
"""


@functools.cache
def is_cluster(redis_url: str) -> bool:
    """Whether the URL names a Redis Cluster node (the ``cluster`` marker's second topology):
    the tools a test starts then get RECSVC_REDIS_CLUSTER=1, as a deployment would set it."""
    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=0.5)
        return int(client.info("cluster").get("cluster_enabled", 0)) == 1
    except (redis.RedisError, ValueError):  # no Redis there, or not a Redis URL at all
        return False


def redis_env(redis_url: str, prefix: str) -> dict[str, str]:
    """The Redis settings of a recsvc process started by a test."""
    env = {"RECSVC_REDIS_URL": redis_url, "RECSVC_KEY_PREFIX": prefix}
    if is_cluster(redis_url):
        env["RECSVC_REDIS_CLUSTER"] = "1"
    return env


def cli(args: list[str], redis_url: str, prefix: str,
        extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **redis_env(redis_url, prefix), **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "recsvc", *args], env=env, text=True,
                          capture_output=True, timeout=300)


def popen_cli(args: list[str], redis_url: str, prefix: str) -> subprocess.Popen[str]:
    env = {**os.environ, **redis_env(redis_url, prefix)}
    return subprocess.Popen([sys.executable, "-m", "recsvc", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def train_args(data_dir: Path, config: Path, *more: str) -> list[str]:
    return ["train", "--customers", str(data_dir / "customers.csv"), "--offers",
            str(data_dir / "offers.csv"), "--interactions", str(data_dir / "interactions.csv"),
            "--config", str(config), *more]


def planted(tmp: Path) -> Path:
    """Two tastes in one segment: 'a' customers accept a1..a5, more 'b' customers accept b1..b5.

    Popularity prefers the b offers; a personal model must put a5 first for customer a-test, who
    accepted a1..a4 only.
    """
    customers = ["customer_id,segment"]
    interactions = ["customer_id,offer_id,event,ts"]
    t = 1_700_000_000
    for group, count in (("a", 40), ("b", 80)):
        for i in range(count):
            cid = f"{group}{i}"
            customers.append(f"{cid},main")
            for j in range(1, 6):
                t += 1
                interactions.append(f"{cid},{group}{j},accept,{t}")
    customers.append("a-test,main")
    for j in range(1, 5):
        t += 1
        interactions.append(f"a-test,a{j},accept,{t}")
    offers = ["offer_id,segments,title"] + [f"{g}{j},*,Offer {g}{j}" for g in "ab"
                                            for j in range(1, 6)]
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "customers.csv").write_text("\n".join(customers) + "\n")
    (tmp / "offers.csv").write_text("\n".join(offers) + "\n")
    (tmp / "interactions.csv").write_text("\n".join(interactions) + "\n")
    return tmp


def with_display_columns(data: Path) -> Path:
    """The planted offers with the four display columns: a5 has all, b2 an invalid image URL
    (read as missing, reported), the others none."""
    lines = (data / "offers.csv").read_text().splitlines()
    out = [lines[0] + ",description,image_url,accept_label,decline_label"]
    for line in lines[1:]:
        offer_id = line.split(",")[0]
        if offer_id == "a5":
            line += (',"Three months at half price.\nNo commitment.",'
                     "https://cdn.example.com/offers/a5.png,Apply half price,Not interested")
        elif offer_id == "b2":
            line += ",,javascript:alert(1),,"
        else:
            line += ",,,,"
        out.append(line)
    (data / "offers.csv").write_text("\n".join(out) + "\n")
    return data
