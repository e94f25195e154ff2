"""`python -m bench campaign [--quick]`: `recsvc campaign` end to end on the bench dataset.

Trains the largest size (unless a caller already published it), then runs the campaign over the
first 100k (and, without --quick, 1M) customers of that dataset plus 1% ids the model does not
know: once with --dry-run (read ids, read Redis, decide, write Parquet) and once for real (the
decision log written too). Reports customers/s, the campaign process's CPU seconds (from
wait4), Redis's CPU seconds (INFO cpu) and the load average; writes bench/results/campaign.json
and the section of docs/PERFORMANCE.md between its markers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from bench.common.report import between

ROOT = Path(__file__).resolve().parents[2]
BEGIN = "<!-- campaign:begin (python -m bench campaign) -->"
END = "<!-- campaign:end -->"
TARGET = 100_000  # customers/s, end to end


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def ids_file(data: Path, customers: int, out: Path) -> Path:
    """The first ``customers`` ids of the dataset and 1% unknown ones, as a CSV."""
    lines = []
    with (data / "customers.csv").open() as handle:
        next(handle)
        for line in handle:
            lines.append(line.split(",", 1)[0].strip('"'))
            if len(lines) >= customers:
                break
    unknown = [f"NEW{i:07d}" for i in range(customers // 100)]
    out.write_text("customer_id\n" + "\n".join(lines + unknown) + "\n")
    return out


# The runs per size: decide only; for real (budgets reserved, contacts and the whole decision
# log written); for real with a sampled decision log (RECSVC_DECISION_LOG_SHARE, the knob that
# trades the scorecard's interval width for logging cost).
MODES = {"dry run": {}, "full": {}, "full, log share 0.1": {"RECSVC_DECISION_LOG_SHARE": "0.1"}}


def one(url: str, prefix: str, ids: Path, out: Path, mode: str) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    dry_run = mode == "dry run"
    env = dict(os.environ, RECSVC_REDIS_URL=url, RECSVC_KEY_PREFIX=prefix,
               RECSVC_LOG_LEVEL="WARNING", **MODES[mode])
    args = [sys.executable, "-m", "recsvc", "campaign", "--customers", str(ids), "--out",
            str(out), "--channel", "email"] + (["--dry-run"] if dry_run else [])
    redis_before = _redis_cpu(client)
    started = time.perf_counter()
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"campaign failed: {stderr.decode()[-2000:]}")
    summary = json.loads(stdout)
    return {"dry_run": dry_run, "mode": mode, "customers": summary["customers"],
            "wall_seconds": round(wall, 2),
            "customers_per_second": round(summary["customers"] / wall),
            "redis_cpu_seconds": round(_redis_cpu(client) - redis_before, 2),
            "phases": summary["seconds"], "decided_one_by_one": summary["decided_one_by_one"],
            "decisions_logged": summary["decisions_logged"], "rows": summary["rows"],
            "unknown": summary["unknown"]}


def measured(url: str, prefix: str, ids: Path, out: Path, mode: str) -> dict[str, Any]:
    """``one`` with the child's CPU seconds (user + system) from the kernel's accounting."""
    before = os.times()
    result = one(url, prefix, ids, out, mode)
    after = os.times()
    result["process_cpu_seconds"] = round(
        (after.children_user - before.children_user)
        + (after.children_system - before.children_system), 2)
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return result


def _now_commit() -> str:
    """The commit the campaign subprocesses run (the code on disk when they start, which a
    long training before them may not have started with)."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return commit + ("+dirty" if dirty else "")


def run(url: str, prefix: str, data: Path, sizes: list[int], command: str,
        machine: dict[str, Any]) -> dict[str, Any]:
    machine = dict(machine, commit=_now_commit(),
                   date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    work = ROOT / "bench" / "data" / "campaign"
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine, "command": command, "runs": []}
    for size in sizes:
        ids = ids_file(data, size, work / f"ids-{size}.csv")
        for mode in MODES:
            print(f"-- campaign over {size:,} customers ({mode})", flush=True)
            results["runs"].append(measured(url, prefix, ids, work / f"out-{size}.parquet",
                                            mode))
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "campaign.json").write_text(json.dumps(results, indent=2))
    write(results, ROOT / "docs" / "PERFORMANCE.md")
    print(table(results))
    return results


def table(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [f"`{results['command']}` at commit `{m['commit']}`, {m['date']}, {m['cores']} "
             f"cores ({m['cpu']}). One process (`recsvc campaign`) plus Redis; customers "
             "include 1% ids unknown to the model. Dry run: read ids, read Redis, decide, "
             "write Parquet; full: also budget units reserved, contacts and the decision log "
             "(one XADD per customer; with log share 0.1, per logged customer).", "",
             "| customers | run | wall s | customers/s | process CPU s | Redis CPU s | "
             "one by one | phases (s, cumulative) | load average | target 100k/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        phases = ", ".join(f"{k} {v}" for k, v in r["phases"].items())
        ok = "met" if r["customers_per_second"] >= TARGET else "**missed**"
        mode = r.get("mode", "dry run" if r["dry_run"] else "full")
        lines.append(f"| {r['customers']:,} | {mode} | "
                     f"{r['wall_seconds']} | {r['customers_per_second']:,} | "
                     f"{r['process_cpu_seconds']} | {r['redis_cpu_seconds']} | "
                     f"{r['decided_one_by_one']:,} | {phases} | "
                     f"{' '.join(map(str, r['load_average']))} | {ok} |")
    return "\n".join(lines)


def write(results: dict[str, Any], path: Path) -> None:
    between(path, BEGIN, END, f"\n{table(results)}\n",
            heading="## Campaigns (`recsvc campaign`)\n\n")
