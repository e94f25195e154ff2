"""``make demo``: generated data -> training -> a real server -> ranked offers, then clean up.

Uses ``RECSVC_REDIS_URL`` when it is set and answers; otherwise a throwaway redis-server. The
server also runs the HTTP face; the demo checks that ``/demo`` (the agent console with the
panel) answers and prints its URL last. ``--keep`` (``make demo KEEP=1``) keeps the server and
Redis up until Ctrl-C, so the URL can be opened in a browser.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

from training import localredis

CUSTOMERS, OFFERS, SEGMENTS = 20_000, 200, 4


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    print("$ " + shlex.join(args), flush=True)
    result = subprocess.run(args, env=env, text=True, capture_output=True)
    print(result.stdout, end="", flush=True)
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        raise SystemExit(f"demo: `{' '.join(args)}` failed with exit code {result.returncode}")
    return result


OUTPUT = "demo-output"  # the report is kept here (git ignores it)


def feedback_round(target: str, customer_id: str) -> str | None:
    """Through the real API: an answer, the customer's acceptance of its first offer recorded
    with the answer's decision id, then the next answer (the accepted offer is gone)."""
    import grpc

    from recsvc.v1 import offers_pb2 as pb
    from recsvc.v1 import offers_pb2_grpc as pb_grpc

    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.RetentionOfferServiceStub(channel)  # type: ignore[no-untyped-call]
        first = stub.Recommend(pb.RecommendRequest(customer_id=customer_id, limit=3),
                               timeout=5)
        shown = [o.offer_id for o in first.offers]
        print(f"answer {first.decision_id} (arm {first.arm}): {shown}")
        if not shown:
            print("no offer to accept")
            return None
        reasons = ", ".join(first.offers[0].reasons) or "-"
        print(f"{shown[0]}: p_accept {first.offers[0].p_accept:.3f}, reasons: {reasons}")
        result = stub.RecordFeedback(pb.RecordFeedbackRequest(events=[pb.FeedbackEvent(
            event_id=f"demo-{first.decision_id}", customer_id=customer_id,
            offer_id=shown[0], event="accept", decision_id=first.decision_id)]), timeout=5)
        print(f"RecordFeedback: {pb.FeedbackStatus.Name(result.results[0].status)}")
        again = stub.Recommend(pb.RecommendRequest(customer_id=customer_id, limit=3,
                                                   explain=True), timeout=5)
        print(f"next answer: {[o.offer_id for o in again.offers]}")
        gone = [r for r in again.removed if r.offer_id == shown[0]]
        print(f"{shown[0]} removed by rule: {gone[0].rule if gone else '-'}")
        return again.offers[0].offer_id if again.offers else None


