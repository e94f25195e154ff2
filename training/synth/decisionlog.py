"""A synthetic decision log with a KNOWN lift, written straight to Parquet (the export's layout),
and its feedback events: the input of ``python -m bench.offline.report_scale`` and of the test
that the report recovers the lift. Vectorised numpy + pyarrow: 10 million decisions in seconds.

The world (the constants are the truth a report must recover):
- ``customers = decisions // DECISIONS_PER_CUSTOMER``, each in one of ``SEGMENTS`` segments and
  held out as control with probability ``CONTROL_SHARE`` (baseline ``none``: control answers
  show no offer); decisions fall uniformly over ``DAYS`` days;
- a treatment answer shows ``SHOWN`` distinct offers of ``OFFERS``, each accepted with
  probability ``P_ACCEPT`` (an ``accept`` event one hour later, with the decision's id), a
  quarter of the accepts redeemed too; offer ``o`` is worth ``20 + o % 30`` and costs 5;
- every customer's outcome, a day after their last decision: ``renew`` with probability
  ``P_RENEW_CONTROL`` in control and ``P_RENEW_CONTROL + LIFT`` in treatment, else ``churn``.
So the retention uplift of treatment over control is ``LIFT`` (absolute) and
``LIFT / P_RENEW_CONTROL`` (relative).

    python -m training.synth.decisionlog --out DIR --decisions 10000000
writes ``DIR/decisions/`` (as ``recsvc decisions export`` would) and ``DIR/events.parquet``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsvc.experiments import export_dir
from recsvc.experiments.parquet_log import SCHEMA

T0 = 1_790_000_000.0
DAY = 86_400.0
DAYS = 30
DECISIONS_PER_CUSTOMER = 5
SEGMENTS = 4
OFFERS = 200
SHOWN = 3
CONTROL_SHARE = 0.1
P_ACCEPT = 0.05
P_RENEW_CONTROL = 0.70
LIFT = 0.05


@dataclass(frozen=True)
class Written:
    decisions: Path  # the export directory
    events: Path
    rows: int
    event_rows: int
    seconds: float


def _text(prefix: str, numbers: npt.NDArray[np.int64]) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers), pa.string()), "")


def _floats(offsets: pa.Array, values: npt.NDArray[np.float32]) -> pa.ListArray:
    return pa.ListArray.from_arrays(offsets, pa.array(values, pa.float32()))


def generate(out: Path, decisions: int, seed: int = 11) -> Written:
    """Writes the world's decisions (the export layout) and events; returns where and how many."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    customers = max(decisions // DECISIONS_PER_CUSTOMER, 2)
    control = rng.random(customers) < CONTROL_SHARE
    segment_of = rng.integers(SEGMENTS, size=customers)
    ts = np.sort(T0 + rng.random(decisions) * DAYS * DAY)
    who = rng.integers(customers, size=decisions)
    shows = np.where(control[who], 0, SHOWN).astype(np.int64)
    offsets = np.zeros(decisions + 1, dtype=np.int32)
    np.cumsum(shows, out=offsets[1:])
    row = np.repeat(np.arange(decisions, dtype=np.int64), shows)
    first = rng.integers(OFFERS, size=decisions)
    offer = (first[row] + (np.arange(len(row)) - offsets[:-1][row])) % OFFERS  # distinct
    offer_names = _text("o", np.arange(OFFERS, dtype=np.int64))
    n_shown = len(row)
    values = (20 + offer % 30).astype(np.float32)
    arrow_offsets = pa.array(offsets)
    ids = _text("d", np.arange(decisions, dtype=np.int64))
    customer_ids = _text("c", np.arange(customers, dtype=np.int64))
    empty_text = pa.array([""] * 1, pa.string())
    table = pa.table({
        "shard": pa.array(np.zeros(decisions, np.int16)),
        "stream_id": ids, "decision_id": ids, "ts": pa.array(ts),
        "customer_id": customer_ids.take(pa.array(who)),
        "segment": _text("s", np.arange(SEGMENTS, dtype=np.int64)).take(
            pa.array(segment_of[who])),
        "version": pa.repeat(pa.scalar("v1"), decisions),
        "arm": pa.array(np.where(control[who], "control", "treatment")),
        "strategy": pa.repeat(pa.scalar("personalized"), decisions),
        "channel": pa.repeat(pa.scalar("email"), decisions),
        "offers": pa.ListArray.from_arrays(arrow_offsets, offer_names.take(pa.array(offer))),
        "scores": _floats(arrow_offsets, np.full(n_shown, 0.05, np.float32)),
        "propensities": _floats(arrow_offsets, np.ones(n_shown, np.float32)),
        "p_accept": _floats(arrow_offsets, np.full(n_shown, P_ACCEPT, np.float32)),
        "values": _floats(arrow_offsets, values),
        "costs": _floats(arrow_offsets, np.full(n_shown, 5.0, np.float32)),
        "candidate_version": pa.repeat(empty_text[0], decisions),
        "candidate": pa.ListArray.from_arrays(pa.array(np.zeros(decisions + 1, np.int32)),
                                              pa.array([], pa.string())),
        "explored": pa.array(np.zeros(decisions, dtype=bool)),
    }, schema=SCHEMA)
    directory = out / "decisions"
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("day=*/run-*.parquet"):
        old.unlink()
    bounds = np.searchsorted(ts, T0 + np.arange(DAYS + 1) * DAY)
    for day in range(DAYS):
        a, b = int(bounds[day]), int(bounds[day + 1])
        label = time.strftime("%Y-%m-%d", time.gmtime(T0 + day * DAY))
        pq.write_table(table.slice(a, b - a), export_dir.part_path(directory, label, 1, day))
    export_dir.commit(directory, export_dir.Committed(1, {0: f"{decisions}-0"},
                                                      {0: decisions}, {0: decisions}, {}))

    accepted = rng.random(n_shown) < P_ACCEPT
    redeemed = accepted & (rng.random(n_shown) < 0.25)
    last = np.full(customers, -np.inf)
    np.maximum.at(last, who, ts)
    decided = np.isfinite(last)
    renew_p = np.where(control, P_RENEW_CONTROL, P_RENEW_CONTROL + LIFT)
    renewed = rng.random(customers) < renew_p
    outcome_of = np.flatnonzero(decided)
    kinds = pa.array(["accept", "redeem", "renew", "churn"])
    shown_rows = np.concatenate([np.flatnonzero(accepted), np.flatnonzero(redeemed)])
    event_kind = np.concatenate([np.zeros(int(accepted.sum()), np.int64),
                                 np.ones(int(redeemed.sum()), np.int64),
                                 np.where(renewed[outcome_of], 2, 3)])
    event_row = row[shown_rows]
    events = pa.table({
        "customer_id": pa.concat_arrays([customer_ids.take(pa.array(who[event_row])),
                                         customer_ids.take(pa.array(outcome_of))]),
        "offer_id": pa.concat_arrays([offer_names.take(pa.array(offer[shown_rows])),
                                      pa.repeat(empty_text[0], len(outcome_of))]),
        "event": kinds.take(pa.array(event_kind)),
        "ts": pa.array(np.concatenate([ts[event_row] + 3600.0, last[outcome_of] + DAY])),
        "decision_id": pa.concat_arrays([ids.take(pa.array(event_row)),
                                         pa.repeat(empty_text[0], len(outcome_of))]),
        "value": pa.array(np.full(len(event_kind), np.nan), pa.float64()),
    })
    events_path = out / "events.parquet"
    pq.write_table(events, events_path)
    return Written(directory, events_path, decisions, events.num_rows,
                   time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m training.synth.decisionlog")
    parser.add_argument("--out", required=True)
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    written = generate(Path(args.out), args.decisions, args.seed)
    print(json.dumps({"decisions": written.rows, "events": written.event_rows,
                      "seconds": round(written.seconds, 1), "lift": LIFT,
                      "relative_lift": LIFT / P_RENEW_CONTROL}))


if __name__ == "__main__":
    main()
