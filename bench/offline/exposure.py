"""`python -m bench exposure [--quick]`: learning from logged exposure, measured end to end.

Generates a biased world (``recsvc datagen --world biased``, cached in bench/data/), trains with
the default configuration, starts ``recsvc serve`` and asks it, through the real gRPC API
(RecommendBatch, 10 offers), for the top 10 of every customer the truth evaluates. Served
precision@10 on the unbiased window's accepts is compared with the oracle's and with the two
competitors ranked offline by training/synth/worldeval.py. Writes bench/results/exposure.json
and the "Learning from logged exposure" section of docs/PERFORMANCE.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from bench.common import procs
from recsvc.v1 import offers_pb2 as pb
from recsvc.v1 import offers_pb2_grpc as pb_grpc
from training import localredis
from training.synth.worldeval import Truth, competitor_rankings

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "bench" / "data"
RESULTS = ROOT / "bench" / "results"
PREFIX = "exposure"
OFFERS, SEGMENTS, SEED = 200, 6, 11
BEGIN = "<!-- exposure:begin (python -m bench exposure) -->"
END = "<!-- exposure:end -->"


def world(customers: int) -> Path:
    out = DATA / f"biased-c{customers}-o{OFFERS}"
    if not (out / "truth.json").exists():
        print(f"-- generating a biased world of {customers:,} customers", flush=True)
        subprocess.run([sys.executable, "-m", "recsvc", "datagen", "--world", "biased", "--out",
                        str(out), "--customers", str(customers), "--offers", str(OFFERS),
                        "--segments", str(SEGMENTS), "--seed", str(SEED), "--format", "parquet"],
                       check=True)
    return out


def train(url: str, data: Path, prefix: str, config: Path | None = None) -> dict[str, Any]:
    report = data / "exposure-report.json"
    env = dict(os.environ, RECSVC_REDIS_URL=url, RECSVC_KEY_PREFIX=prefix)
    extra = ["--config", str(config)] if config else []
    result = subprocess.run(
        [sys.executable, "-m", "recsvc", "train", "--customers", str(data / "customers.parquet"),
         "--offers", str(data / "offers.parquet"), "--interactions",
         str(data / "interactions.parquet"), "--report", str(report), "--force", *extra],
        env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"training failed: {result.stderr[-3000:]}")
    run: dict[str, Any] = json.loads(report.read_text())
    return run


def served_rankings(target: str, customer_ids: list[str], chunk: int = 1000
                    ) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Top 10 of each customer as the service answers (RecommendBatch), and its strategies."""
    rankings: dict[str, list[str]] = {}
    strategies: dict[str, int] = {}
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.RetentionOfferServiceStub(channel)
        for start in range(0, len(customer_ids), chunk):
            ids = customer_ids[start:start + chunk]
            for answer in stub.RecommendBatch(pb.RecommendBatchRequest(customer_ids=ids,
                                                                       limit=10), timeout=120):
                rankings[answer.customer_id] = [o.offer_id for o in answer.offers]
                name = pb.Strategy.Name(answer.strategy)
                strategies[name] = strategies.get(name, 0) + 1
    return rankings, strategies


def measure(url: str, data: Path, prefix: str, config: Path | None = None) -> dict[str, Any]:
    """Train, serve and score one world: the numbers of the exposure table."""
    truth = Truth.load(data)
    started = time.perf_counter()
    run = train(url, data, prefix, config)
    train_seconds = time.perf_counter() - started
    port = localredis.free_port()
    env = dict(os.environ, RECSVC_REDIS_URL=url, RECSVC_KEY_PREFIX=prefix,
               RECSVC_LOG_LEVEL="WARNING", RECSVC_HOST="127.0.0.1", RECSVC_PORT=str(port),
               # Quality, not latency: a slow HMGET on a busy machine must not degrade answers.
               RECSVC_REDIS_TIMEOUT_MS="2000", RECSVC_DEFAULT_DEADLINE_MS="60000")
    with procs.server(["recsvc", "serve"], env, port):
        time.sleep(1.0)
        served, strategies = served_rankings(f"127.0.0.1:{port}", truth.customer_ids)
    rivals = competitor_rankings(data, truth.customer_ids)
    oracle = truth.summary["oracle_precision_at_10"]
    scores = {"served": truth.score(served),
              **{name: truth.score(r) for name, r in rivals.items()}}
    return {
        "customers": truth.summary["customers"], "offers": truth.summary["offers"],
        "segments": truth.summary["segments"], "evaluated": len(truth.customer_ids),
        "oracle_precision_at_10": oracle, "scores": scores,
        "served_over_oracle": round(scores["served"]["precision_at_10"] / oracle, 4)
        if oracle else 0.0,
        "strategies": strategies, "train_seconds": round(train_seconds, 1),
        "phases": run["phases"], "peak_rss_mib": run["peak_rss_mib"],
        "chosen": [{"segment": s["name"], "strategy": s["strategy"],
                    "blend_weight": s["blend_weight"],
                    "model": (s["params"] or {}).get("model", "popularity")}
                   for s in run["segments"]],
    }


def table(result: dict[str, Any], command: str) -> str:
    oracle = result["oracle_precision_at_10"]
    lines = [BEGIN, "",
             f"`{command}` on a biased world of {result['customers']:,} customers, "
             f"{result['offers']} offers, {result['segments']} segments; precision@10 on the "
             f"unbiased window's accepts of {result['evaluated']:,} customers "
             "(served: through the gRPC API, RecommendBatch).", "",
             "| ranking | precision@10 | expected (mean true p of the 10) | share of the oracle |",
             "|---|---|---|---|",
             f"| oracle (true p) | {oracle:.4f} | "
             f"{result.get('oracle_expected', oracle):.4f} | 100% |"]
    for name, label in (("served", "recsvc served"), ("segment_popularity", "segment popularity"),
                        ("implicit_default", "implicit ALS used directly (defaults)")):
        score = result["scores"][name]
        share = score["precision_at_10"] / oracle if oracle else 0.0
        lines.append(f"| {label} | {score['precision_at_10']:.4f} | "
                     f"{score['expected_precision_at_10']:.4f} | {share:.1%} |")
    models = sorted({f"{c['model']} ({c['strategy']}, w {c['blend_weight']})"
                     for c in result["chosen"]})
    lines += ["", f"Chosen per segment: {'; '.join(models)}. Training took "
              f"{result['train_seconds']} s (phases: "
              + ", ".join(f"{k} {v:.1f} s" for k, v in result["phases"].items())
              + f"), peak {result['peak_rss_mib']:,} MiB.", "", END]
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    doc = path.read_text()
    if BEGIN in doc and END in doc:
        doc = doc[:doc.index(BEGIN)] + text + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip("\n") + "\n\n## Learning from logged exposure\n\n" + text + "\n"
    path.write_text(doc)


def run(quick: bool, command: str) -> dict[str, Any]:
    customers = 100_000 if quick else 1_000_000
    data = world(customers)
    server = localredis.start()
    try:
        result = measure(server.url, data, PREFIX)
    finally:
        server.stop()
    result["oracle_expected"] = Truth.load(data).summary["oracle_expected_precision_at_10"]
    result["command"] = command
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "exposure.json").write_text(json.dumps(result, indent=2))
    write_section(ROOT / "docs" / "PERFORMANCE.md", table(result, command))
    print(table(result, command))
    return result
