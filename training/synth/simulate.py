"""``recsvc simulate``: the whole loop on a world whose truth is known, through the real API.

1. ``datagen --world biased`` writes a world (known acceptance probability of every customer and
   offer if shown) and its logged history; ``recsvc train`` learns from that history.
2. A real ``recsvc serve`` (with a control group) and a real fold-in consumer start.
3. Each simulated day, a sample of customers is asked for offers (``RecommendBatch``); every
   offer shown is an impression, and the customer accepts it with the world's own probability;
   the events go back through ``RecordFeedback`` with the answer's ``decision_id``.
4. At the end each customer who was asked renews or churns: the simulation's retention model is
   ``p(renew) = RENEW_BASE + RENEW_LIFT * (accepted an offer)`` (an assumption of the
   simulation, printed with the results), and an NPS answer follows the same rule.
5. ``recsvc report`` writes the scorecard; the summary adds how much of the world's best
   possible policy (showing each customer their offers of highest true probability) the served
   offers reach, in expected acceptances.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from recsvc.v1 import offers_pb2 as pb
from recsvc.v1 import offers_pb2_grpc as pb_grpc
from training import localredis
from training.synth import world
from training.synth.datagen import write

RENEW_BASE, RENEW_LIFT = 0.70, 0.15
LIMIT = 3
FEEDBACK_BATCH = 1000


def add_simulate(sub: Any) -> None:
    sim: argparse.ArgumentParser = sub.add_parser(
        "simulate", help="the whole loop for N days on a world with known truth (real API)")
    sim.add_argument("--customers", type=int, default=20_000)
    sim.add_argument("--offers", type=int, default=100)
    sim.add_argument("--segments", type=int, default=4)
    sim.add_argument("--days", type=int, default=5)
    sim.add_argument("--per-day", type=int, default=2_000, help="customers asked each day")
    sim.add_argument("--holdout", type=float, default=0.2, help="control group share")
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--out", required=True, help="a new folder for the world and the report")
    sim.set_defaults(run=run)


def _check(args: argparse.Namespace) -> None:
    from recsvc.core.errors import SettingError

    if args.customers < 100 or args.offers < 2 * LIMIT or args.segments < 1:
        raise SettingError("simulate: --customers >= 100, --offers >= 6, --segments >= 1")
    if args.days < 1 or not 1 <= args.per_day <= args.customers:
        raise SettingError("simulate: --days >= 1 and 1 <= --per-day <= --customers")
    if not 0 <= args.holdout < 1:
        raise SettingError("simulate: --holdout must lie in [0, 1)")
    if Path(args.out).exists():
        raise SettingError(f"simulate: --out {args.out} exists; give a new folder")


def run(args: argparse.Namespace, settings: Any) -> int:
    _check(args)
    out = Path(args.out)
    out.mkdir(parents=True)
    recsvc = [sys.executable, "-m", "recsvc"]
    tables, _, _ = world.generate(args.customers, args.offers, args.segments,
                                  args.seed)
    write(tables, str(out), "csv")
    the_world = world.make_world(args.customers, args.offers, args.segments,
                                 np.random.default_rng(args.seed))  # generate's first draw
    redis_server = localredis.start()
    env = dict(os.environ, RECSVC_REDIS_URL=redis_server.url, RECSVC_KEY_PREFIX="sim",
               RECSVC_HOST="127.0.0.1", RECSVC_PORT=str(localredis.free_port()),
               RECSVC_HOLDOUT_SHARE=str(args.holdout), RECSVC_LOG_LEVEL="WARNING")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        print(f"== training on the world's logged history ({args.customers:,} customers)")
        subprocess.run([*recsvc, "train", "--customers", str(out / "customers.csv"),
                        "--offers", str(out / "offers.csv"), "--interactions",
                        str(out / "interactions.csv"), "--report", str(out / "train.json")],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        procs.append(subprocess.Popen([*recsvc, "serve"], env=env))
        procs.append(subprocess.Popen([*recsvc, "feedback", "consume"], env=env))
        target = f"127.0.0.1:{env['RECSVC_PORT']}"
        subprocess.run([*recsvc, "health", "--wait", "60", "--target", target], env=env,
                       check=True, stdout=subprocess.DEVNULL)
        result = _days(args, target, the_world)
        subprocess.run([*recsvc, "report", "--out", str(out / "report.html"), "--json",
                        str(out / "report.json")], env=env, check=True)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=15)
        redis_server.stop()
    card = json.loads((out / "report.json").read_text())
    result["scorecard"] = {arm: {k: card["arms"][arm][k]["value"] for k in
                                 ("acceptance_rate", "retention_rate", "nps")}
                           for arm in card["arms"]}
    result["retention_uplift"] = card["uplift"].get("treatment", {}).get("retention_rate")
    result["assumptions"] = {"renew": f"{RENEW_BASE} + {RENEW_LIFT} x accepted an offer",
                             "offers_per_answer": LIMIT}
    (out / "simulation.json").write_text(json.dumps(result, indent=2))
    _print(result)
    return 0


def _days(args: argparse.Namespace, target: str, the_world: world.World) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed + 1)
    offer_index = {f"OFF{o:05d}": o for o in range(args.offers)}
    asked: dict[int, tuple[str, bool]] = {}  # customer -> (arm, accepted anything)
    expected, best, events = 0.0, 0.0, 0
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.RetentionOfferServiceStub(channel)  # type: ignore[no-untyped-call]
        for day in range(args.days):
            started = time.time()
            customers = rng.choice(args.customers, size=args.per_day, replace=False)
            ids = [f"C{c:07d}" for c in customers.tolist()]
            feedback: list[pb.FeedbackEvent] = []
            for c, answer in zip(customers.tolist(), stub.RecommendBatch(
                    pb.RecommendBatchRequest(customer_ids=ids, limit=LIMIT), timeout=120),
                    strict=True):
                shown = [offer_index[o.offer_id] for o in answer.offers]
                accepted_any = asked.get(c, ("", False))[1]
                if shown:
                    p = the_world.p_true(np.array([c]), np.array(shown))[0]
                    open_p = the_world.p_true(np.array([c]), np.flatnonzero(
                        the_world.eligible[the_world.segment[c]]))[0]
                    expected += float(p.sum())
                    best += float(np.sort(open_p)[::-1][:len(shown)].sum())
                    for o, offer in zip(shown, answer.offers, strict=True):
                        feedback.append(_event(answer, offer.offer_id, "impression", day, o))
                        if rng.random() < p[shown.index(o)]:
                            feedback.append(_event(answer, offer.offer_id, "accept", day, o))
                            accepted_any = True
                asked[c] = (answer.arm, accepted_any)
            for at in range(0, len(feedback), FEEDBACK_BATCH):
                stub.RecordFeedback(pb.RecordFeedbackRequest(
                    events=feedback[at:at + FEEDBACK_BATCH]), timeout=30)
            events += len(feedback)
            print(f"day {day + 1}: {len(ids):,} customers asked, {len(feedback):,} events "
                  f"recorded ({time.time() - started:.1f} s)")
        outcomes: list[pb.FeedbackEvent] = []
        for c, (_arm, accepted_any) in asked.items():
            renew = rng.random() < RENEW_BASE + RENEW_LIFT * accepted_any
            outcomes.append(pb.FeedbackEvent(event_id=f"out-{c}", customer_id=f"C{c:07d}",
                                             event="renew" if renew else "churn"))
            outcomes.append(pb.FeedbackEvent(event_id=f"nps-{c}", customer_id=f"C{c:07d}",
                                             event="nps", value=float(rng.integers(7, 11)
                                                                      if renew else
                                                                      rng.integers(0, 9))))
        for at in range(0, len(outcomes), FEEDBACK_BATCH):
            stub.RecordFeedback(pb.RecordFeedbackRequest(events=outcomes[at:at + FEEDBACK_BATCH]),
                                timeout=30)
    treated = [accepted for arm, accepted in asked.values() if arm == "treatment"]
    control = [accepted for arm, accepted in asked.values() if arm == "control"]
    planted = RENEW_LIFT * (float(np.mean(treated)) if treated else 0.0) \
        - RENEW_LIFT * (float(np.mean(control)) if control else 0.0)
    return {"days": args.days, "customers_asked": len(asked), "events": events,
            # What the retention model makes the true uplift, given who accepted: the report's
            # interval should cover it.
            "planted_retention_uplift": round(planted, 4),
            "expected_acceptances": round(expected, 1),
            "oracle_expected_acceptances": round(best, 1),
            "share_of_oracle": round(expected / best, 4) if best else None}


def _event(answer: pb.RecommendResponse, offer_id: str, name: str, day: int,
           offer: int) -> pb.FeedbackEvent:
    return pb.FeedbackEvent(event_id=f"{answer.decision_id}-{name}-{offer}",
                            customer_id=answer.customer_id, offer_id=offer_id, event=name,
                            decision_id=answer.decision_id)


def _print(result: dict[str, Any]) -> None:
    print(f"\n{result['customers_asked']:,} customers asked over {result['days']} days, "
          f"{result['events']:,} events")
    for arm, numbers in result["scorecard"].items():
        shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} -"
                          for k, v in numbers.items())
        print(f"  {arm}: {shown}")
    uplift = result["retention_uplift"]
    if uplift and uplift.get("value") is not None:
        print(f"  retention uplift over control: {100 * uplift['value']:+.1f} points "
              f"[{100 * uplift['low']:.1f}, {100 * uplift['high']:.1f}]")
    print(f"  expected acceptances of the served offers: {result['expected_acceptances']:,} of "
          f"the world's best possible {result['oracle_expected_acceptances']:,} "
          f"({100 * (result['share_of_oracle'] or 0):.1f}%)")
    print(f"  assumptions: renew = {result['assumptions']['renew']} (planted retention uplift "
          f"{100 * result['planted_retention_uplift']:+.1f} points)")

