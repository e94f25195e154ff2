"""Capacity points for docs/SCALING.md: ``python -m bench.offline.scaling {redis,fit} ...``.

redis: trains the bench data set of ``--base`` customers (implicit engine, default config) into a
  throwaway redis-server, reads the published format-2 records back, then writes each point's
  customer count into a fresh hash with those records cycled under new ids, the way the job
  publishes (HSET of 1,000 fields per command, 8 commands per pipeline, transaction=False):
  publish rate and ``MEMORY USAGE`` of the hash per customer.
fit: one ALS fit of the base set's largest segment per engine, each in its own process
  (seconds; peak RSS of Python and, for Spark, of its JVM).
Results: bench/results/scaling.json (merged per part).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from bench.__main__ import ROOT, dataset, machine
from training import localredis

RESULTS = ROOT / "bench" / "results" / "scaling.json"
FIELDS_PER_HSET, HSETS_PER_PIPELINE = 1000, 8


def _train(url: str, data: Path, prefix: str, extra: dict[str, str] | None = None
           ) -> dict[str, Any]:
    report_path = data / "scaling-report.json"
    env = dict(os.environ, RECSVC_REDIS_URL=url, RECSVC_KEY_PREFIX=prefix, **(extra or {}))
    done = subprocess.run([sys.executable, "-m", "recsvc", "train", "--customers",
                           str(data / "customers.csv"), "--offers", str(data / "offers.csv"),
                           "--interactions", str(data / "interactions.csv"), "--report",
                           str(report_path), "--force"], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    report: dict[str, Any] = json.loads(report_path.read_text())
    return report


def bench_redis(base: int, points: list[int]) -> dict[str, Any]:
    server = localredis.start()
    try:
        client = redis.Redis.from_url(server.url, socket_timeout=120)
        run = _train(server.url, dataset(base), "scale")
        customers_key = f"scale:v:{run['version']}:customers"
        records = [value for _, value in client.hscan_iter(customers_key, count=5000)]
        sizes = [len(r) for r in records]
        with_vector = sum(1 for r in records if int.from_bytes(r[4:6], "little"))
        out: dict[str, Any] = {
            "base_customers": base, "train_report": {
                k: run[k] for k in ("phases", "peak_rss_mib", "publish_customers_per_second",
                                    "seconds_total", "rows_read")},
            "factors": sorted({s["factors"] for s in run["segments"]}),
            "record_bytes_mean": sum(sizes) / len(sizes),
            "share_with_vector": with_vector / len(records),
            "published_hash_bytes_per_customer":
                client.memory_usage(customers_key, samples=0) / len(records),
            "points": []}
        print(json.dumps({k: v for k, v in out.items() if k != "points"}), flush=True)
        client.unlink(customers_key)
        for n in points:
            key = f"scale:points:{n}"
            used_before = client.info("memory")["used_memory"]
            started = time.perf_counter()
            pipe = client.pipeline(transaction=False)
            for first in range(0, n, FIELDS_PER_HSET):
                pipe.hset(key, mapping={f"C{i:09d}": records[i % len(records)]
                                        for i in range(first, min(n, first + FIELDS_PER_HSET))})
                if len(pipe) >= HSETS_PER_PIPELINE:
                    pipe.execute()
            pipe.execute()
            seconds = time.perf_counter() - started
            memory = client.info("memory")
            point = {"customers": n, "publish_seconds": round(seconds, 2),
                     "publish_per_second": round(n / seconds),
                     "hash_bytes_per_customer": round(client.memory_usage(key, samples=0) / n, 1),
                     "used_memory_delta_per_customer":
                         round((memory["used_memory"] - used_before) / n, 1),
                     "redis_rss_mib": round(memory["used_memory_rss"] / 2**20, 1)}
            print(json.dumps(point), flush=True)
            out["points"].append(point)
            client.unlink(key)
            time.sleep(1)  # let the lazy free finish before the next point
        return out
    finally:
        server.stop()


def bench_cluster(base: int, points: list[int], masters: int) -> dict[str, Any]:
    """The same points on a local Redis Cluster of ``masters`` (RECSVC_REDIS_CLUSTER): the base
    set trained and published into it by `recsvc train` itself (its publish rate), then each
    point's records, cycled under new ids, written per shard hash the way publish writes them
    (a chunk's records grouped by shard, one cluster pipeline per chunk: every master's
    commands written before any reply is read): rate, memory per customer, spread."""
    from recsvc.core import schema
    from recsvc.core.config import Settings
    from recsvc.store.reads.reader import connect

    cluster = localredis.start_cluster(masters=masters)
    try:
        settings = Settings(redis_url=cluster.url, redis_cluster=True, key_prefix="scale")
        client = connect(settings, timeout_ms=120_000)
        env_extra = {"RECSVC_REDIS_CLUSTER": "1"}
        run = _train(cluster.url, dataset(base), "scale", env_extra)
        keys = schema.keys_for(settings)
        records = [value for key in keys.customer_hashes(run["version"])
                   for _, value in client.hscan_iter(key, count=5000)]
        nodes = [redis.Redis(port=n.port) for n in cluster.nodes]
        out: dict[str, Any] = {
            "masters": masters, "base_customers": base,
            "train_publish_customers_per_second": run["publish_customers_per_second"],
            "train_seconds_total": run["seconds_total"], "points": []}
        print(json.dumps({k: v for k, v in out.items() if k != "points"}), flush=True)
        points_keys = schema.Keys("points", cluster=True)
        for n in points:
            used_before = [node.info("memory")["used_memory"] for node in nodes]
            started = time.perf_counter()
            chunk = FIELDS_PER_HSET * HSETS_PER_PIPELINE
            for first in range(0, n, chunk):
                grouped: dict[str, dict[Any, bytes]] = {}
                for i in range(first, min(n, first + chunk)):
                    customer = f"C{i:09d}"
                    grouped.setdefault(points_keys.customer_hash_of(str(n), customer), {})[
                        customer] = records[i % len(records)]
                pipe = client.pipeline(transaction=False)
                for key, mapping in grouped.items():
                    pipe.hset(key, mapping=mapping)
                pipe.execute()
            seconds = time.perf_counter() - started
            used = [node.info("memory")["used_memory"] - before
                    for node, before in zip(nodes, used_before, strict=True)]
            point = {"customers": n, "publish_seconds": round(seconds, 2),
                     "publish_per_second": round(n / seconds),
                     "used_memory_delta_per_customer": round(sum(used) / n, 1),
                     "customers_per_master_share": [round(u / max(1, sum(used)), 3)
                                                    for u in used if u > 0]}
            print(json.dumps(point), flush=True)
            out["points"].append(point)
            client.unlink(*points_keys.customer_hashes(str(n)))
            time.sleep(1)
        return out
    finally:
        cluster.stop()


def _jvm_peak_mib() -> float:
    """Peak RSS (VmHWM) of this process's java descendants (Spark's driver JVM)."""
    peak = 0.0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if fields.get("Name", "").strip() == "java" and _descends(int(fields["Pid"]), os.getpid()):
            peak = max(peak, int(fields.get("VmHWM", "0 kB").split()[0]) / 1024)
    return peak


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


def fit_one(base: int, engine: str, factors: int, iterations: int, whole: bool
            ) -> dict[str, Any]:
    """One fit of the base set's largest segment, or with ``whole`` of every segment as one
    block-diagonal matrix (the work of fitting them all); in a process of its own."""
    from training.config import Spark, TrainConfig
    from training.fit import Params, fit
    from training.inputs import data as data_module
    from training.matrix import build_cells

    folder = dataset(base)
    config = TrainConfig(negative_impressions="false")
    data = data_module.load(str(folder / "customers.csv"), str(folder / "offers.csv"),
                            str(folder / "interactions.csv"), config.weight_cap)
    segments = build_cells(data, config)
    if whole:
        from scipy.sparse import block_diag

        matrix = block_diag([c.matrix(None) for c in segments], format="csr")
    else:
        matrix = max(segments, key=lambda c: c.interactions).matrix(None)
    options = Spark(conf={"spark.ui.enabled": "false"})
    if engine == "spark":  # start the JVM outside the timing: a job starts it once per run
        from training.engines.spark import session
        session(options)
    params = Params(factors, 0.05, 10.0, iterations, False)
    started = time.perf_counter()
    fit(matrix, "als", params, 42, 0.05, "largest", engine, options)
    seconds = time.perf_counter() - started
    return {"engine": engine, "matrix": "all segments" if whole else "largest segment",
            "customers": matrix.shape[0], "offers": matrix.shape[1],
            "nonzeros": int(matrix.nnz), "factors": factors, "iterations": iterations,
            "seconds": round(seconds, 2),
            "python_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                         / 1024, 1),
            "jvm_peak_rss_mib": round(_jvm_peak_mib(), 1)}


def _merge(part: str, value: Any) -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[part] = {"machine": machine(), "load_average": os.getloadavg(), "result": value}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.offline.scaling")
    sub = parser.add_subparsers(dest="part", required=True)
    red = sub.add_parser("redis")
    red.add_argument("--base", type=int, default=100_000)
    red.add_argument("--points", type=int, nargs="+", default=[100_000, 1_000_000])
    clu = sub.add_parser("cluster")
    clu.add_argument("--base", type=int, default=100_000)
    clu.add_argument("--points", type=int, nargs="+", default=[1_000_000])
    clu.add_argument("--masters", type=int, default=3)
    fits = sub.add_parser("fit")
    fits.add_argument("--base", type=int, default=100_000)
    fits.add_argument("--engines", nargs="+", default=["implicit", "spark"])
    fits.add_argument("--factors", type=int, default=16)
    fits.add_argument("--iterations", type=int, default=15)
    fits.add_argument("--whole", action="store_true")
    one = sub.add_parser("fit-one")
    for p in (one,):
        p.add_argument("--base", type=int, default=100_000)
        p.add_argument("--engine", required=True)
        p.add_argument("--factors", type=int, default=16)
        p.add_argument("--iterations", type=int, default=15)
        p.add_argument("--whole", action="store_true")
    args = parser.parse_args()
    if args.part == "redis":
        _merge("redis", bench_redis(args.base, args.points))
    elif args.part == "cluster":
        _merge("cluster", bench_cluster(args.base, args.points, args.masters))
    elif args.part == "fit-one":
        print(json.dumps(fit_one(args.base, args.engine, args.factors, args.iterations,
                                 args.whole)))
    else:
        rows = []
        for engine in args.engines:
            done = subprocess.run(
                [sys.executable, "-m", "bench.offline.scaling", "fit-one", "--base", str(args.base),
                 "--engine", engine, "--factors", str(args.factors), "--iterations",
                 str(args.iterations), *(["--whole"] if args.whole else [])],
                capture_output=True, text=True, cwd=ROOT)
            if done.returncode:
                raise SystemExit(done.stderr[-2000:])
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
        _merge(f"fit-{args.base}{'-whole' if args.whole else ''}", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
