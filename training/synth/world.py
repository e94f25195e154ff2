"""``recsvc datagen --world biased``: a retention world with ground truth and biased exposure.

Every customer and offer has a known true acceptance probability *if shown*:

    logit p(c, o) = BASE + TASTE_SLOPE * taste_c . theme_o + appeal_o

(taste: the segment persona plus personal noise; appeal: how well liked the offer is overall).
The logged window is what an incumbent targeting policy showed: exposure leans on a Zipf
"popularity" that has nothing to do with appeal, on offers marketing pushes to each segment, and
some segments are contacted far more than others (each customer sees an offer at most once,
up to all the offers open to the segment). Accepts are drawn from the true p of what was shown,
so the logged accepts mostly replay the old targeting.

The held-out, unbiased window is counterfactual: every evaluated customer is "shown" every offer
open to their segment once, and accepts with the true p. What a test compares against (written
next to the three input tables):
- ``truth.parquet``: per evaluated customer and eligible offer, ``p_true`` and ``accepted`` (the
  unbiased window's outcome);
- ``truth.json``: the oracle (ranking by true p, the customer's logged accepts excluded as
  serving excludes them): its precision@10 on the unbiased accepts and its expected precision.
Vectorized, in chunks of customers: memory stays bounded at any size. The constants below are
the world's design; docs/DESIGN.md (section 4) and docs/PERFORMANCE.md report what they give.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from training.synth.datagen import DAY, NOW, THEMES, _unit, segment_names

LATENT = 6
PERSONAS = 4  # taste clusters per segment
PERSONAL_NOISE = 0.2
BASE, TASTE_SLOPE, APPEAL_SPREAD = -3.0, 5.0, 0.5
EXPOSURE_SKEW = 1.1  # Zipf exponent of the incumbent's offer exposure (unrelated to appeal)
PUSHED_SHARE, PUSH_BOOST = 0.1, 8.0  # offers marketing pushes per segment, and how hard
SHOWN_MEANS = (70.0, 30.0)  # impressions per customer: the most vs the least contacted segment
LOGGED_DAYS = 180
K = 10
CHUNK = 50_000


@dataclass(frozen=True)
class World:
    """The hidden parameters of a world; ``p_true`` computes any (customer, offer) probability."""

    taste: npt.NDArray[np.float64]  # customers x LATENT
    theme: npt.NDArray[np.float64]  # offers x LATENT
    appeal: npt.NDArray[np.float64]  # offers
    segment: npt.NDArray[np.int64]  # customers -> segment index
    eligible: npt.NDArray[np.bool_]  # segments x offers

    def p_true(self, customers: npt.NDArray[np.int64],
               offers: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """customers x offers matrix of the true acceptance probability if shown."""
        logit = BASE + TASTE_SLOPE * self.taste[customers] @ self.theme[offers].T \
            + self.appeal[offers]
        result: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-logit))
        return result


def make_world(customers: int, offers: int, segments: int,
               rng: np.random.Generator) -> World:
    theme = _unit(rng.normal(size=(offers, LATENT)))
    appeal = rng.normal(0.0, APPEAL_SPREAD, size=offers)
    open_to_all = rng.random(offers) < 0.5
    eligible = np.zeros((segments, offers), dtype=bool)
    eligible[:, open_to_all] = True
    owner = rng.integers(0, segments, size=offers)
    eligible[owner, np.arange(offers)] = True
    sizes = rng.dirichlet(np.full(segments, 3.0))
    segment = rng.choice(segments, size=customers, p=sizes)
    persona_taste = _unit(rng.normal(size=(segments, PERSONAS, LATENT)))
    persona = rng.integers(0, PERSONAS, size=customers)
    taste = _unit(persona_taste[segment, persona]
                  + PERSONAL_NOISE * rng.normal(size=(customers, LATENT)) / np.sqrt(LATENT))
    return World(taste, theme, appeal, segment, eligible)


def _exposure(offers: int, segments: int, eligible: npt.NDArray[np.bool_],
              rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """segments x offers: the incumbent's probability of showing each offer in one contact."""
    zipf = 1.0 / np.arange(1, offers + 1) ** EXPOSURE_SKEW
    rng.shuffle(zipf)
    pushed = rng.random((segments, offers)) < PUSHED_SHARE
    weight = np.where(eligible, zipf[np.newaxis, :] * np.where(pushed, PUSH_BOOST, 1.0), 0.0)
    totals = weight.sum(axis=1, keepdims=True)
    result: npt.NDArray[np.float64] = np.divide(weight, totals, out=np.zeros_like(weight),
                                                where=totals > 0)
    return result


