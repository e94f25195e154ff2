"""The experiment record and its routing (recsvc/experiments/challenger.py), and the one
pipeline that reads the challenger's record beside the champion's (recsvc/store/reads/reader.py)."""

from __future__ import annotations

import pytest

from recsvc.core import schema
from recsvc.experiments.arms import unit_draw
from recsvc.experiments.challenger import Experiment, parse_share
from recsvc.store.reads.reader import state_commands, state_of, states_commands, states_of


def test_the_record_round_trips_and_each_bad_field_is_named() -> None:
    experiment = Experiment("v2", "shadow", 0.25, "salt-1", 1_790_000_000.5)
    assert Experiment.from_fields(experiment.fields()) == experiment
    assert Experiment.from_fields({}) is None
    with pytest.raises(ValueError, match="lacks share, salt"):
        Experiment.from_fields({"challenger": "v2", "mode": "split"})
    with pytest.raises(ValueError, match="mode: 'both'"):
        Experiment("v2", "both", 0.5, "s", 0.0)
    for text in ("0", "1.01", "-1", "nan", "inf", "ten"):
        with pytest.raises(ValueError, match="share"):
            parse_share(text)
    assert parse_share("1") == 1.0


def test_routing_is_the_salted_hash_and_its_share_is_binomial() -> None:
    split = Experiment("v2", "split", 0.2, "s", 0.0)
    shadow = Experiment("v2", "shadow", 0.2, "s", 0.0)
    ids = [f"c{i}" for i in range(20_000)]
    routed = [c for c in ids if split.routes(c)]
    assert routed == [c for c in ids if unit_draw("s", c) < 0.2]
    assert abs(len(routed) - 4000) < 4 * (20_000 * 0.2 * 0.8) ** 0.5
    assert all(split.serves(c) and not split.shadows(c) for c in routed[:50])
    assert all(shadow.shadows(c) and not shadow.serves(c) for c in routed[:50])
    assert Experiment("v2", "split", 1.0, "s", 0.0).routes("anyone")


def test_one_pipeline_reads_the_challenger_record_beside_the_champions() -> None:
    keys = schema.Keys("p")
    assert state_commands(keys, "v1", "c1") == [
        ("HGET", "p:v:v1:customers", "c1"), ("HGETALL", keys.live("c1"))]
    assert state_commands(keys, "v1", "c1", "v2")[2:] == [("HGET", "p:v:v2:customers", "c1")]
    assert state_of([b"r1", [], b"r2"]) == (b"r1", {}, b"r2")
    assert state_of([b"r1", [b"a:o", b"1"]]) == (b"r1", {b"a:o": b"1"}, None)
    commands = states_commands(keys, "v1", ["a", "b"], "v2")
    assert commands[0] == ("HMGET", "p:v:v1:customers", "a", "b")
    assert commands[-1] == ("HMGET", "p:v:v2:customers", "a", "b") and len(commands) == 4
    assert states_of([[b"1", None], [], [], [None, b"2"]]) == [(b"1", {}, None),
                                                               (None, {}, b"2")]
    assert states_of([[b"1", None], [], []]) == [(b"1", {}, None), (None, {}, None)]
