"""``recsvc datagen``: a realistic retention data set of any size, reproducible from a seed
(``--world biased``: training/synth/world.py, a world with ground truth and biased exposure).

Planted structure, so demos and tests can assert that a per-customer model beats popularity:
- every offer has a latent theme vector; offer exposure follows a long-tailed (Zipf) popularity;
- every segment has its own taste, and every customer a personal taste around it;
- the funnel impression -> click -> accept -> redeem (with declines) is driven by the
  customer-offer affinity, not by exposure, so what a customer accepts reveals their taste.
Offers carry eligibility by segment, channels and validity windows; customers CLV and churn risk.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

SEGMENT_NAMES = ["at_risk", "loyal_high_value", "new_customer", "price_sensitive", "dormant",
                 "family_plan", "business", "student"]
CHANNELS = ["email", "app", "call_center", "sms"]
THEMES = ["discount", "upgrade", "loyalty points", "free month", "bundle", "device", "data boost",
          "streaming", "cashback", "priority support", "family add-on", "travel pass"]
LATENT = 4
TARGETED_SHARE = 0.3  # share of impressions chosen by persona rather than by exposure
PERSONAS = 6  # taste clusters per segment: what a personal model can learn and popularity can't
PERSONAL_NOISE = 0.1
EXPOSURE_SKEW = 0.9  # Zipf exponent of offer exposure
SHOWN_MEAN = 12  # impressions per customer
CLICK_SLOPE, ACCEPT_SLOPE = 6.0, 12.0
DAY = 86_400.0
NOW = 1_790_000_000.0  # fixed "now" (2026-09-21) so a seed gives the same files on any day


def segment_names(count: int) -> list[str]:
    return [SEGMENT_NAMES[i] if i < len(SEGMENT_NAMES) else f"segment_{i}" for i in range(count)]


def _unit(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    result: npt.NDArray[np.float64] = x / np.linalg.norm(x, axis=-1, keepdims=True)
    return result


def generate(customers: int, offers: int, segments: int, seed: int) -> dict[str, pa.Table]:
    rng = np.random.default_rng(seed)
    names = segment_names(segments)

    # Offers: theme vectors, long-tailed exposure, eligibility, channels, validity windows.
    offer_vec = _unit(rng.normal(size=(offers, LATENT)))
    exposure = 1.0 / np.arange(1, offers + 1) ** EXPOSURE_SKEW
    rng.shuffle(exposure)
    open_to_all = rng.random(offers) < 0.3
    eligible = np.zeros((segments, offers), dtype=bool)
    eligible[:, open_to_all] = True
    for o in np.flatnonzero(~open_to_all):
        chosen = rng.choice(segments, size=min(segments, 1 + int(rng.random() < 0.4)),
                            replace=False)
        eligible[chosen, o] = True
    offer_ids = [f"OFF{o:05d}" for o in range(offers)]
    theme = np.abs(offer_vec).argmax(axis=1) % len(THEMES)
    titles = [f"{THEMES[t].capitalize()} #{o}" for o, t in enumerate(theme)]
    segment_lists = ["*" if open_to_all[o] else "|".join(names[s] for s in
                                                         np.flatnonzero(eligible[:, o]))
                     for o in range(offers)]
    channel_lists = []
    for _ in range(offers):
        if rng.random() < 0.5:
            channel_lists.append("")
        else:
            k = int(rng.integers(1, len(CHANNELS)))
            channel_lists.append("|".join(sorted(rng.choice(CHANNELS, size=k, replace=False))))
    valid_from = np.full(offers, "", dtype=object)
    valid_to = np.full(offers, "", dtype=object)
    windowed = rng.random(offers) < 0.1
    for o in np.flatnonzero(windowed):
        start = NOW - rng.uniform(30, 400) * DAY
        valid_from[o] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
        valid_to[o] = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                    time.gmtime(start + rng.uniform(60, 900) * DAY))
    cost = np.round(rng.gamma(2.0, 5.0, size=offers), 2)
    value = np.round(cost * rng.uniform(1.5, 6.0, size=offers), 2)

    # Customers: skewed segment sizes; each customer has one of the segment's personas (a taste
    # cluster) plus a little personal noise.
    sizes = rng.dirichlet(np.full(segments, 3.0))
    seg_of = rng.choice(segments, size=customers, p=sizes)
    persona_taste = _unit(rng.normal(size=(segments, PERSONAS, LATENT)))
    persona = rng.integers(0, PERSONAS, size=customers)
    taste = _unit(persona_taste[seg_of, persona]
                  + PERSONAL_NOISE * rng.normal(size=(customers, LATENT)) / np.sqrt(LATENT))
    customer_ids = np.char.add("C", np.char.zfill(np.arange(customers).astype(str), 7))
    clv = np.round(rng.lognormal(6.0, 1.0, size=customers), 2)
    churn = np.round(rng.beta(2.0, 5.0, size=customers), 4)

    # Impressions: exposure-driven among the offers open to the customer's segment.
    shown = rng.poisson(SHOWN_MEAN, size=customers) + 2
    cust_rows, offer_rows = [], []
    for s in range(segments):
        members = np.flatnonzero(seg_of == s)
        pool = np.flatnonzero(eligible[s])
        if not len(members) or not len(pool):
            continue
        p = exposure[pool] / exposure[pool].sum()
        counts = shown[members]
        cust_rows.append(np.repeat(members, counts))
        picked = pool[rng.choice(len(pool), size=int(counts.sum()), p=p)]
        # Part of the exposure was already targeted by the persona (an earlier campaign tool).
        targeted = rng.random(len(picked)) < TARGETED_SHARE
        if targeted.any():
            persona_best = np.argsort(-(persona_taste[s] @ offer_vec[pool].T), axis=1)[:, :8]
            who = persona[np.repeat(members, counts)][targeted]
            picked[targeted] = pool[persona_best[who, rng.integers(0, 8, size=len(who))]]
        offer_rows.append(picked)
    cust = np.concatenate(cust_rows) if cust_rows else np.empty(0, dtype=np.int64)
    offer = np.concatenate(offer_rows) if offer_rows else np.empty(0, dtype=np.int64)
    affinity = np.einsum("ij,ij->i", taste[cust], offer_vec[offer])
    t_seen = NOW - rng.uniform(0, 180, size=len(cust)) * DAY
    clicked = rng.random(len(cust)) < 1 / (1 + np.exp(-(CLICK_SLOPE * affinity - 1.2)))
    accept_p = 1 / (1 + np.exp(-(ACCEPT_SLOPE * affinity - 1.5)))
    accepted = clicked & (rng.random(len(cust)) < accept_p)
    redeemed = accepted & (rng.random(len(cust)) < 0.6)
    declined = ~accepted & (rng.random(len(cust)) < np.where(clicked, 0.3, 0.05))
    events = [("impression", np.ones(len(cust), dtype=bool), 0.0),
              ("click", clicked, 0.01), ("accept", accepted, 0.5), ("redeem", redeemed, 7.0),
              ("decline", declined, 0.02)]
    parts_c, parts_o, parts_e, parts_t = [], [], [], []
    for name, mask, lag_days in events:
        parts_c.append(cust[mask])
        parts_o.append(offer[mask])
        parts_e.append(np.full(int(mask.sum()), name, dtype=object))
        parts_t.append(t_seen[mask] + lag_days * DAY * rng.random(int(mask.sum())))
    all_t = np.concatenate(parts_t)
    order = np.argsort(all_t, kind="stable")
    interactions = pa.table({
        "customer_id": pa.array(customer_ids[np.concatenate(parts_c)[order]]),
        "offer_id": pa.array(np.array(offer_ids, dtype=object)[np.concatenate(parts_o)[order]]),
        "event": pa.array(np.concatenate(parts_e)[order]),
        "ts": pa.array(np.floor(all_t[order]).astype(np.int64)),
    })
    return {
        "customers": pa.table({"customer_id": pa.array(customer_ids),
                               "segment": pa.array(np.array(names, dtype=object)[seg_of]),
                               "clv": pa.array(clv), "churn_risk": pa.array(churn)}),
        "offers": pa.table({"offer_id": offer_ids, "segments": segment_lists, "title": titles,
                            "cost": cost, "value": value, "channels": channel_lists,
                            "valid_from": valid_from.tolist(), "valid_to": valid_to.tolist()}),
        "interactions": interactions,
    }


def write(tables: dict[str, pa.Table], out: str, fmt: str) -> dict[str, str]:
    os.makedirs(out, exist_ok=True)
    paths = {}
    for name, table in tables.items():
        path = os.path.join(out, f"{name}.{fmt}")
        if fmt == "parquet":
            pq.write_table(table, path)
        else:
            pacsv.write_csv(table, path)
        paths[name] = path
    return paths


# The generator draws a persona's favourites from the offers open to each segment: it needs
# about 10 offers per segment (fewer failed with IndexError).
OFFERS_PER_SEGMENT = 10
MAX_SEGMENTS = 1000
EXIT_USAGE = 2


def argument_problems(args: argparse.Namespace) -> list[str]:
    """One line per argument outside what the generator allows, naming it and what is."""
    lines = []
    if not 1 <= args.segments <= MAX_SEGMENTS:
        lines.append(f"--segments: {args.segments} is not allowed (allowed: 1 to {MAX_SEGMENTS})")
    elif args.offers < OFFERS_PER_SEGMENT * args.segments:
        lines.append(f"--offers: {args.offers} is not allowed (allowed: at least "
                     f"{OFFERS_PER_SEGMENT} per segment, {OFFERS_PER_SEGMENT * args.segments} "
                     f"for {args.segments} segments)")
    if args.customers < 1:
        lines.append(f"--customers: {args.customers} is not allowed (allowed: 1 or more)")
    share = getattr(args, "explore_share", 0.0)
    if not 0 <= share < 1:
        lines.append(f"--explore-share: {share} is not allowed (allowed: 0 to below 1)")
    elif share and getattr(args, "world", "default") != "biased":
        lines.append("--explore-share: allowed with --world biased only")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        lines.append(f"--out: {args.out} is an existing file (allowed: a directory, created "
                     "when missing; its data files are overwritten)")
    return lines


def main(args: argparse.Namespace) -> int:
    bad = argument_problems(args)
    for line in bad:
        print(f"recsvc datagen: {line}", file=sys.stderr)
    if bad:
        return EXIT_USAGE
    started = time.perf_counter()
    try:
        if getattr(args, "world", "default") == "biased":
            from training.synth import world

            tables, truth, summary = world.generate(args.customers, args.offers, args.segments,
                                                    args.seed, explore_share=getattr(
                                                        args, "explore_share", 0.0))
            logged = tables.pop("decisions", None)
            paths = write(tables, args.out, args.format)
            if logged is not None:  # the exploration window's decision log (--decisions)
                from training.synth import exploration

                paths["decisions"] = exploration.write_decisions(logged, args.out)
                tables["decisions"] = logged
            paths.update(world.write_truth(truth, summary, args.out))
            tables = {**tables, "truth": truth}
            print(f"oracle precision@10 on the unbiased window: "
                  f"{summary['oracle_precision_at_10']:.4f} "
                  f"({summary['evaluated_customers']:,} customers)")
        else:
            tables = generate(args.customers, args.offers, args.segments, args.seed)
            paths = write(tables, args.out, args.format)
    except OSError as exc:
        print(f"recsvc datagen: --out: cannot write {args.out} ({exc.strerror or exc})",
              file=sys.stderr)
        return 1
    for name, path in paths.items():
        if name not in tables:
            print(f"{name:<12} {'':>12}       {path}")
            continue
        print(f"{name:<12} {tables[name].num_rows:>12,} rows  {path}")
    print(f"generated in {time.perf_counter() - started:.1f} s (seed {args.seed})")
    return 0
