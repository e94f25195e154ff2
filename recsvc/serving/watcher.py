"""Keeps the in-memory model on the active version, its live state current, and health in step.

A background thread polls every ``poll`` seconds (not per request): one pipeline reads the
active pointer and the live revision counters (offers, budgets, do-not-contact). A new version
is loaded fully before it is swapped in; when only a revision moved (or the UTC day turned, for
daily budgets) the live state is read again and a new decider is built on the same version (on
a Redis Cluster also when the polled on-accept budget sums exhaust or free an offer: the feedback
script there cannot bump the budgets' revision). That one read is also the Redis health signal,
and its success closes the store's breaker, so requests use Redis again as soon as it answers.

While the pointer names the version in memory, the poll also checks that the version's keys
still exist: a Redis restarted without persistence, a FLUSHALL or an eviction would otherwise
turn every known customer into an "unknown" one served global popularity while health said
SERVING. The holder is marked ``vanished``: requests answer degraded popularity from memory
with the reason, the named health service goes NOT_SERVING, one log line says it.

The same poll reads the experiment record (``recsvc experiments``): while one runs, its
challenger version is loaded once and its decider is built beside the champion's with the same
live state; the holder gets both in one swap. A promotion moves the pointer to the challenger
already in memory, so the switch costs no load.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from recsvc.core.errors import CorruptRecordError, StoreError
from recsvc.core.model import ModelVersion
from recsvc.decisioning.budgets import budget_state, day_of, with_use
from recsvc.decisioning.decider import build_decider
from recsvc.decisioning.live import Poll
from recsvc.experiments.challenger import Experiment
from recsvc.ops import metrics
from recsvc.serving.holder import Challenger, ModelHolder
from recsvc.serving.ports import Store

log = logging.getLogger(__name__)

STREAM_METRICS_SECONDS = 5.0  # the stream lengths are read this often (128 XLEN, one trip)


class ModelWatcher:
    def __init__(self, store: Store, holder: ModelHolder, poll_seconds: float,
                 on_health: Callable[[bool, bool, bool], None], objective: str = "") -> None:
        self.store = store
        self.holder = holder
        self.poll_seconds = poll_seconds
        self.on_health = on_health  # (model loaded, redis answers, model still in redis)
        self.objective = objective  # overrides the version's objective when set
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed_version: str | None = None
        # What the holder was last built from: revisions, UTC day, experiment.
        self._applied: tuple[tuple[int, int, int], str, Experiment | None] | None = None
        self._experiment: Experiment | None = None  # the running one, its challenger loaded
        self._challenger: ModelVersion | None = None  # that challenger version in memory
        self._refused: tuple[tuple[str, str], ...] = ()  # an experiment record not followed
        self._redis_down_since: float | None = None  # for one log line when down, one when back
        self._streams_read = -STREAM_METRICS_SECONDS  # monotonic time of the last read
        # On a cluster, what the budget state was built from and what it decided: the polled
        # on-accept counters are checked against them (a rebuild only when exhaustion moves).
        self._budget_fields: dict[str, str] = {}
        self._exhaustion: tuple[object, object] = (frozenset(), {})
        self._use_seen: tuple[tuple[str, int], ...] = ()

    def check_once(self) -> None:
        """One poll: read pointer and revisions; load and swap what moved; notice a model
        that vanished from Redis."""
        current = self.holder.current
        intact = True
        try:
            polled = self.store.poll()
            if current is not None and polled.active == current.version:
                intact = self.store.version_intact(current.version)
        except StoreError as exc:
            self._redis_state(False, exc)
            self._report(redis_ok=False)
            return
        self._redis_state(True)
        self._stream_metrics()
        active = polled.active
        self._follow_experiment(polled, active)
        if current is not None and active is None:
            self._vanished(current.version, "the active version pointer is gone")
        elif current is not None and active == current.version and not intact:
            self._vanished(current.version, "its keys are gone")
        elif active is not None and active != self._failed_version and (
                current is None or current.version != active):
            try:
                promoted = self._challenger
                model = promoted if promoted is not None and promoted.version == active \
                    else self.store.load_version(active)
                self._apply(model, polled)
                self.holder.vanished = None
                metrics.model_loaded(active, model.trained_at, time.time(), current is not None)
                log.info("serving model version %s", active, extra={
                    "version": active, "previous": current and current.version,
                    "trained_at": model.trained_at})
            except CorruptRecordError as exc:
                # Retrying cannot help a version that does not decode: skip it until the
                # pointer moves; the version in memory keeps serving.
                metrics.model_load_failed("corrupt")
                log.error("cannot switch model version: %s", exc,
                          extra={"version": active, "cause": str(exc)})
                self._failed_version = active
            except StoreError as exc:  # Redis trouble mid-load: the next poll tries again
                metrics.model_load_failed("store")
                log.warning("model version %s not loaded yet: %s", active, exc,
                            extra={"version": active, "cause": str(exc)})
        elif current is not None:
            self._restored(current.version)
            if self._applied != (polled.revisions, day_of(time.time()), self._experiment) \
                    or self._ran_out(polled):
                try:
                    self._apply(current, polled)
                except StoreError as exc:
                    log.warning("live offer state not reloaded yet: %s", exc)
        self._report(redis_ok=True)

    def _stream_metrics(self) -> None:
        now = time.monotonic()
        if now - self._streams_read < STREAM_METRICS_SECONDS:
            return
        self._streams_read = now
        try:
            self.store.record_stream_metrics()
        except StoreError as exc:  # metrics only: the next read tries again
            log.debug("stream lengths not read: %s", exc)

    def _redis_state(self, up: bool, cause: Exception | None = None) -> None:
        """One log line when Redis stops answering, one when it answers again."""
        metrics.redis_up(up)
        down_since = self._redis_down_since
        if not up and down_since is None:
            self._redis_down_since = time.monotonic()
            log.error("Redis unavailable: serving from memory", extra={"cause": str(cause)})
        elif up and down_since is not None:
            self._redis_down_since = None
            log.warning("Redis available again",
                        extra={"down_seconds": round(time.monotonic() - down_since, 3)})

    def _apply(self, model: ModelVersion, polled: Poll) -> None:
        now = time.time()
        live = self.store.load_live()
        budgets = budget_state(with_use(live.budgets, live.budget_use), now)
        self._budget_fields = live.budgets
        self._exhaustion = (budgets.exhausted, dict(budgets.exhausted_in))
        self._use_seen = polled.budget_use
        metrics.budgets_exhausted(len(budgets.exhausted.union(*budgets.exhausted_in.values())))
        decider = build_decider(model, live.overrides, budgets, live.dnc, self.objective,
                                polled.revisions)
        challenger = None
        experiment, other = self._experiment, self._challenger
        if experiment is not None and other is not None and other.version != model.version:
            challenger = Challenger(experiment, build_decider(
                other, live.overrides, budgets, live.dnc, self.objective, polled.revisions))
        self.holder.swap(model, decider, challenger)
        if experiment is None:
            self._challenger = None  # ended, or promoted (then it was loaded as the champion)
        self._applied = (polled.revisions, day_of(now), experiment)

    def _ran_out(self, polled: Poll) -> bool:
        """On a cluster: do the polled on-accept counters (summed over the shards) exhaust an
        offer, or free one, compared with the state in use? On a single Redis the feedback
        script bumps ``~rev`` instead, and ``budget_use`` is empty."""
        if not polled.budget_use or polled.budget_use == self._use_seen:
            return False
        state = budget_state(with_use(self._budget_fields, dict(polled.budget_use)), time.time())
        if (state.exhausted, dict(state.exhausted_in)) != self._exhaustion:
            return True  # ``_apply`` notes the sums once it succeeds (a failure tries again)
        self._use_seen = polled.budget_use
        return False

    def _follow_experiment(self, polled: Poll, active: str | None) -> None:
        """Keep ``_experiment`` on the polled record, its challenger version loaded (a record
        that does not parse, or a version that does not load, runs no experiment: logged once;
        a store error is tried again at the next poll)."""
        try:
            experiment = Experiment.from_fields(dict(polled.experiment))
        except ValueError as exc:
            if self._refused != polled.experiment:
                log.error("experiment record ignored: %s", exc)
                self._refused = polled.experiment
            experiment = None
        if experiment is not None and experiment.challenger == active:
            experiment = None  # the challenger became the champion (models activate)
        if experiment == self._experiment:
            return
        if experiment is None:
            if self._experiment is not None:
                log.info("experiment ended: challenger %s", self._experiment.challenger)
            self._experiment = None
            return
        if self._challenger is None or self._challenger.version != experiment.challenger:
            if self._refused == polled.experiment:
                return
            try:
                self._challenger = self.store.load_version(experiment.challenger)
            except CorruptRecordError as exc:
                log.error("experiment not followed: challenger %s: %s",
                          experiment.challenger, exc)
                self._refused = polled.experiment
                return
            except StoreError as exc:
                log.warning("challenger %s not loaded yet: %s", experiment.challenger, exc)
                return
        self._experiment = experiment
        log.info("experiment running: challenger %s, %s, share %g", experiment.challenger,
                 experiment.mode, experiment.share)

    def _vanished(self, version: str, why: str) -> None:
        """The model in memory is gone from Redis (a restart without persistence, FLUSHALL,
        eviction): say so once, and answer from memory by popularity until it is back."""
        if self.holder.vanished is None:
            log.error("model version %s vanished from Redis (%s): health NOT_SERVING; serving "
                      "popularity from memory until a version is published again", version, why)
        self.holder.vanished = (f"model version {version} vanished from Redis ({why}); "
                                "popularity served from memory")

    def _restored(self, version: str) -> None:
        if self.holder.vanished is not None:
            log.warning("model version %s is back in Redis: personal answers again", version)
            self.holder.vanished = None

    def _report(self, redis_ok: bool) -> None:
        self.on_health(self.holder.current is not None, redis_ok, self.holder.vanished is None)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.check_once()
            except Exception:
                log.exception("model watcher poll failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
