"""A whole campaign: ids -> bulk reads -> decisions -> budgets by value -> reservation ->
Parquet -> decision log and contacts (docs/DESIGN.md "Campaigns").

The lineup is read once, as the watcher builds it (active version, live overrides, budgets,
do-not-contact list, the running experiment), so every customer is decided with one state.
Budgets: ``decisioning/allocation.py`` grants units by value; each budgeted offer's grants are
then reserved in one script call (``store/control/budgets.py``, the serving limits); grants another
process took meanwhile are refused there, banned, and the allocation runs again with the
reserved grants held (never overspent; a refused customer gets their next candidate).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from recsvc.campaign.chunks import Block, ChunkDecider, Collected
from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.core.errors import ModelNotPublishedError, SettingError, StoreError
from recsvc.core.schema import FLOAT32_LE
from recsvc.decisioning.allocation import Units, allocate, units_left
from recsvc.decisioning.budgets import budget_state, day_of
from recsvc.decisioning.decider import Decider, build_decider
from recsvc.experiments.challenger import Experiment
from recsvc.experiments.decision_log import SEPARATOR, entry_fields
from recsvc.experiments.holdout import Holdout
from recsvc.serving.deciding import DecisionCore
from recsvc.serving.holder import Challenger, ModelHolder
from recsvc.serving.questions import (
    DEFAULT_LIMIT,
    validate_channel,
    validate_context,
    validate_limit,
)
from recsvc.store.bulk.campaign import CampaignStore, Pending
from recsvc.store.reads.reader import RedisStore, connect

if TYPE_CHECKING:
    from recsvc.campaign.output import Answers

log = logging.getLogger(__name__)

CHUNK = 5000  # customers per round trip
MAX_ROUNDS = 10  # reservation rounds before the leftovers get no budgeted offer


@dataclass(frozen=True)
class Options:
    customers: Path
    out: Path
    channel: str = ""
    limit: int = DEFAULT_LIMIT
    context: Mapping[str, str] = field(default_factory=dict)
    dry_run: bool = False


@dataclass
class Summary:
    version: str = ""
    customers: int = 0
    with_offers: int = 0
    without_offers: int = 0
    unknown: int = 0
    decided_one_by_one: int = 0
    rows: int = 0
    units_reserved: int = 0
    units_refused: int = 0
    reservation_rounds: int = 0
    decisions_logged: int = 0
    contacts: int = 0
    dry_run: bool = False
    seconds: dict[str, float] = field(default_factory=dict)


class _NoWrites:
    """Serving's after-answer writes are the campaign's own, in bulk (``CampaignStore``)."""

    def log_decision(self, customer_id: str, fields: list[bytes | str]) -> None:
        return None

    def record_contact(self, customer_id: str, channel: str, now: float, keep: int) -> None:
        return None


def run(settings: Settings, options: Options) -> Summary:
    limit = validate_limit(options.limit)
    validate_channel(options.channel)
    validate_context(options.context)
    from recsvc.campaign import inputs, output

    clock = time.perf_counter()
    summary = Summary(dry_run=options.dry_run)
    ids = inputs.read_ids(options.customers)
    summary.customers = len(ids)
    summary.seconds["read_ids"] = _lap(clock)
    keys = schema.keys_for(settings)
    store = RedisStore(connect(settings, timeout_ms=10_000), keys, settings)
    now = time.time()
    d, challenger = lineup(store, settings.objective, now)
    summary.version = d.version
    try:
        holdout = Holdout.parse(settings.holdout_share, settings.holdout_segments,
                                settings.holdout_salt, settings.holdout_baseline)
    except ValueError as exc:
        raise SettingError(f"RECSVC_HOLDOUT_*: {exc}") from exc
    holder = ModelHolder()
    holder.swap(d.base, d, challenger)
    core = DecisionCore(holder, _NoWrites(), settings.max_batch_ids, settings.batch_chunk,
                        holdout, settings.decision_log_share if settings.decision_log else 0.0,
                        settings.explore_share)
    bulk = CampaignStore(settings.redis_url, keys, cluster=settings.redis_cluster)
    token = secrets.token_hex(4)
    writer = output.Writer(options.out)
    # Without on-serve budgets every answer is final once decided: its rows are written on a
    # thread (pyarrow releases the GIL) while the next chunks are read and decided.
    streaming = not any(c.budgets.on_serve() for c in
                        (d, *((challenger.decider,) if challenger is not None else ())))
    try:
        with ThreadPoolExecutor(1) as pool:
            collected = Collected(len(ids))
            decider = ChunkDecider(core, d, challenger, limit, now, options.channel,
                                   options.context, collected)
            other = challenger.version if challenger is not None else ""
            read_seconds = 0.0
            chunks = [ids[at:at + CHUNK] for at in range(0, len(ids), CHUNK)]
            shards = [schema.shard_of(c) for c in ids]
            written: list[Future[None]] = []

            def send(number: int) -> Pending:
                at = number * CHUNK
                return bulk.send_states(d.version, chunks[number], shards[at:at + CHUNK],
                                        other)

            # The next chunk's reads are in flight while this one is decided (Redis works on
            # the other core meanwhile).
            pending = send(0)
            for number, chunk in enumerate(chunks):
                started = time.perf_counter()
                raws, lives, challenger_raws = bulk.receive_states(pending)
                if number + 1 < len(chunks):
                    pending = send(number + 1)
                read_seconds += time.perf_counter() - started
                at = number * CHUNK
                block = decider.decide(at, chunk, raws, lives, challenger_raws)
                if streaming:
                    written.append(pool.submit(writer.append, _answers(
                        chunk, at, _block_pairs(block, at), collected, token)))
            summary.seconds["read_redis"] = round(read_seconds, 3)
            summary.seconds["decide"] = round(_lap(clock) - read_seconds, 3)
            summary.decided_one_by_one = collected.one_by_one
            summary.unknown = int(np.count_nonzero(~collected.known))
            kept: Pairs | None = None
            if not streaming or not options.dry_run:
                pairs = _sorted_pairs(collected)
                kept = pairs
            if not streaming:
                assert kept is not None
                budgeted = _budgeted(d, challenger, collected, kept.offer)
                with _writing(bulk):
                    taken = _allocate(bulk, kept, budgeted, limit, collected,
                                      d.budgets.day or day_of(now), options.dry_run, summary)
                kept = kept if taken.all() else kept.take(taken)
                local = Pairs(kept.customer, kept.rank_in_answer() - 1, *(
                    getattr(kept, f) for f in ("offer", "p", "objective", "value", "cost",
                                               "reasons")))
                written.append(pool.submit(writer.append, _answers(
                    ids, 0, local, collected, token)))
            summary.seconds["budgets"] = _lap(clock)
            if kept is not None:
                counts = np.bincount(kept.customer, minlength=len(ids))
                summary.with_offers = int(np.count_nonzero(counts))
            else:
                summary.with_offers = int(np.count_nonzero(np.bincount(
                    np.concatenate([b[0] for b in collected.pairs]) if collected.pairs
                    else np.zeros(0, np.int64), minlength=len(ids))))
            summary.without_offers = len(ids) - summary.with_offers
            if not options.dry_run:
                assert kept is not None
                with _writing(bulk):
                    _write(bulk, core, d, challenger, ids, shards, token, kept, counts, now,
                           options.channel, settings, collected, summary)
                summary.seconds["write_redis"] = _lap(clock)
            for future in written:
                future.result()
        summary.rows = writer.close()
        summary.seconds["write_parquet"] = _lap(clock)
    except BaseException:
        writer.abort()
        raise
    finally:
        bulk.close()
    return summary


@contextlib.contextmanager
def _writing(bulk: CampaignStore) -> Iterator[None]:
    """A phase that writes to Redis (reservations, the log, contacts). Every read is done
    before: a failure here stops the campaign (no output file) with an error that says what
    Redis had already been written, so nothing is half-applied silently."""
    try:
        yield
    except StoreError as exc:
        raise StoreError(f"{exc}; the campaign stopped, no output file was written; "
                         f"{bulk.report()}") from exc


def _block_pairs(block: Block | None, at: int) -> Pairs:
    """A chunk's block with customers counted from the chunk's first row."""
    if block is None:
        empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0)
        return Pairs(empty_i, empty_i, empty_i, empty_f, empty_f, empty_f, empty_f, empty_i)
    customer, rank, offer, p, objective, value, cost, reasons = block
    return Pairs(customer - at, rank, offer, p, objective, value, cost, reasons)


def _answers(ids: Sequence[str], at: int, pairs: Pairs, collected: Collected,
             token: str) -> Answers:
    """Customers ``at .. at + len(ids)`` as the output writes them (``pairs``: their kept
    pairs, customers counted from ``at``, ranks from 0)."""
    from recsvc.campaign.output import Answers

    end = at + len(ids)
    return Answers(
        ids, pairs.customer, pairs.rank + 1, pairs.offer, pairs.p, pairs.objective,
        pairs.value, pairs.cost, pairs.reasons, collected.segment[at:end],
        collected.strategy[at:end], collected.arm[at:end], collected.reason[at:end],
        collected.known[at:end], token, list(collected.offers.words),
        list(collected.segments.words), list(collected.strategies.words),
        list(collected.arms.words), list(collected.reasons.words), at)


def _lap(clock: float) -> float:
    """Seconds since ``clock`` (the run's start), rounded."""
    return round(time.perf_counter() - clock, 3)


def lineup(store: RedisStore, objective: str, now: float) -> tuple[Decider, Challenger | None]:
    """The champion's decider and the running challenger, as the watcher builds them."""
    polled = store.poll()
    if polled.active is None:
        raise ModelNotPublishedError(
            "no model version is active yet: run `recsvc train` to publish one")
    model = store.load_version(polled.active)
    live = store.load_live()
    budgets = budget_state(live.budgets, now)
    d = build_decider(model, live.overrides, budgets, live.dnc, objective, polled.revisions)
    try:
        experiment = Experiment.from_fields(dict(polled.experiment))
    except ValueError as exc:
        log.error("experiment record ignored: %s", exc)
        experiment = None
    if experiment is None or experiment.challenger == polled.active:
        return d, None
    other = store.load_version(experiment.challenger)
    return d, Challenger(experiment, build_decider(other, live.overrides, budgets, live.dnc,
                                                   objective, polled.revisions))


I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Pairs:
    """Candidate pairs sorted by customer, then rank."""

    customer: I64
    rank: I64
    offer: I64
    p: F64
    objective: F64
    value: F64
    cost: F64
    reasons: I64

    def take(self, keep: npt.NDArray[np.bool_]) -> Pairs:
        return Pairs(*(getattr(self, f)[keep] for f in self.__dataclass_fields__))

    def rank_in_answer(self) -> I64:
        """1-based position of each pair within its customer's (kept) pairs."""
        n = len(self.customer)
        if not n:
            return np.zeros(0, np.int64)
        first = np.ones(n, dtype=bool)
        first[1:] = self.customer[1:] != self.customer[:-1]
        start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
        result: I64 = np.arange(n) - start + 1
        return result


def _sorted_pairs(collected: Collected) -> Pairs:
    if not collected.pairs:
        empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0)
        return Pairs(empty_i, empty_i, empty_i, empty_f, empty_f, empty_f, empty_f, empty_i)
    # Each chunk's block is sorted already (ChunkDecider), and chunks come in customer order.
    return Pairs(*(np.concatenate(c) for c in zip(*collected.pairs, strict=True)))


