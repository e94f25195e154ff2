"""What checking a version before activation costs: ``Registry.check`` (HLEN + key presence +
digest of the small keys + 64 sampled records) against a digest over every customer record
(a full HSCAN), on a synthetic version in a redis-server of its own (``--cluster``: a 3-master
Redis Cluster of its own, the records in 64 shard hashes).

    .venv/bin/python -m bench.offline.version_check --customers 1000000 [--cluster]

Prints one JSON object; docs/DESIGN.md (section 2) quotes the numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from typing import cast

import numpy as np
import redis
from redis.cluster import RedisCluster

from recsvc.core import schema
from recsvc.store.control.registry import Registry
from training import localredis

PREFIX = "benchcheck"


def write_version(client: redis.Redis, keys: schema.Keys, version: str, customers: int,
                  offers: int, segments: int, factors: int) -> None:
    rng = np.random.default_rng(1)
    registry = Registry(client, keys)
    registry.begin(version, segments)
    catalogue = [{"offer_id": f"OFF{o:05d}", "title": f"Offer {o}", "segments": ["*"],
                  "channels": [], "valid_from": None, "valid_to": None, "cost": 1.0,
                  "value": 5.0} for o in range(offers)]
    pipe = client.pipeline(transaction=False)
    pipe.set(keys.meta(version), json.dumps({"version": version, "segments": [
        {"name": f"s{i}", "strategy": "personalized"} for i in range(segments)]}))
    pipe.set(keys.offers(version), json.dumps(catalogue))
    for i in range(segments):
        pipe.hset(keys.segment(version, i), mapping={
            schema.FIELD_OFFERS: schema.encode_u32(np.arange(offers)),
            schema.FIELD_POPULARITY: schema.encode_f32(rng.random(offers)),
            schema.FIELD_FACTORS: schema.encode_f32(rng.random((offers, factors)))})
    pipe.hset(keys.global_popularity(version), mapping={
        schema.FIELD_OFFERS: schema.encode_u32(np.arange(offers)),
        schema.FIELD_POPULARITY: schema.encode_f32(rng.random(offers))})
    pipe.execute()
    vectors = rng.random((1000, factors), dtype=np.float32)
    for start in range(0, customers, 8000):
        pipe = client.pipeline(transaction=False)
        for batch in range(start, min(customers, start + 8000), 1000):
            grouped: dict[str, dict[str, bytes]] = {}  # one hash, or a hash per shard
            for c in range(batch, min(customers, batch + 1000)):
                grouped.setdefault(keys.customer_hash_of(version, f"C{c:08d}"), {})[
                    f"C{c:08d}"] = schema.encode_customer_record(
                        c % segments, vectors[c % 1000], [c % offers, (c + 1) % offers])
            for key, records in grouped.items():
                pipe.hset(key, mapping=records)  # type: ignore[arg-type]
        pipe.execute()
    registry.complete(version, segments, customers=customers,
                      digest=registry.digest(version, segments))


def full_scan_digest(client: redis.Redis, hashes: list[str]) -> tuple[int, int]:
    """An order-independent digest over every record (what a per-record checksum would need):
    the sum of 8-byte BLAKE2b hashes of (field, value); returns (records, digest)."""
    total, count = 0, 0
    for key in hashes:
        for field, value in client.hscan_iter(key, count=1000):
            total += int.from_bytes(hashlib.blake2b(field + b"\0" + value,
                                                    digest_size=8).digest(), "little")
            count += 1
    return count, total % (1 << 64)


def used_memory(client: redis.Redis, cluster: bool) -> int:
    if not cluster:
        return int(client.info("memory")["used_memory"])
    per_node = client.info("memory", target_nodes=RedisCluster.PRIMARIES)  # type: ignore[call-arg]
    return sum(int(info["used_memory"]) for info in per_node.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--offers", type=int, default=2000)
    parser.add_argument("--segments", type=int, default=4)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cluster", action="store_true",
                        help="a 3-master Redis Cluster instead of one redis-server")
    args = parser.parse_args()
    server = localredis.start_cluster(masters=3) if args.cluster else localredis.start()
    try:
        client = cast(redis.Redis, RedisCluster.from_url(server.url, socket_timeout=600)) \
            if args.cluster else redis.Redis.from_url(server.url, socket_timeout=600)
        keys = schema.Keys(PREFIX, cluster=args.cluster)
        registry = Registry(client, keys)
        version = schema.new_version_id()
        started = time.perf_counter()
        write_version(client, keys, version, args.customers, args.offers, args.segments,
                      args.factors)
        written = time.perf_counter() - started
        checks, digests = [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            registry.check(version)
            checks.append(time.perf_counter() - started)
            started = time.perf_counter()
            registry.digest(version, args.segments)
            digests.append(time.perf_counter() - started)
        started = time.perf_counter()
        scanned, _ = full_scan_digest(client, keys.customer_hashes(version))
        scan = time.perf_counter() - started
        memory = used_memory(client, args.cluster)
        print(json.dumps({
            "cluster": args.cluster, "customers": args.customers, "offers": args.offers,
            "segments": args.segments,
            "factors": args.factors, "redis_used_memory_mib": round(memory / 2**20),
            "write_seconds": round(written, 2),
            "check_seconds_median": round(statistics.median(checks), 4),
            "small_keys_digest_seconds_median": round(statistics.median(digests), 4),
            "full_hscan_digest_seconds": round(scan, 2), "full_hscan_records": scanned,
        }, indent=2))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
