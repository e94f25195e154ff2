"""``make demo``: generated data -> training -> a real server -> ranked offers, then clean up.

Uses ``RECSVC_REDIS_URL`` when it is set and answers; otherwise a throwaway redis-server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from training import localredis

CUSTOMERS, OFFERS, SEGMENTS = 20_000, 200, 4


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    print("$ " + " ".join(args), flush=True)
    result = subprocess.run(args, env=env, text=True, capture_output=True)
    print(result.stdout, end="", flush=True)
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        raise SystemExit(f"demo: `{' '.join(args)}` failed with exit code {result.returncode}")
    return result


def main() -> int:
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
        with tempfile.TemporaryDirectory(prefix="recsvc-demo-") as out:
            step(f"generating {CUSTOMERS:,} customers, {OFFERS} offers, {SEGMENTS} segments")
            run([*recsvc, "datagen", "--out", out, "--customers", str(CUSTOMERS), "--offers",
                 str(OFFERS), "--segments", str(SEGMENTS), "--seed", "7"], env)
            step("training one model per segment, evaluating against popularity, publishing")
            run([*recsvc, "train", "--customers", f"{out}/customers.csv", "--offers",
                 f"{out}/offers.csv", "--interactions", f"{out}/interactions.csv",
                 "--report", f"{out}/report.json"], env)
        step(f"starting the gRPC server on 127.0.0.1:{port}")
        server = subprocess.Popen([*recsvc, "serve"], env=env)
        target = ["--target", f"127.0.0.1:{port}"]
        run([*recsvc, "health", "--wait", "30", *target], env)  # what an orchestrator would do
        step("a known customer: personal ranking")
        run([*recsvc, "recommend", "C0000001", "--limit", "5", *target], env)
        step("a customer the model does not know, with a segment from the caller")
        run([*recsvc, "recommend", "NEW-CUSTOMER-1", "--segment", "at_risk", "--limit", "5",
             *target], env)
        step("a customer the model does not know, no segment")
        run([*recsvc, "recommend", "NEW-CUSTOMER-2", "--limit", "5", *target], env)
    finally:
        step("stopping what the demo started")
        if server is not None:
            server.terminate()
            server.wait(timeout=15)
        if redis_server is not None:
            redis_server.stop()
    print(f"\ndemo finished in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
