"""bench/results/servers.json -> the tables of docs/PERFORMANCE.md between the servers markers.

Pure: ranges over rounds, Recommend against the faster bare echo of the same round, and the
two-worker scaling on a CPU budget (see ``budget_scaling``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from statistics import median
from typing import Any

from bench.common.report import between

BEGIN, END = "<!-- bench:servers:begin -->", "<!-- bench:servers:end -->"
LABELS = {"echo_sync": "sync echo (grpc.server, 8 threads)",
          "echo_aio": "aio echo (bench/serving/echo.py)",
          "echo_sync_redis": "sync echo + Recommend's Redis read",
          "recommend_aio": "Recommend, aio", "recommend_sync": "Recommend, sync",
          "ceiling_sync": "Recommend, sync, decision replayed"}
ECHOES = ("echo_sync", "echo_aio")
# The sync echo making Recommend's one Redis round trip first: the floor of a server that keeps
# the contract's round trip per call (bench/servers/echo_sync.py --redis-read).
FLOOR = "echo_sync_redis"
# The sync server with its decision, log entry and response computed once and replayed: the
# most a native decision could reach (bench/servers/ceiling.py, `--ceiling`).
CEILING = "ceiling_sync"
BEFORE = "recommend_before_"  # + the commit: `--before REF` (bench/servers/before.py)


NO_LOG = "_without_log"


def label(target: str) -> str:
    if target.endswith(NO_LOG):
        return label(target.removesuffix(NO_LOG)) + ", no decision log"
    if target.startswith(BEFORE):
        return f"Recommend before ({target.removeprefix(BEFORE)})"
    return LABELS.get(target, target)


def ratio_per_round(runs: list[Run], target: str, other: str, in_flight: int) -> list[float]:
    """Per round: ``target``'s req/s over ``other``'s (an earlier commit's, the same server
    without the decision log), same round and shape."""
    mine, theirs = per_round(runs, target, in_flight), per_round(runs, other, in_flight)
    return [float(mine[n]["requests_per_second"]) / float(theirs[n]["requests_per_second"])
            for n in sorted(mine) if n in theirs]
IN_FLIGHT = (1, 32, 256)

Run = dict[str, Any]


def span(values: Iterable[float], fmt: str = "{:,.0f}") -> str:
    """'3,712-3,845' (or one value when they agree once formatted); '-' for none."""
    ordered = sorted(values)
    if not ordered:
        return "-"
    lo, hi = fmt.format(ordered[0]), fmt.format(ordered[-1])
    return lo if lo == hi else f"{lo}-{hi}"


def select(runs: list[Run], target: str, in_flight: int, workers: int = 1) -> list[Run]:
    return [r for r in runs if r["target"] == target and r["in_flight"] == in_flight
            and r["workers"] == workers]


def per_round(runs: list[Run], target: str, in_flight: int, workers: int = 1) -> dict[int, Run]:
    return {r["round"]: r for r in select(runs, target, in_flight, workers)}


def versus_echo(runs: list[Run], target: str, in_flight: int, key: str) -> list[float]:
    """Per round: ``target``'s ``key`` over the faster echo's (by req/s) in the same round."""
    mine = per_round(runs, target, in_flight)
    ratios = []
    for number, run in sorted(mine.items()):
        echoes = [per_round(runs, e, in_flight).get(number) for e in ECHOES]
        present = [e for e in echoes if e is not None]
        if not present or not run.get(key):
            continue
        best = max(present, key=lambda e: float(e["requests_per_second"]))
        if best.get(key):
            ratios.append(float(run[key]) / float(best[key]))
    return ratios


def budget_scaling(one: Run, two: Run) -> float | None:
    """Two workers' throughput on two whole cores over one worker's on one, from requests per
    server CPU second: h2load and Redis shared the two cores with the two workers, so their raw
    ratio understates what two dedicated cores give. 2 x rate per CPU s (2 workers) / rate per
    CPU s (1 worker); it holds for a CPU-bound server (256 in flight)."""
    per_cpu_two = two.get("requests_per_server_cpu_second")
    per_cpu_one = one.get("requests_per_server_cpu_second")
    if not per_cpu_two or not per_cpu_one:
        return None
    return float(2 * per_cpu_two / per_cpu_one)


def _grid(runs: list[Run], present: list[str], title: str, cell: Callable[[list[Run]], str]
          ) -> list[str]:
    lines = [f"| {title} | " + " | ".join(label(t) for t in present) + " |",
             "|---" * (len(present) + 1) + "|"]
    for c in IN_FLIGHT:
        lines.append(f"| {c} | " + " | ".join(cell(select(runs, t, c)) for t in present) + " |")
    return lines


def _ok(passed: bool) -> str:
    return "met" if passed else "**missed**"


def tables(results: dict[str, Any]) -> str:
    m, runs = results["machine"], results["runs"]
    present = [t for t in LABELS if any(r["target"] == t for r in runs)]
    # The earlier commits in the order given (the first is what the others are compared with).
    measured = {r["target"] for r in runs}
    present += [t for t in results["targets"] if t in measured and t not in present
                and (t.startswith(BEFORE) or t.endswith(NO_LOG))]
    lines = [f"Measured {m['date']} at commit `{m['commit']}` on {m['cores']} cores ({m['cpu']}), "
             f"Python {m['python']}, with `{results['command']}`: {results['rounds']} round(s) "
             f"of {results['seconds']:g} s per run, customer `{results['customer_id']}` of "
             f"{results['customers']:,}; load average {results.get('load_average_before')} "
             f"before, {results.get('load_average_after')} after. Ranges are over rounds. Full "
             "numbers: `bench/results/servers.json`.", ""]
    lines += _grid(runs, present, "req/s, in flight",
                   lambda rs: span(r["requests_per_second"] for r in rs))
    lines += ["", *_grid(runs, present, "req per server CPU s, in flight",
                         lambda rs: span(r["requests_per_server_cpu_second"] or 0 for r in rs))]
    lines += ["", *_grid(runs, present, "h2load CPU µs per req, in flight",
                         lambda rs: span((r["client_cpu_us_per_request"] for r in rs), "{:,.1f}"))]
    lines += ["", *_grid(runs, present, "server context switches per req (voluntary + "
                         "involuntary), in flight",
                         lambda rs: span((r.get("server_voluntary_switches_per_request", 0)
                                          + r.get("server_involuntary_switches_per_request", 0)
                                          for r in rs if "server_voluntary_switches_per_request"
                                          in r), "{:,.2f}"))]
    lines += ["", "| at 1 in flight | mean ms | p99 ms | answer bytes (framed) |",
              "|---|---|---|---|"]
    for t in present:
        ones = select(runs, t, 1)
        size = results["targets"].get(t, {}).get("response_frame_bytes", "-")
        lines.append(f"| {label(t)} | {span((r['mean_ms'] for r in ones), '{:.3f}')} | "
                     f"{span((r['p99_ms'] for r in ones if 'p99_ms' in r), '{:.3f}')} | "
                     f"{size} |")
    targets: list[tuple[str, str, str]] = []
    recommends = [t for t in present if t.startswith("recommend")]
    # Yardsticks: compared with the echo and the floor, no target of their own.
    scale = [t for t in present if t in (FLOOR, CEILING, CEILING + NO_LOG)]
    compared = scale + recommends
    if compared:
        lines += ["", "| Recommend / the faster echo of its round | " +
                  " | ".join(f"{label(t)}: req/s | per CPU s" for t in compared) + " |",
                  "|---" * (2 * len(compared) + 1) + "|"]
        for c in IN_FLIGHT:
            cells = [f"{span(versus_echo(runs, t, c, 'requests_per_second'), '{:.0%}')} | "
                     f"{span(versus_echo(runs, t, c, 'requests_per_server_cpu_second'), '{:.0%}')}"
                     for t in compared]
            lines.append(f"| {c} in flight | " + " | ".join(cells) + " |")
    for t in scale:
        ratios = versus_echo(runs, t, 32, "requests_per_second")
        if ratios:
            name = "the floor" if t == FLOOR else "the ceiling of a native decision"
            targets.append((f"{name} ({label(t)}) at 32 in flight, for scale",
                            f"median {median(ratios):.0%} of the fastest echo "
                            f"({span(ratios, '{:.0%}')})", "-"))
    if FLOOR in present:
        over = [t for t in scale if t != FLOOR] + recommends
        lines += _ratios(runs, [(t, FLOOR) for t in over], f"req/s over the floor ({label(FLOOR)})")
    for t in recommends:
        ratios = versus_echo(runs, t, 32, "requests_per_second")
        if ratios:
            targets.append((f"{label(t)} >= 70% of the fastest bare echo at 32 in flight",
                            f"median {median(ratios):.0%} ({span(ratios, '{:.0%}')})",
                            _ok(median(ratios) >= 0.70)))
        p99 = [r["p99_ms"] for r in select(runs, t, 1) if "p99_ms" in r]
        if p99:
            targets.append((f"{label(t)} p99 <= 2 ms at 1 in flight",
                            f"median {median(p99):.3f} ms ({span(p99, '{:.3f}')})",
                            _ok(median(p99) <= 2.0)))
    lines += _workers(runs, recommends, targets)
    lines += _before(runs, recommends, targets)
    lines += _log_cost(runs, recommends, targets)
    unpinned = sorted(t for t, info in results["targets"].items()
                      if info.get("cpus_allowed") not in (None, [results.get("server_cpus", "0")]))
    if unpinned:
        targets.append(("every server thread on CPU 0", "not so for: " + ", ".join(unpinned),
                        "**missed**"))
    # At 32 and 256 in flight a lone server should be CPU-bound: less than 90% of its core
    # means another process ran on CPU 0, or the server waited (on Redis, on the client).
    idle = sorted({f"{r['target']} at {r['in_flight']} ({r['server_cpu_share']:.0%})"
                   for r in runs if r["workers"] == 1 and r["in_flight"] > 1
                   and r.get("server_cpu_share", 1.0) < 0.9})
    if idle:
        lines += ["", "Below 90% of CPU 0 at 32 or 256 in flight (another process on CPU 0, or "
                  "the server waiting on Redis or the client; compare per CPU second): "
                  + ", ".join(idle) + "."]
    short = sorted({f"{r['target']} at {r['in_flight']}" for r in runs if r.get("short_answers")})
    if short:
        targets.append(("every answer complete (no gRPC error statuses)",
                        "short answers: " + ", ".join(short), "**missed**"))
    if results.get("skipped"):
        lines += ["", "Not measured: " + "; ".join(f"{label(k)}: {why}"
                                                  for k, why in results["skipped"].items()) + "."]
    if targets:
        lines += ["", "| target | measured | |", "|---|---|---|"]
        lines += [f"| {t} | {v} | {ok} |" for t, v, ok in targets]
    return "\n".join(lines)


def _before(runs: list[Run], recommends: list[str], targets: list[tuple[str, str, str]]
            ) -> list[str]:
    """Today's Recommend against an earlier commit's (issue 9: within 10% of before); with
    several earlier commits, each later one against the first too (a move against its parent)."""
    befores = [t for t in recommends if t.startswith(BEFORE)]
    nows = [t for t in recommends if not t.startswith(BEFORE) and not t.endswith(NO_LOG)]
    if not befores:
        return []
    return _ratios(runs, [(t, befores[0]) for t in nows + befores[1:]],
                   f"req/s over {label(befores[0])}", f"within 10% of {label(befores[0])}",
                   targets)


def _log_cost(runs: list[Run], recommends: list[str], targets: list[tuple[str, str, str]]
              ) -> list[str]:
    """What the decision log costs (issue 11: at most 10% of Recommend's throughput)."""
    return _ratios(runs, [(t, t + NO_LOG) for t in recommends if t + NO_LOG in recommends],
                   "req/s with the decision log over without",
                   "the decision log costs <= 10%", targets)


def _ratios(runs: list[Run], pairs: list[tuple[str, str]], title: str, goal: str = "",
            targets: list[tuple[str, str, str]] | None = None) -> list[str]:
    """A table of req/s ratios per pair and concurrency; with ``targets``, a row per pair
    there saying whether ``goal`` (>= 0.90x at 32 in flight) is met."""
    if not pairs:
        return []
    lines = ["", f"| {title} | " + " | ".join(label(t) for t, _ in pairs) + " |",
             "|---" * (len(pairs) + 1) + "|"]
    for c in IN_FLIGHT:
        lines.append(f"| {c} in flight | " + " | ".join(
            span(ratio_per_round(runs, t, other, c), "{:.2f}x") for t, other in pairs) + " |")
    if targets is None:  # a table for scale, no target
        return lines
    for t, other in pairs:
        ratios = ratio_per_round(runs, t, other, 32)
        if ratios:
            targets.append((f"{label(t)}: {goal} at 32 in flight",
                            f"median {median(ratios):.2f}x ({span(ratios, '{:.2f}x')})",
                            _ok(median(ratios) >= 0.90)))
    return lines


def _workers(runs: list[Run], recommends: list[str], targets: list[tuple[str, str, str]]
             ) -> list[str]:
    lines: list[str] = []
    for t in recommends:
        if t.startswith(BEFORE) or t.endswith(NO_LOG):
            continue
        ones, twos = per_round(runs, t, 256), per_round(runs, t, 256, workers=2)
        pairs = [(ones[n], twos[n]) for n in sorted(twos) if n in ones]
        if not pairs:
            continue
        if not lines:
            lines += ["", "| 256 in flight (16 x 16) | req/s 1 worker (CPU 0) | req/s 2 workers "
                      "(CPUs 0-1) | raw ratio | server CPU s (1 / 2) | h2load CPU s (1 / 2) | "
                      "Redis CPU s (1 / 2) | ratio on the CPU budget |", "|---" * 8 + "|"]
        raw = [b["requests_per_second"] / a["requests_per_second"] for a, b in pairs]
        scaled = [s for a, b in pairs if (s := budget_scaling(a, b)) is not None]

        def both(key: str, pairs: list[tuple[Run, Run]] = pairs) -> str:
            return (f"{span((a[key] for a, _ in pairs), '{:.2f}')} / "
                    f"{span((b[key] for _, b in pairs), '{:.2f}')}")

        lines.append(f"| {label(t)} | {span(a['requests_per_second'] for a, _ in pairs)} | "
                     f"{span(b['requests_per_second'] for _, b in pairs)} | "
                     f"{span(raw, '{:.2f}x')} | {both('server_cpu_seconds')} | "
                     f"{both('client_cpu_seconds')} | {both('redis_cpu_seconds')} | "
                     f"{span(scaled, '{:.2f}x')} |")
        if scaled:
            targets.append((f"{label(t)}: 2 workers >= 1.7x one (on the CPU budget)",
                            f"median {median(scaled):.2f}x (raw {span(raw, '{:.2f}x')})",
                            _ok(median(scaled) >= 1.7)))
    return lines


def write(results: dict[str, Any], path: Path) -> None:
    between(path, BEGIN, END, tables(results))