def _logged(world: World, exposure: npt.NDArray[np.float64], rng: np.random.Generator
            ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """(customer, offer, accepted) per impression of the incumbent policy."""
    segments = exposure.shape[0]
    contact = np.linspace(SHOWN_MEANS[0], SHOWN_MEANS[1], segments)
    rng.shuffle(contact)
    shown = rng.poisson(contact[world.segment]) + 1
    cust_parts, offer_parts = [], []
    for s in range(segments):
        pool = np.flatnonzero(exposure[s] > 0)
        log_w = np.log(exposure[s, pool])
        members = np.flatnonzero(world.segment == s)
        for lo in range(0, len(members), CHUNK):
            # Each contact shows a different offer: Gumbel top-k draws without replacement.
            chunk = members[lo:lo + CHUNK]
            counts = np.minimum(shown[chunk], len(pool))
            keys = log_w[np.newaxis, :] + rng.gumbel(size=(len(chunk), len(pool)))
            order = np.argsort(-keys, axis=1)
            take = np.arange(len(pool))[np.newaxis, :] < counts[:, np.newaxis]
            cust_parts.append(np.repeat(chunk, counts))
            offer_parts.append(pool[order[take]])
    cust = np.concatenate(cust_parts) if cust_parts else np.empty(0, dtype=np.int64)
    offer = np.concatenate(offer_parts) if offer_parts else np.empty(0, dtype=np.int64)
    accepted = np.empty(len(cust), dtype=bool)
    for lo in range(0, len(cust), 4 * CHUNK):
        c, o = cust[lo:lo + 4 * CHUNK], offer[lo:lo + 4 * CHUNK]
        logit = BASE + TASTE_SLOPE * np.einsum("ij,ij->i", world.taste[c], world.theme[o]) \
            + world.appeal[o]
        accepted[lo:lo + 4 * CHUNK] = rng.random(len(c)) < 1.0 / (1.0 + np.exp(-logit))
    return cust, offer, accepted


def _events(cust: npt.NDArray[np.int64], offer: npt.NDArray[np.int64],
            accepted: npt.NDArray[np.bool_], rng: np.random.Generator
            ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[Any],
                       npt.NDArray[np.float64]]:
    """The funnel rows of the logged impressions, in time order."""
    t_seen = NOW - rng.uniform(0, LOGGED_DAYS, size=len(cust)) * DAY
    clicked = accepted | (rng.random(len(cust)) < 0.05)
    redeemed = accepted & (rng.random(len(cust)) < 0.6)
    declined = ~accepted & (rng.random(len(cust)) < np.where(clicked, 0.4, 0.05))
    parts: list[tuple[str, npt.NDArray[np.bool_], float]] = [
        ("impression", np.ones(len(cust), dtype=bool), 0.0), ("click", clicked, 0.01),
        ("accept", accepted, 0.5), ("redeem", redeemed, 7.0), ("decline", declined, 0.02)]
    cs, os_, es, ts = [], [], [], []
    for name, mask, lag in parts:
        n = int(mask.sum())
        cs.append(cust[mask])
        os_.append(offer[mask])
        es.append(np.full(n, name, dtype=object))
        ts.append(t_seen[mask] + lag * DAY * rng.random(n))
    all_t = np.concatenate(ts)
    order = np.argsort(all_t, kind="stable")
    return (np.concatenate(cs)[order], np.concatenate(os_)[order], np.concatenate(es)[order],
            np.floor(all_t[order]))


def generate(customers: int, offers: int, segments: int, seed: int,
             evaluated: int = 20_000, explore_share: float = 0.0
             ) -> tuple[dict[str, pa.Table], pa.Table, dict[str, Any]]:
    """(input tables, truth table, truth summary) of a biased world; with ``explore_share`` the
    tables also hold ``decisions`` (training/synth/exploration.py)."""
    rng = np.random.default_rng(seed)
    names = segment_names(segments)
    world = make_world(customers, offers, segments, rng)
    exposure = _exposure(offers, segments, world.eligible, rng)
    cust, offer, accepted = _logged(world, exposure, rng)
    ev_c, ev_o, ev_e, ev_t = _events(cust, offer, accepted, rng)
    customer_ids = np.char.add("C", np.char.zfill(np.arange(customers).astype(str), 7))
    offer_ids = np.array([f"OFF{o:05d}" for o in range(offers)], dtype=object)
    theme_of = np.abs(world.theme).argmax(axis=1) % len(THEMES)
    cost = np.round(rng.gamma(2.0, 5.0, size=offers), 2)
    open_to_all = np.all(world.eligible, axis=0).astype(bool).tolist()
    tables = {
        "customers": pa.table({
            "customer_id": pa.array(customer_ids),
            "segment": pa.array(np.array(names, dtype=object)[world.segment]),
            "clv": pa.array(np.round(rng.lognormal(6.0, 1.0, size=customers), 2)),
            "churn_risk": pa.array(np.round(rng.beta(2.0, 5.0, size=customers), 4))}),
        "offers": pa.table({
            "offer_id": offer_ids.tolist(),
            "segments": ["*" if open_to_all[o] else "|".join(
                names[s] for s in np.flatnonzero(world.eligible[:, o])) for o in range(offers)],
            "title": [f"{THEMES[t].capitalize()} #{o}" for o, t in enumerate(theme_of)],
            "cost": cost, "value": np.round(cost * rng.uniform(1.5, 6.0, size=offers), 2),
            "channels": [""] * offers}),
        "interactions": pa.table({
            "customer_id": pa.array(customer_ids[ev_c]), "offer_id": pa.array(offer_ids[ev_o]),
            "event": pa.array(ev_e), "ts": pa.array(ev_t.astype(np.int64))}),
    }
    acc_c, acc_o = cust[accepted], offer[accepted]
    if explore_share > 0:
        from training.synth import exploration  # it imports this module

        window = exploration.draw(world, explore_share, seed)
        incumbent = tables["interactions"]
        tables["interactions"] = pa.concat_tables([incumbent.append_column(
            "decision_id", pa.array([""] * incumbent.num_rows, pa.string())),
            exploration.interactions(window, customer_ids, offer_ids)])
        tables["decisions"] = exploration.decisions(window, customer_ids, offer_ids, names,
                                                    world.segment)
        acc_c = np.r_[acc_c, window.customer[window.accepted]]
        acc_o = np.r_[acc_o, window.offer[window.accepted]]
    sample = np.sort(rng.choice(customers, size=min(customers, evaluated), replace=False))
    truth, summary = _truth(world, sample, acc_c, acc_o, rng)
    truth = truth.append_column("customer_id", pa.array(customer_ids[truth["c"].to_numpy()]))
    truth = truth.append_column("offer_id", pa.array(offer_ids[truth["o"].to_numpy()]))
    truth = truth.select(["customer_id", "offer_id", "p_true", "accepted"])
    summary.update({"customers": customers, "offers": offers, "segments": segments,
                    "seed": seed,
                    "logged_impressions": len(cust),
                    "logged_accept_rate": round(float(accepted.mean()), 6) if len(cust) else 0.0})
    return tables, truth, summary


def _truth(world: World, sample: npt.NDArray[np.int64], acc_c: npt.NDArray[np.int64],
           acc_o: npt.NDArray[np.int64], rng: np.random.Generator
           ) -> tuple[pa.Table, dict[str, Any]]:
    """The unbiased window of the evaluated customers and the oracle's precision@10."""
    n_offers = world.theme.shape[0]
    logged = np.zeros(0, dtype=np.int64)
    if len(acc_c):
        logged = np.unique(acc_c * n_offers + acc_o)
    parts: dict[str, list[npt.NDArray[Any]]] = {"c": [], "o": [], "p_true": [], "accepted": []}
    hits = expected = 0.0
    counted = 0
    for s in range(world.eligible.shape[0]):
        members = sample[world.segment[sample] == s]
        pool = np.flatnonzero(world.eligible[s])
        if not len(members) or not len(pool):
            continue
        p = world.p_true(members, pool)
        took = rng.random(p.shape) < p
        parts["c"].append(np.repeat(members, len(pool)))
        parts["o"].append(np.tile(pool, len(members)))
        parts["p_true"].append(p.astype(np.float32).ravel())
        parts["accepted"].append(took.ravel())
        # The oracle never recommends what the customer accepted already (serving filters it).
        already = np.isin(members[:, None] * n_offers + pool[None, :], logged)
        ranked = np.where(already, -1.0, p)
        width = min(K, len(pool))
        top = np.argsort(-ranked, axis=1, kind="stable")[:, :width]
        usable = np.take_along_axis(~already, top, axis=1)
        hits += float((np.take_along_axis(took, top, axis=1) & usable).sum())
        expected += float((np.take_along_axis(p, top, axis=1) * usable).sum())
        counted += len(members)
    table = pa.table({k: pa.array(np.concatenate(v)) if v else pa.array([], pa.float32())
                      for k, v in parts.items()})
    return table, {"evaluated_customers": counted,
                   "oracle_precision_at_10": round(hits / (K * counted), 6) if counted else 0.0,
                   "oracle_expected_precision_at_10":
                       round(expected / (K * counted), 6) if counted else 0.0}


def write_truth(truth: pa.Table, summary: dict[str, Any], out: str) -> dict[str, str]:
    os.makedirs(out, exist_ok=True)
    paths = {"truth": os.path.join(out, "truth.parquet"),
             "summary": os.path.join(out, "truth.json")}
    pq.write_table(truth, paths["truth"])
    with open(paths["summary"], "w") as handle:
        json.dump(summary, handle, indent=2)
    return paths
