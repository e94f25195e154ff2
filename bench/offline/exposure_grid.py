"""What the truth says of the exposure model's settings, without validation choosing.

    python -m bench.offline.exposure_grid [--customers 1000000] [--params 8,10 4,30 ...]

For each ``factors,ridge[,bias_ridge[,sweeps]]`` the exposure model is fit on every shown cell
of each segment of the biased world ``python -m bench exposure`` uses (generated and cached the
same way), and its top 10 for the customers the truth evaluates (their logged accepts excluded,
as serving does) is scored on the unbiased window: precision@10 and its share of the oracle's.
This is how the default ``[exposure]`` grid was chosen (docs/PERFORMANCE.md, "Learning from
logged exposure"). About a minute per setting at 1M customers, plus the load.
"""

from __future__ import annotations

import argparse
import time

from bench.offline.exposure import world
from training.exposure import ExposureParams
from training.synth.worldeval import Truth, World, exposure_rankings

DEFAULT = ("16,10", "8,10", "8,10,20,15", "8,30", "4,3", "4,10", "4,30", "2,10", "8,10,5")


def parse(text: str) -> ExposureParams:
    parts = text.split(",")
    if not 2 <= len(parts) <= 4:
        raise argparse.ArgumentTypeError(f"{text!r}: factors,ridge[,bias_ridge[,sweeps]]")
    try:
        base = ExposureParams()
        return ExposureParams(int(parts[0]), float(parts[1]),
                              float(parts[2]) if len(parts) > 2 else base.bias_regularization,
                              int(parts[3]) if len(parts) > 3 else base.iterations)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.offline.exposure_grid")
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--params", type=parse, nargs="+",
                        default=[parse(p) for p in DEFAULT])
    args = parser.parse_args()
    data = world(args.customers)
    truth = Truth.load(data)
    loaded = World.load(data, truth.customer_ids)
    oracle = truth.summary["oracle_precision_at_10"]
    print(f"biased world of {args.customers:,} customers; oracle precision@10 {oracle:.4f} on "
          f"{len(truth.customer_ids):,} customers\n")
    print("| factors | ridge | bias ridge | sweeps | precision@10 | share of the oracle | fit s |")
    print("|---|---|---|---|---|---|---|")
    for params in args.params:
        started = time.perf_counter()
        score = truth.score(exposure_rankings(loaded, params))["precision_at_10"]
        print(f"| {params.factors} | {params.regularization:g} | "
              f"{params.bias_regularization:g} | {params.iterations} | {score:.4f} | "
              f"{score / oracle:.1%} | {time.perf_counter() - started:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
