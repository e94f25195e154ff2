"""`python -m bench.servers.unpinned [--customers N] [--rounds R] [--seconds S] [--before REF]`:
Recommend on each server model with nothing pinned, one process free to run on every CPU and
h2load on every CPU too: what a single `recsvc serve` on a multi-core host does. The pinned
comparison (`python -m bench.servers`) measures a process confined to one CPU, as each
`--workers` process is; this one shows the other case that `RECSVC_SERVER_MODEL=auto` decides by
(and, with ``--before``, the code of an earlier commit served the same way: issue 9's "within 10%
of before" for the model `auto` picks here). Writes bench/results/unpinned.json and its table in
docs/PERFORMANCE.md between its markers; `make bench` runs it on its own published model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import procs
from bench.common.report import between
from bench.servers import h2load
from bench.servers.plan import MAX_CONCURRENT_RPCS, ROOT, Target, base_env, customer_of
from recsvc.v1 import offers_pb2 as pb
from training import localredis

EVERY_CPU = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
PATH = "/recsvc.v1.RetentionOfferService/Recommend"
RESULTS = ROOT / "bench" / "results" / "unpinned.json"
BEGIN, END = "<!-- bench:unpinned:begin -->", "<!-- bench:unpinned:end -->"
SHAPES = ((2, 16), (16, 16))  # connections x streams: 32 and 256 in flight


def main() -> int:
    from bench.__main__ import bench_train, dataset, machine
    from bench.servers import before

    parser = argparse.ArgumentParser(prog="python -m bench.servers.unpinned")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--before", metavar="REF", action="append", default=[],
                        help="also Recommend of this earlier commit (its own train and serve)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-docs", action="store_true", help="leave docs/PERFORMANCE.md alone")
    args = parser.parse_args()
    if h2load.find() is None:
        raise SystemExit("h2load missing: make h2load-bin")
    server = localredis.start()
    try:
        with contextlib.ExitStack() as stack:
            bench_train(server.url, args.customers)
            data = dataset(args.customers)
            extra = []
            for ref in args.before:
                tree, commit = stack.enter_context(before.checkout(ref))
                extra.append(before.target(tree, commit, server.url, data, base_env(server.url)))
            out = measure(server.url, data, args.rounds, args.seconds, extra)
    finally:
        server.stop()
    out.update(machine=machine(), customers=args.customers,
               command="python -m bench.servers.unpinned " + " ".join(sys.argv[1:]))
    publish(out, args.out, not args.no_docs)
    return 0


def measure(url: str, data: Path, rounds: int, seconds: float,
            extra: list[Target] | None = None) -> dict[str, Any]:
    """Each model (and each ``extra`` earlier commit) at 32 and 256 in flight, ``rounds``
    alternating rounds; per target and concurrency, req/s and server CPU µs per request."""
    binary = h2load.find()
    if binary is None:
        raise RuntimeError("h2load missing: make h2load-bin")
    env = dict(base_env(url), RECSVC_MAX_CONCURRENT_RPCS=MAX_CONCURRENT_RPCS)
    targets = [Target(model, ["recsvc", "serve"], dict(env, RECSVC_SERVER_MODEL=model))
               for model in ("aio", "sync")]
    targets += [Target(t.key, t.command,
                       dict(t.env, RECSVC_MAX_CONCURRENT_RPCS=MAX_CONCURRENT_RPCS))
                for t in extra or []]
    out: dict[str, Any] = {"cpus": EVERY_CPU, "load_average_before": os.getloadavg()[0],
                           "seconds": seconds, "rounds": rounds, "runs": {}}
    message = pb.RecommendRequest(customer_id=customer_of(data), limit=10).SerializeToString()
    with tempfile.TemporaryDirectory() as tmp:
        frame = Path(tmp, "request.bin")
        frame.write_bytes(h2load.grpc_frame(message))
        for number in range(rounds):
            for target in targets[number % len(targets):] + targets[:number % len(targets)]:
                print(f"-- unpinned round {number + 1}: {target.key}", flush=True)
                _measure(out["runs"], target, binary, frame, seconds)
    out["load_average_after"] = os.getloadavg()[0]
    return out


def _measure(runs: dict[str, list[dict[str, int]]], target: Target, binary: str, frame: Path,
             seconds: float) -> None:
    port = localredis.free_port()
    command, env = target.args(port)
    env = dict(env, RECSVC_LOG_LEVEL="WARNING", RECSVC_HOST="127.0.0.1")
    with procs.server(command, env, port) as srv:
        url = f"http://127.0.0.1:{port}{PATH}"
        h2load.run(binary, url, frame, 2, 16, 1, EVERY_CPU)  # warm up
        for connections, streams in SHAPES:
            before = procs.cpu_seconds(srv.pid)
            run = h2load.run(binary, url, frame, connections, streams, seconds, EVERY_CPU)
            cpu = procs.cpu_seconds(srv.pid) - before
            runs.setdefault(f"{target.key}, {connections * streams} in flight", []).append(
                {"requests_per_second": round(run["requests_per_second"]),
                 "server_cpu_us_per_request": round(1e6 * cpu / max(1, run["done"]))})


def table(out: dict[str, Any]) -> str:
    """The Markdown of a run: req/s and CPU per request per target, and each model against the
    first earlier commit at each concurrency."""
    runs: dict[str, list[dict[str, int]]] = out["runs"]
    keys = list(dict.fromkeys(k.rsplit(", ", 1)[0] for k in runs))
    flights = [f"{c * s} in flight" for c, s in SHAPES]
    lines = [f"Measured with `{out.get('command', 'make bench')}` on {out.get('customers', '?'):,}"
             f" customers, every process free on CPUs {out['cpus']}; load average "
             f"{out['load_average_before']:.2f} before, {out['load_average_after']:.2f} after; "
             f"{out['rounds']} rounds of {out['seconds']:g} s. Ranges are over rounds.", "",
             "| Recommend, unpinned | " + " | ".join(flights) + " | server CPU per request |",
             "|---" * (len(flights) + 2) + "|"]
    for key in keys:
        cells = [_span(runs.get(f"{key}, {f}", []), "requests_per_second", "{:,} req/s")
                 for f in flights]
        cpu = [r for f in flights for r in runs.get(f"{key}, {f}", [])]
        lines.append(f"| {_label(key)} | " + " | ".join(cells) + " | "
                     + _span(cpu, "server_cpu_us_per_request", "{:,} µs") + " |")
    befores = [k for k in keys if k not in ("aio", "sync")]
    if befores:
        lines += ["", f"| req/s over {_label(befores[0])}, same round | "
                  + " | ".join(flights) + " |", "|---" * (len(flights) + 1) + "|"]
        for key in [k for k in keys if k != befores[0]]:
            cells = []
            for f in flights:
                ratios = [now["requests_per_second"] / max(1, then["requests_per_second"])
                          for now, then in zip(runs.get(f"{key}, {f}", []),
                                               runs.get(f"{befores[0]}, {f}", []), strict=False)]
                cells.append(f"{min(ratios):.2f}x-{max(ratios):.2f}x" if ratios else "-")
            lines.append(f"| {_label(key)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _label(key: str) -> str:
    return key.replace("recommend_before_", "before ") if key.startswith("recommend_") else key


def _span(rows: list[dict[str, int]], field: str, fmt: str) -> str:
    values = [r[field] for r in rows]
    if not values:
        return "-"
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return low if low == high else f"{low.split(' ')[0]}-{high}"


def publish(out: dict[str, Any], path: Path, docs: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    body = table(out)
    print(body)
    if docs:
        between(ROOT / "docs" / "PERFORMANCE.md", BEGIN, END, body)


if __name__ == "__main__":
    raise SystemExit(main())
