"""Turns bench results into the tables of docs/PERFORMANCE.md (between the bench markers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def _ok(passed: bool) -> str:
    return "met" if passed else "**missed**"


def tables(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [f"Measured {m['date']} at commit `{m['commit']}` on {m['cores']} cores "
             f"({m['cpu']}), Python {m['python']}, with `{results['command']}`; load generator "
             "on the same machine. Full numbers: `bench/results/latest.json`.", ""]
    targets: list[tuple[str, str, str]] = []
    if "train" in results:
        lines += ["### Training", "",
                  "| customers | interactions | read | build | fit | evaluate | publish | "
                  "non-fit total | publish rate (vectors/s) | peak RSS (MiB) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for t in results["train"]:
            p = t["phases"]
            lines.append(
                f"| {t['customers']:,} | {t['interactions']:,} | {p.get('read', 0):.1f} s | "
                f"{p.get('build', 0):.1f} s | {p.get('fit', 0):.1f} s | "
                f"{p.get('evaluate', 0):.1f} s | {p.get('publish', 0):.1f} s | "
                f"{t['non_fit_seconds']:.1f} s | {t['publish_vectors_per_second']:,} | "
                f"{t['peak_rss_mib']:,} |")
        big = results["train"][-1]
        targets += [
            (f"publish >= 200,000 vectors/s ({big['customers']:,} customers)",
             f"{big['publish_vectors_per_second']:,}",
             _ok(big["publish_vectors_per_second"] >= 200_000)),
            ("read + build + evaluate + publish < fit",
             f"{big['non_fit_seconds']:.1f} s vs {big['fit_seconds']:.1f} s",
             _ok(big["non_fit_seconds"] < big["fit_seconds"])),
            ("training peak memory < 4 GiB", f"{big['peak_rss_mib']:,} MiB",
             _ok(big["peak_rss_mib"] < 4096)),
        ]
        lines.append("")
    if "serve" in results:
        s = results["serve"]
        lines += [f"### Serving ({s['customers']:,} customers published, "
                  f"{s['seconds']:.0f} s per measurement)", "",
                  "| what | workers | in flight | calls/s | items/s | p50 ms | p95 ms | p99 ms | "
                  "server CPU s | client CPU s | Redis cmds/call |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for key, label in (("echo_w1", "echo"), ("recommend_w1", "Recommend"),
                           ("echo_batch_w1", "echo stream x1000"),
                           ("batch_w1", "RecommendBatch x1000"), ("echo_w2", "echo"),
                           ("recommend_w2", "Recommend"), ("echo_batch_w2", "echo stream x1000"),
                           ("batch_w2", "RecommendBatch x1000")):
            for r in s.get(key, []):
                lines.append(
                    f"| {label} | {key[-1]} | {r['concurrency']} | {r['calls_per_second']:,} | "
                    f"{r['items_per_second']:,} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | "
                    f"{r['server_cpu_seconds']} | {r['client_cpu_seconds']} | "
                    f"{r.get('redis_commands_per_call', '-')} |")
        lines += ["", f"Serving RSS: {s.get('rss_mib_w1')} MiB (1 worker), "
                  f"{s.get('rss_mib_w2')} MiB (2 workers, all processes); Redis used memory "
                  f"{s.get('redis_used_memory_mib')} MiB.", ""]

        def at(key: str, c: int) -> dict[str, Any]:
            return next(r for r in s[key] if r["concurrency"] == c)

        for w in (1, 2):
            ratios = s.get(f"ratios_w{w}") or []
            if not ratios:
                continue
            median = sorted(ratios)[len(ratios) // 2]
            each = ", ".join(f"{r:.1%}" for r in ratios)
            targets.append((f"Recommend >= 70% of the aio echo at 32 in flight, {w} worker(s) "
                            "(Python load generator; against the fastest bare echo under h2load:"
                            " section \"Server models under h2load\")",
                            f"{median:.1%} (median of {len(ratios)} alternating pairs: {each})",
                            _ok(median >= 0.70)))
        for w in (1, 2):
            if f"echo_batch_w{w}" in s:
                batch, stream = at(f"batch_w{w}", 2), at(f"echo_batch_w{w}", 2)
                ratio = batch["items_per_second"] / max(1.0, stream["items_per_second"])
                targets.append((f"(context) RecommendBatch vs the echo stream at 2 in flight, "
                                f"{w} worker(s)", f"{ratio:.0%} ({batch['items_per_second']:,} "
                                f"vs {stream['items_per_second']:,} customers/s)", "-"))
        one = at("recommend_w1", 1)
        best_batch = max(r["items_per_second"] for k in ("batch_w1", "batch_w2")
                         for r in s.get(k, []))
        targets += [
            ("Recommend p99 <= 2 ms at 1 in flight", f"{one['p99_ms']} ms",
             _ok(one["p99_ms"] <= 2.0)),
            # One pipeline: HGET of the record + HGETALL of the live hash (docs/DESIGN.md s. 6).
            ("one Redis round trip per Recommend (HGET + HGETALL, one pipeline)",
             f"{one['redis_hget_per_call']} HGET/call, "
             f"{one.get('redis_hgetall_per_call', 0)} HGETALL/call awaited; "
             f"{one['redis_commands_per_call']} commands/call in all (the decision log's XADD "
             "after the answer, not awaited, and the watcher's polls)",
             _ok(_one_round_trip(one))),
            ("RecommendBatch >= 20,000 customers/s", f"{best_batch:,.0f}",
             _ok(best_batch >= 20_000)),
        ]
        if any(r["errors"] for k in ("recommend_w1", "recommend_w2", "batch_w1", "batch_w2")
               for r in s.get(k, [])):
            targets.append(("no errors under load", "errors seen", "**missed**"))
    lines += ["### Targets", "", "| target | measured | |", "|---|---|---|"]
    lines += [f"| {t} | {v} | {ok} |" for t, v, ok in targets]
    return "\n".join(lines)


def write(results: dict[str, Any], path: Path) -> None:
    if not path.exists():
        path.write_text("# Performance\n")
    between(path, BEGIN, END, tables(results))


def between(path: Path, begin: str, end: str, body: str, heading: str = "") -> None:
    """Put ``body`` between a bench's two markers in ``path`` (a doc the benches regenerate part
    by part), adding the markers at the end, under ``heading`` when given, the first time."""
    text = path.read_text()
    if begin not in text:
        text += f"\n{heading}{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    path.write_text(f"{head}{begin}\n{body}\n{end}{rest.split(end, 1)[1]}")


def _one_round_trip(run: dict[str, Any]) -> bool:
    """One HGET and one HGETALL per call, and nothing else awaited: other commands are the
    decision log's XADD (when counted) and the watcher's polls (a few per second)."""
    reads = run["redis_hget_per_call"] + run.get("redis_hgetall_per_call", 0)
    others = run["redis_commands_per_call"] - reads - run.get("redis_xadd_per_call", 0)
    return (abs(run["redis_hget_per_call"] - 1) < 0.05
            and abs(run.get("redis_hgetall_per_call", 0) - 1) < 0.05
            and ("redis_xadd_per_call" not in run or others < 0.05))
