"""The model watcher: one pointer read per poll, retry after Redis trouble, skip what won't decode.

The store here is a small double of our own Store Protocol (the watcher never sees Redis); the
real-Redis path is covered by tests/integration/test_server.py::TestRedisTrouble.
"""

from __future__ import annotations

import json
from typing import Any

from recsvc.core import schema
from recsvc.core.errors import CorruptRecordError, StoreError
from recsvc.core.meta import ModelMeta
from recsvc.core.model import ModelVersion
from recsvc.decisioning.live import LiveData, Poll
from recsvc.serving.holder import ModelHolder
from recsvc.serving.watcher import ModelWatcher


def tiny_model(version: str) -> ModelVersion:
    meta = {"version": version, "trained_at": "2026-11-24T10:15:00Z",
            "segments": [{"name": "s", "strategy": "popular"}]}
    blob = {b"offers": schema.encode_u32([0]), b"popularity": schema.encode_f32([1.0])}
    return ModelVersion.from_blobs(version, ModelMeta.from_dict(meta),
                                   json.dumps([{"offer_id": "o"}]).encode(), [blob], blob)


class ScriptedStore:
    def __init__(self, active: str | None, loads: list[Exception | None]) -> None:
        self.active, self.loads, self.reads, self.down = active, loads, 0, False
        self.intact = True
        self.revisions = (0, 0, 0)
        self.live = LiveData({}, {}, frozenset())
        self.live_loads = 0
        self.experiment: tuple[tuple[str, str], ...] = ()
        self.stream_reads = 0

    def active_version(self) -> str | None:
        return self.poll().active

    def poll(self) -> Poll:
        self.reads += 1
        if self.down:
            raise StoreError("down")
        return Poll(self.active, self.revisions, self.experiment)

    def load_live(self) -> LiveData:
        self.live_loads += 1
        return self.live

    def version_intact(self, version: str) -> bool:
        return self.intact

    def record_stream_metrics(self) -> None:
        self.stream_reads += 1

    def load_version(self, version: str) -> Any:
        outcome = self.loads.pop(0)
        if outcome is not None:
            raise outcome
        return tiny_model(version)


Health = list[tuple[bool, bool, bool]]


def watcher(store: ScriptedStore) -> tuple[ModelWatcher, ModelHolder, Health]:
    holder, health = ModelHolder(), []
    return ModelWatcher(store, holder, 1.0, lambda *h: health.append(h)), holder, health  # type: ignore[arg-type]


def test_a_load_interrupted_by_redis_trouble_is_retried_at_the_next_poll() -> None:
    store = ScriptedStore("v2", [StoreError("connection reset"), None])
    w, holder, health = watcher(store)
    w.check_once()
    assert holder.current is None and health[-1] == (False, True, True)
    w.check_once()
    assert holder.current is not None and holder.current.version == "v2"
    assert health[-1] == (True, True, True) and store.reads == 2  # one pointer read per poll


def test_a_version_that_does_not_decode_is_skipped_until_the_pointer_moves() -> None:
    store = ScriptedStore("bad", [CorruptRecordError("garbage"), None])
    w, holder, _ = watcher(store)
    w.check_once()
    w.check_once()  # not loaded again
    assert holder.current is None and store.loads == [None]
    store.active = "good"
    w.check_once()
    assert holder.current is not None and holder.current.version == "good"


def test_an_unanswered_pointer_read_reports_redis_down_and_keeps_the_model() -> None:
    store = ScriptedStore("v1", [None])
    w, holder, health = watcher(store)
    w.check_once()
    store.down = True
    w.check_once()
    assert health[-1] == (True, False, True) and holder.current.version == "v1"  # type: ignore[union-attr]


