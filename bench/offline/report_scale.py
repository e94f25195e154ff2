"""`recsvc report` over a large decision log: the issue's bar is 10 million decisions in under
a minute. Generates (once, cached in bench/data/report-N/) a synthetic export with a known
retention lift (training/synth/decisionlog.py), then times the real command end to end in a
subprocess (read Parquet, join, statistics, HTML with plots, JSON):

    .venv/bin/python -m bench.offline.report_scale --decisions 10000000

Prints one JSON object: seconds, the child's peak RSS, the lift found against the planted one,
and the machine's load average before and after (a loaded machine makes the number invalid).
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

from training.synth import decisionlog

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "bench" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.offline.report_scale")
    parser.add_argument("--decisions", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    out = DATA / f"report-{args.decisions}-s{args.seed}"
    generated = None
    if not (out / "events.parquet").exists():
        written = decisionlog.generate(out, args.decisions, args.seed)
        generated = round(written.seconds, 1)
    card = out / "report.json"
    load_before = os.getloadavg()
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "recsvc", "report", "--decisions", str(out / "decisions"),
         "--events", str(out / "events.parquet"), "--out", str(out / "report.html"),
         "--json", str(card)], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"recsvc report failed: {result.stderr[-2000:]}")
    found = json.loads(card.read_text())["uplift"]["treatment"]["retention_rate"]
    print(json.dumps({
        "decisions": args.decisions, "report_seconds": round(seconds, 1),
        "under_a_minute": seconds < 60, "generate_seconds": generated,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "lift_planted": decisionlog.LIFT, "lift_found": found,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()], "cores": os.cpu_count(),
    }, indent=1))


if __name__ == "__main__":
    main()
