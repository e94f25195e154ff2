"""`make chaos`: run every fault scenario and write docs/RELIABILITY.md (figures and verdicts).

    python -m bench.chaos [--quick] [--only NAME ...] [--out docs/RELIABILITY.md]

--quick: fewer fuzz and memory requests and kills (about 3 minutes instead of about 8). Exits 1
when a scenario misses its bar. Not part of `make test` (it takes minutes and loads both cores).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.chaos import scenarios
from training import localredis

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", help="scenario names (default: all)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "RELIABILITY.md"))
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "chaos.json"),
                        help="raw results; with --only, the other scenarios' results are kept")
    args = parser.parse_args()
    customers = 5000
    fuzz_count, memory_count, kills = (3000, 20_000, 3) if args.quick else \
        (10_000, 100_000, 6)
    redis_server = localredis.start()
    results: dict[str, Any] = {}
    if args.only and Path(args.json).exists():
        results = json.loads(Path(args.json).read_text())
    try:
        with tempfile.TemporaryDirectory(prefix="recsvc-chaos-") as folder:
            env = scenarios.prepare(Path(folder), redis_server, customers, args.quick)
            env.train(seed=1)
            plan: dict[str, Callable[[], dict[str, Any]]] = {
                "redis_stalled": lambda: scenarios.redis_stalled(env),
                "redis_killed": lambda: scenarios.redis_killed(env),
                "flaky_proxy": lambda: scenarios.flaky_proxy(env),
                "overload": lambda: scenarios.overload(env),
                # Two fresh versions: earlier scenarios (a Redis restart) may have lost these.
                "model_switch": lambda: scenarios.model_switch(env, env.train(seed=31),
                                                               env.train(seed=32)),
                "training_killed": lambda: scenarios.training_killed(env, kills),
                "fuzz": lambda: scenarios.fuzz(env, fuzz_count),
                "memory": lambda: scenarios.memory(env, memory_count),
            }
            for name, run in plan.items():
                if args.only and name not in args.only:
                    continue
                started = time.monotonic()
                try:
                    results[name] = run()
                except Exception as exc:  # a scenario that breaks is a failed scenario
                    results[name] = {"passed": False, "error": f"{type(exc).__name__}: {exc}"}
                results[name]["seconds"] = round(time.monotonic() - started, 1)
                print(json.dumps({name: results[name]}), flush=True)
    finally:
        redis_server.stop()
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    write_report(Path(args.out), results, args)
    return 0 if all(r.get("passed") for r in results.values()) else 1


BARS = {
    "redis_stalled": "the server handles every call within its deadline, 0 INTERNAL/UNKNOWN",
    "redis_killed": "the server handles every call within its deadline, 0 INTERNAL/UNKNOWN",
    "flaky_proxy": "the server handles every call within its deadline, 0 INTERNAL/UNKNOWN",
    "overload": "goodput at 2x and 4x >= 90% of 1x; health never rejected",
    "model_switch": "0 answers that differ from their version's ranking (no mixed versions; "
                    "degraded answers, from popularity when a Redis read timed out, are counted "
                    "apart)",
    "training_killed": "active version never moved by a killed run; next run publishes; "
                       "0 leaked keys",
    "fuzz": "0 INTERNAL/UNKNOWN",
    "memory": "RSS growth < 10 MiB from 20% of the requests to the end",
}


NOTES = [
    "- *degraded* answers are the design working: while Redis fails, answers come from memory "
    "(popularity) instead of failing; a reset or a delay beyond `RECSVC_REDIS_TIMEOUT_MS` "
    "opens the breaker for `RECSVC_REDIS_RETRY_AFTER_FAILURE_MS` (200 ms here).",
    "- DEADLINE_EXCEEDED at the client with 0 calls over the deadline at the server means the "
    "time went before or after the handler (queueing in the client or the kernel on a CPU "
    "shared by load generator, server, Redis and other work).",
    "- Loading a new version under load: model_switch reports how many calls the server "
    "handled in more than 250 ms while it switched versions every 250 ms (the watcher thread "
    "decodes each version holding the GIL). A first run of redis_killed that published again "
    "during its load had 12 of 5,239 calls over 250 ms; it now publishes after its load.",
    "- overload: the cap (`RECSVC_MAX_CONCURRENT_RPCS`=16 here) answers the excess "
    "RESOURCE_EXHAUSTED at once; goodput figures move +-20% between runs on this machine "
    "(other processes share the 2 CPUs), so one run's ratio above 1 is noise, not a speed-up.",
    "- A scenario reported with an error did not run to its end; `python -m bench.chaos --only "
    "NAME` reruns it and merges the result into this page.",
]


def write_report(path: Path, results: dict[str, Any], args: argparse.Namespace) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                            capture_output=True, check=False).stdout.strip() or "unknown"
    lines = [
        "# Reliability: faults under load",
        "",
        "Written by `make chaos` (`python -m bench.chaos"
        + (" --quick" if args.quick else "") + "`); do not edit by hand.",
        f"Run {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, commit {commit}, "
        f"{platform.machine()} with {_cpus()} CPUs shared with other work (the load generator, "
        "Redis and the server run on the same machine: latencies include their contention).",
        "",
        "Setup: a throwaway redis-server, 5,000 generated customers, a `recsvc serve` process "
        "(one worker); the load is 16 calls in flight from grpc.aio clients on 4 channels, "
        "deadline 250 ms unless stated, 10% unknown customers. A call is *late* when it took "
        "more than its deadline + 50 ms at the client; the server's own histogram "
        "(`recsvc_rpc_duration_seconds`) says how many it handled in more than the deadline.",
        "",
        "| scenario | bar | result | figures |",
        "|---|---|---|---|",
    ]
    for name, result in results.items():
        verdict = "met" if result.get("passed") else "**not met**"
        lines.append(f"| {name} | {BARS.get(name, '')} | {verdict} | {_figures(name, result)} |")
    lines += ["", "## Reading the results", "", *NOTES, "",
              "## Raw figures", "", "```json", json.dumps(results, indent=1), "```", ""]
    path.write_text("\n".join(lines))


def _figures(name: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"error: {r['error']}"
    if name == "overload":
        return "; ".join(f"{k}: {v['ok_per_second']} OK/s, codes {v['codes']}"
                         for k, v in r["levels"].items()) + \
            f"; goodput vs 1x {r['goodput_vs_1x']}; health rejected {r['health_rejected']}"
    if name == "training_killed":
        return (f"one run {r['one_run_seconds']} s; killed at {r['killed_at_seconds']} s; "
                f"active moved {r['active_moved_by_a_killed_run']}; leaked versions "
                f"{r['leaked_versions']}; states {r['states']}")
    if name == "fuzz":
        return f"{r['requests']} requests, codes {r['codes']}"
    if name == "memory":
        return (f"{r['requests']} requests; RSS {r['rss_at_20_percent_mib']} -> "
                f"{r['rss_at_end_mib']} MiB (growth {r['growth_mib']} MiB)")
    extra = f", flips {r['flips']}, mismatched {r['mismatched']}" if name == "model_switch" else ""
    if name == "model_switch" and "server_handled" in r:
        extra += " (server over 250 ms: see the first figure)"
    server = (f"server: {r['server_handled']} handled, {r['server_over_deadline']} over the "
              "deadline; client: ") if "server_handled" in r else ""
    return (server + f"{r['calls']} calls, codes {r['codes']}, late {r['late']}, degraded "
            f"{r['degraded']}, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms, "
            f"health {r['health']}{extra}")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    raise SystemExit(main())