def test_a_model_whose_pointer_vanished_is_marked_logged_once_and_kept_in_memory(
        caplog: Any) -> None:
    store = ScriptedStore("v1", [None, None])
    w, holder, health = watcher(store)
    w.check_once()
    store.active = None  # FLUSHALL, or a restart without persistence
    w.check_once()
    w.check_once()
    assert holder.current.version == "v1"  # type: ignore[union-attr]
    assert holder.vanished is not None and "v1 vanished" in holder.vanished
    assert health[-1] == (True, True, False)
    assert sum("vanished from Redis" in r.getMessage() for r in caplog.records) == 1
    store.active = "v2"  # a new version is published: personal answers again
    w.check_once()
    assert holder.current.version == "v2" and holder.vanished is None  # type: ignore[union-attr]
    assert health[-1] == (True, True, True)


def test_a_model_whose_keys_vanished_under_its_pointer_is_marked_until_they_are_back() -> None:
    store = ScriptedStore("v1", [None])
    w, holder, health = watcher(store)
    w.check_once()
    store.intact = False
    w.check_once()
    assert holder.vanished is not None and "keys are gone" in holder.vanished
    assert health[-1] == (True, True, False)
    store.intact = True
    w.check_once()
    assert holder.vanished is None and health[-1] == (True, True, True)


def test_live_state_is_reloaded_only_when_a_revision_moves() -> None:
    store = ScriptedStore("v1", [None])
    w, holder, _ = watcher(store)
    w.check_once()
    w.check_once()
    assert store.live_loads == 1
    store.live = LiveData({"o": {"paused": True}}, {}, frozenset({"c9"}))
    store.revisions = (1, 0, 1)
    w.check_once()
    decider = holder.require_decider()
    assert store.live_loads == 2 and decider.paused == frozenset({0})
    assert decider.dnc == frozenset({"c9"}) and decider.revisions == (1, 0, 1)
    assert holder.current is not None and holder.current.version == "v1"


EXPERIMENT = (("challenger", "v2"), ("mode", "split"), ("salt", "s"), ("share", "0.5"),
              ("started_at", "0"))


def test_an_experiment_loads_its_challenger_once_and_a_promotion_reuses_it() -> None:
    store = ScriptedStore("v1", [None, None])
    w, holder, _ = watcher(store)
    w.check_once()
    store.experiment = EXPERIMENT
    w.check_once()
    w.check_once()
    champion, challenger = holder.lineup()
    assert champion.version == "v1" and challenger is not None and challenger.version == "v2"
    assert challenger.experiment.share == 0.5 and store.loads == []  # loaded once
    store.revisions = (1, 0, 0)  # live state moved: both deciders rebuilt with it
    w.check_once()
    assert holder.lineup()[1].decider.revisions == (1, 0, 0)  # type: ignore[union-attr]
    store.active, store.experiment = "v2", ()  # promoted: one script moved both
    w.check_once()
    assert holder.current is not None and holder.current.version == "v2"
    assert holder.challenger is None and store.loads == []  # no third load: reused


def test_a_malformed_experiment_record_or_an_undecodable_challenger_runs_no_experiment(
        caplog: Any) -> None:
    store = ScriptedStore("v1", [None, CorruptRecordError("garbage")])
    w, holder, _ = watcher(store)
    w.check_once()
    store.experiment = (("challenger", "v2"), ("mode", "split"), ("salt", "s"),
                        ("share", "7"))
    w.check_once()
    w.check_once()
    assert holder.challenger is None
    assert sum("experiment record ignored" in r.getMessage() for r in caplog.records) == 1
    store.experiment = EXPERIMENT
    w.check_once()
    w.check_once()  # not loaded again
    assert holder.challenger is None and store.loads == []
    assert sum("experiment not followed" in r.getMessage() for r in caplog.records) == 1
    store.experiment = ()  # stopped: the champion alone, as before
    w.check_once()
    assert holder.current is not None and holder.current.version == "v1"


def test_stream_lengths_are_read_every_few_seconds_not_every_poll() -> None:
    """128 XLEN every 5 s at most, whatever RECSVC_MODEL_POLL_MS is."""
    store = ScriptedStore("v1", [None])
    w, _, _ = watcher(store)
    for _ in range(5):
        w.check_once()
    assert store.reads == 5 and store.stream_reads == 1
    w._streams_read -= 5.0  # five seconds later
    w.check_once()
    assert store.stream_reads == 2