def _budgeted(d: Decider, challenger: Challenger | None, collected: Collected,
              offer: I64) -> npt.NDArray[np.bool_]:
    on_serve = d.budgets.on_serve()
    flags = np.array([w in on_serve for w in collected.offers.words], dtype=bool)
    result: npt.NDArray[np.bool_] = flags[offer] if len(flags) else np.zeros(0, bool)
    return result


def _allocate(bulk: CampaignStore, pairs: Pairs, budgeted: npt.NDArray[np.bool_], limit: int,
              collected: Collected, day: str, dry_run: bool,
              summary: Summary) -> npt.NDArray[np.bool_]:
    """Which pairs are answered: units granted by value, reserved (unless ``dry_run``)."""
    n = len(pairs.customer)
    if not budgeted.any():
        start = np.zeros(n, dtype=np.int64)
        if n:
            first = np.ones(n, dtype=bool)
            first[1:] = pairs.customer[1:] != pairs.customer[:-1]
            start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
        result: npt.NDArray[np.bool_] = (np.arange(n) - start) < limit
        return result
    segment = collected.segment[pairs.customer]
    offers, segments = collected.offers.words, collected.segments.words
    forced = np.zeros(n, dtype=bool)
    banned = np.zeros(n, dtype=bool)
    units = units_left(bulk.budgets(), day)
    for _ in range(MAX_ROUNDS):
        summary.reservation_rounds += 1
        chosen = allocate(pairs.customer, pairs.objective, offers, pairs.offer, segments,
                          segment, budgeted, limit, units, forced, banned)
        fresh = chosen.granted & ~forced
        if dry_run or not fresh.any():
            return chosen.taken
        refused = False
        for code in np.unique(pairs.offer[fresh]).tolist():
            grants = np.flatnonzero(fresh & (pairs.offer == code))
            grants = grants[np.lexsort((grants, -pairs.objective[grants]))]
            ok = np.asarray(bulk.reserve(offers[code], day,
                                         [segments[s] for s in segment[grants].tolist()]),
                            dtype=bool)
            forced[grants[ok]] = True
            banned[grants[~ok]] = True
            summary.units_reserved += int(ok.sum())
            summary.units_refused += int((~ok).sum())
            refused = refused or not ok.all()
        if not refused:
            return chosen.taken
        units = units_left(bulk.budgets(), day)
    # Still refused after MAX_ROUNDS: the reserved grants stand, nothing more is granted.
    nothing = Units({o: 0 for o in offers}, {})
    return allocate(pairs.customer, pairs.objective, offers, pairs.offer, segments, segment,
                    budgeted, limit, nothing, forced, banned).taken


