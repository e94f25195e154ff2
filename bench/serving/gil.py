"""Why the threaded server was slow: CPU per numpy call with one thread vs four doing the same.

    python -m bench.serving.gil

Calls that release the GIL (BLAS, partition, sort) cost several times more once other threads
wait for it; ufuncs on small arrays do not release it and cost the same. This is the experiment
behind the move to grpc.aio (docs/PERFORMANCE.md); it needs no Redis and no server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

import recsvc  # noqa: F401  (one BLAS thread, set before numpy does any work)
from recsvc.core.model import Catalogue, SegmentModel
from recsvc.core.ranking import Rules, rank

OFFERS, FACTORS, CALLS = 236, 16, 20_000


def cpu_per_call(work: Callable[[], object], threads: int) -> float:
    """CPU microseconds per call when ``threads`` threads each make CALLS calls."""

    def run() -> None:
        for _ in range(CALLS):
            work()

    for _ in range(1000):  # warm up (first calls load code and fill caches)
        work()
    workers = [threading.Thread(target=run) for _ in range(threads)]
    started = time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return (time.process_time() - started) / (CALLS * threads) * 1e6


def main() -> int:
    rng = np.random.default_rng(0)
    factors = rng.random((OFFERS, FACTORS), dtype=np.float32)
    vector = rng.random(FACTORS, dtype=np.float32)
    scores = rng.random(OFFERS, dtype=np.float32)
    mask = scores > 0.2
    segment = SegmentModel.build("s", "blended", 0.5, np.arange(OFFERS, dtype=np.uint32),
                                 rng.random(OFFERS, dtype=np.float32), factors, OFFERS)
    catalogue = Catalogue.from_json([{"offer_id": f"o{i}"} for i in range(OFFERS)])
    rules = Rules(limit=10, now=0.0)
    accepted = np.array([3, 7], dtype=np.uint32)
    operations: dict[str, Callable[[], object]] = {
        "F @ v (BLAS)": lambda: factors @ vector,
        "np.argpartition": lambda: np.argpartition(scores, 9),
        "np.lexsort of 10": lambda: np.lexsort((np.arange(10), scores[:10])),
        "np.argsort, stable": lambda: np.argsort(-scores, kind="stable"),
        "np.where": lambda: np.where(mask, scores, -np.inf),
        "np.count_nonzero": lambda: np.count_nonzero(mask),
        "rank() of one customer": lambda: rank(segment, catalogue, rules, vector, accepted),
    }
    print(f"CPU µs per call, {OFFERS} offers x {FACTORS} factors")
    print(f"{'operation':26s} {'1 thread':>9s} {'4 threads':>10s}")
    for name, work in operations.items():
        print(f"{name:26s} {cpu_per_call(work, 1):9.2f} {cpu_per_call(work, 4):10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
