"""The biased world's exploration window (``recsvc datagen --world biased --explore-share S``):
a share S of the customers, in the last ``WINDOW_DAYS`` days, get one explored answer of
``SHOWN`` offers drawn uniformly among those open to their segment, as a serving policy's
epsilon-greedy exploration would show them, and accept each with its true p.

Written as serving would have logged it: interaction rows carrying a ``decision_id`` (the
incumbent's rows carry none) and a decision log in the export's layout (``decisions/``: one row
per answer, ``propensities`` = SHOWN / eligible for every offer, ``explored`` true), the input of
``recsvc train --decisions``. The window is the newest data, so the held-out accepts of the
explored customers mostly come from it: training's exploration slice. Drawn from its own
generator: the rest of the world is the same with or without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from recsvc.experiments.parquet_log import SCHEMA, write_table
from training.synth.datagen import DAY, NOW
from training.synth.world import BASE, TASTE_SLOPE, World

SHOWN = 5
WINDOW_DAYS = 7.0


@dataclass(frozen=True)
class Window:
    customer: npt.NDArray[np.int64]  # per shown offer
    offer: npt.NDArray[np.int64]
    accepted: npt.NDArray[np.bool_]
    answer: npt.NDArray[np.int64]  # per shown offer: index of its answer
    propensity: npt.NDArray[np.float64]  # per shown offer
    ts: npt.NDArray[np.float64]  # per answer


def draw(world: World, share: float, seed: int) -> Window:
    rng = np.random.default_rng([seed, 13])
    chosen = np.flatnonzero(rng.random(len(world.segment)) < share)
    parts: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], int, float]] = []
    for s in range(world.eligible.shape[0]):
        pool = np.flatnonzero(world.eligible[s])
        members = chosen[world.segment[chosen] == s]
        take = min(SHOWN, len(pool))
        if not take or not len(members):
            continue
        # Uniform draws without replacement: the first ``take`` of a random order per customer.
        order = np.argsort(rng.random((len(members), len(pool))), axis=1)[:, :take]
        parts.append((np.repeat(members, take), pool[order].ravel(), take, take / len(pool)))
    customer = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int64)
    offer = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, np.int64)
    propensity = np.concatenate([np.full(len(p[0]), p[3]) for p in parts]) if parts \
        else np.empty(0)
    order = np.argsort(customer, kind="stable")  # one answer's offers together, in id order
    customer, offer, propensity = customer[order], offer[order], propensity[order]
    logit = BASE + TASTE_SLOPE * np.einsum("ij,ij->i", world.taste[customer],
                                           world.theme[offer]) + world.appeal[offer]
    accepted = rng.random(len(customer)) < 1.0 / (1.0 + np.exp(-logit))
    answers, answer = np.unique(customer, return_inverse=True)
    ts = np.floor(NOW - rng.uniform(0, WINDOW_DAYS, size=len(answers)) * DAY)
    return Window(customer, offer, accepted, answer.astype(np.int64), propensity, ts)


def decision_ids(window: Window) -> npt.NDArray[np.object_]:
    return np.array([f"x{a:08d}" for a in range(int(window.answer.max(initial=-1)) + 1)],
                    dtype=object)


def interactions(window: Window, customer_ids: npt.NDArray[np.str_],
                 offer_ids: npt.NDArray[np.object_]) -> pa.Table:
    """The window's impressions and accepts (an hour after the answer), with their decision."""
    ids = decision_ids(window)
    rows = np.r_[np.arange(len(window.customer)), np.flatnonzero(window.accepted)]
    shown = len(window.customer)
    return pa.table({
        "customer_id": pa.array(customer_ids[window.customer[rows]]),
        "offer_id": pa.array(offer_ids[window.offer[rows]]),
        "event": pa.array(np.where(np.arange(len(rows)) < shown, "impression", "accept")),
        "ts": pa.array((window.ts[window.answer[rows]]
                        + np.where(np.arange(len(rows)) < shown, 0.0, 3600.0)).astype(np.int64)),
        "decision_id": pa.array(ids[window.answer[rows]])})


def decisions(window: Window, customer_ids: npt.NDArray[np.str_],
              offer_ids: npt.NDArray[np.object_], segment_names: list[str],
              segment: npt.NDArray[np.int64]) -> pa.Table:
    """The window's answers, one row each, in the schema of ``recsvc decisions export``."""
    ids = decision_ids(window)
    n = len(ids)
    first = np.searchsorted(window.answer, np.arange(n))
    offsets = pa.array(np.r_[first, len(window.answer)].astype(np.int32))
    who = window.customer[first]

    def floats(values: npt.NDArray[np.float64]) -> pa.ListArray:
        return pa.ListArray.from_arrays(offsets, pa.array(values, pa.float32()))

    zeros = np.zeros(len(window.answer))
    texts = pa.array([""] * n, pa.string())
    table = pa.table({
        "shard": pa.array(np.zeros(n, np.int16)), "stream_id": pa.array(ids.tolist()),
        "decision_id": pa.array(ids.tolist()), "ts": pa.array(window.ts),
        "customer_id": pa.array(customer_ids[who]),
        "segment": pa.array(np.array(segment_names, dtype=object)[segment[who]]),
        "version": texts, "arm": pa.array(["treatment"] * n),
        "strategy": pa.array(["exploration"] * n), "channel": texts,
        "offers": pa.ListArray.from_arrays(offsets, pa.array(offer_ids[window.offer])),
        "scores": floats(zeros), "propensities": floats(window.propensity),
        "p_accept": floats(zeros), "values": floats(zeros), "costs": floats(zeros),
        "candidate_version": texts,
        "candidate": pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)),
                                              pa.array([], pa.string())),
        "explored": pa.array(np.ones(n, dtype=bool))}, schema=SCHEMA)
    return table


def write_decisions(table: pa.Table, out: str) -> str:
    """``out/decisions/`` as an export without a commit file (read whole); returns it."""
    directory = Path(out) / "decisions"
    directory.mkdir(parents=True, exist_ok=True)
    write_table(directory / "exploration.parquet", table)
    return str(directory)