def http_recommend(http_port: int, customer_id: str) -> dict[str, Any]:
    """Recommend over the HTTP/JSON face, as a CRM page does (protobuf's JSON mapping)."""
    body = json.dumps({"customerId": customer_id, "limit": 3}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{http_port}/recsvc.v1.RetentionOfferService/Recommend", data=body,
        headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def display_round(http_port: int, customer_id: str, offer_id: str, env: dict[str, str]) -> None:
    """Display fields changed live (`recsvc offers set`), then read back over HTTP/JSON."""
    run([sys.executable, "-m", "recsvc", "offers", "set", offer_id, "--description",
         "Shown under the title on the agent screen (set live by the demo).",
         "--accept-label", "Apply the offer", "--decline-label", "Not interested"], env)
    deadline = time.monotonic() + 5  # every server follows within a model poll
    while True:
        offers = http_recommend(http_port, customer_id).get("offers", [])
        mine = [o for o in offers if o["offerId"] == offer_id]
        if (mine and mine[0]["description"]) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for offer in offers:
        buttons = f"[{offer['acceptLabel'] or 'Accept'}] [{offer['declineLabel'] or 'Decline'}]"
        print(f"{offer['offerId']}: {offer['title']!r}, description {offer['description']!r}, "
              f"buttons {buttons}")


DEMO_CUSTOMER = "C0000001"


def panel_url(http_port: int, customer_id: str = DEMO_CUSTOMER) -> str:
    return f"http://127.0.0.1:{http_port}/demo?customer={customer_id}"


def check_panel(url: str) -> None:
    """The agent console answers (the HTTP face is up and serves its static files)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        body = response.read().decode("utf-8", "replace")
    if response.status != 200 or "<recsvc-offers" not in body:
        raise SystemExit(f"demo: {url} did not serve the agent console (HTTP {response.status})")
    print(f"GET {url}: 200, the agent console with <recsvc-offers>")


def wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM (then the caller cleans up)."""
    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.demo")
    parser.add_argument("--keep", action="store_true",
                        help="keep the server and Redis up until Ctrl-C (open the panel's URL)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    recsvc = [sys.executable, "-m", "recsvc"]
    redis_server = None
    server = None
    env = dict(os.environ)
    try:
        step("finding Redis")
        url = os.environ.get("RECSVC_REDIS_URL")
        if url and localredis.answers(url):
            print(f"using RECSVC_REDIS_URL={url}")
        else:
            redis_server = localredis.start()
            url = redis_server.url
            print(f"started a throwaway redis-server at {url}")
        env["RECSVC_REDIS_URL"] = url
        port = localredis.free_port()
        env["RECSVC_PORT"] = str(port)
        env["RECSVC_HOST"] = "127.0.0.1"
        http_port = localredis.free_port()
        env["RECSVC_HTTP_PORT"] = str(http_port)
        panel = panel_url(http_port)
        with tempfile.TemporaryDirectory(prefix="recsvc-demo-") as out:
            step(f"generating {CUSTOMERS:,} customers, {OFFERS} offers, {SEGMENTS} segments")
            run([*recsvc, "datagen", "--out", out, "--customers", str(CUSTOMERS), "--offers",
                 str(OFFERS), "--segments", str(SEGMENTS), "--seed", "7"], env)
            step("training one model per segment, evaluating against popularity, publishing")
            run([*recsvc, "train", "--customers", f"{out}/customers.csv", "--offers",
                 f"{out}/offers.csv", "--interactions", f"{out}/interactions.csv",
                 "--report", f"{out}/report.json"], env)
        step(f"starting the server: gRPC on 127.0.0.1:{port}, HTTP/JSON on 127.0.0.1:{http_port}")
        server = subprocess.Popen([*recsvc, "serve"], env=env)
        target = ["--target", f"127.0.0.1:{port}"]
        run([*recsvc, "health", "--wait", "30", *target], env)  # what an orchestrator would do
        step("a known customer: personal ranking")
        run([*recsvc, "recommend", DEMO_CUSTOMER, "--limit", "5", *target], env)
        step("a customer the model does not know, with a segment from the caller")
        run([*recsvc, "recommend", "NEW-CUSTOMER-1", "--segment", "at_risk", "--limit", "5",
             *target], env)
        step("a customer the model does not know, no segment")
        run([*recsvc, "recommend", "NEW-CUSTOMER-2", "--limit", "5", *target], env)
        step("the loop closes: the customer accepts the first offer, the next answer changes")
        next_offer = feedback_round(f"127.0.0.1:{port}", DEMO_CUSTOMER)
        step("the scorecard: every answer was logged; the report joins it with the feedback")
        os.makedirs(OUTPUT, exist_ok=True)
        run([*recsvc, "report", "--out", f"{OUTPUT}/report.html", "--json",
             f"{OUTPUT}/report.json"], env)
        step("the agent console: the next-best-offer panel over HTTP/JSON")
        if next_offer is not None:
            display_round(http_port, DEMO_CUSTOMER, next_offer, env)
        check_panel(panel)
        if args.keep:
            print(f"\nthe agent panel (/demo): {panel}\nserving until Ctrl-C", flush=True)
            wait_for_interrupt()
    finally:
        step("stopping what the demo started")
        if server is not None:
            server.terminate()
            server.wait(timeout=15)
        if redis_server is not None:
            redis_server.stop()
    print(f"\ndemo finished in {time.monotonic() - started:.0f} s")
    if not args.keep:
        print(f"the agent panel (/demo) answered at {panel}\n"
              "  (stopped with the demo; `make demo KEEP=1` keeps it up until Ctrl-C)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