def _write(bulk: CampaignStore, core: DecisionCore, d: Decider, challenger: Challenger | None,
           ids: Sequence[str], shards: Sequence[int], token: str, kept: Pairs, counts: I64,
           now: float, channel: str, settings: Settings, collected: Collected,
           summary: Summary) -> None:
    """The decision log (the customers serving would log) and contacts counted on serve."""
    ends = np.cumsum(counts)
    starts = ends - counts
    offers = collected.offers.words
    strategies, arms, segments = (collected.strategies.words, collected.arms.words,
                                  collected.segments.words)

    def entries() -> Iterator[tuple[int, list[bytes | str]]]:
        # Numbers encoded once for every pair, texts once per word; each entry slices bytes.
        p = kept.p.astype(FLOAT32_LE).tobytes()
        values = kept.value.astype(FLOAT32_LE).tobytes()
        costs = kept.cost.astype(FLOAT32_LE).tobytes()
        one = np.ones(1, FLOAT32_LE).tobytes()
        offer_codes, ranks = kept.offer.tolist(), kept.rank.tolist()
        names = [o.encode() for o in offers]
        segment_b, arm_b, strategy_b = ([w.encode() for w in words]
                                        for words in (segments, arms, strategies))
        stamp, channel_b = str(int(now * 1000)).encode(), channel.encode()
        versions = (d.version.encode(),
                    challenger.version.encode() if challenger is not None else b"")
        segment_of, arm_of, strategy_of = (collected.segment.tolist(), collected.arm.tolist(),
                                           collected.strategy.tolist())
        on_challenger, explored = collected.challenger.tolist(), collected.explored.tolist()
        greedy = collected.propensity.tolist()
        starts_list, ends_list = starts.tolist(), ends.tolist()
        join = SEPARATOR.encode().join
        head = token.encode() + b"-"
        for row, customer_id in enumerate(ids):
            if not core.logged(customer_id):
                continue
            a, b = starts_list[row], ends_list[row]
            single = collected.singles.get(row)
            if single is not None:
                propensities = np.asarray([single[0][r] if r < len(single[0]) else 1.0
                                           for r in ranks[a:b]], FLOAT32_LE).tobytes()
                shadow, candidate = single[1][0].encode(), join(
                    [o.encode() for o in single[1][1]])
            else:
                shown = greedy[row]
                propensities = one * (b - a) if shown == 1.0 else \
                    np.full(b - a, shown, FLOAT32_LE).tobytes()
                shadow = candidate = b""
            scores = p[4 * a:4 * b]
            yield shards[row], entry_fields(
                head + str(row).encode(), stamp, customer_id.encode(),
                segment_b[segment_of[row]], versions[on_challenger[row]], arm_b[arm_of[row]],
                strategy_b[strategy_of[row]], channel_b,
                join([names[c] for c in offer_codes[a:b]]), scores, propensities, scores,
                values[4 * a:4 * b], costs[4 * a:4 * b], shadow, candidate, explored[row])

    summary.decisions_logged = bulk.write_log(entries(), settings.decision_log_max_per_shard)

    def contacts() -> Iterator[tuple[str, str]]:
        for row in np.flatnonzero(counts > 0).tolist():
            answering = challenger.decider if challenger is not None and \
                collected.challenger[row] else d
            policy = answering.policy.contacts
            if policy.count_on == "serve" and channel and channel not in policy.exempt_channels:
                yield ids[row], channel

    if channel:
        keep = d.policy.contacts.keep
        summary.contacts = bulk.write_contacts(contacts(), now, keep)

