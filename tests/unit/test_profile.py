"""Data profiles and the checks between runs, against hand-computed answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from training.config import Checks, TrainConfig
from training.inputs import data
from training.inputs.profile import bad_row_problems, build_profile, check_data, event_mix_shift


def profile_of(tmp: Path, interactions: str) -> dict[str, Any]:
    paths = {"customers": tmp / "c.csv", "offers": tmp / "o.csv", "interactions": tmp / "i.csv"}
    paths["customers"].write_text("customer_id,segment\na,gold\nb,gold\nc,silver\n,silver\n")
    paths["offers"].write_text("offer_id,segments\nx,*\ny,gold\n")
    paths["interactions"].write_text("customer_id,offer_id,event,ts\n" + interactions)
    text = {k: str(v) for k, v in paths.items()}
    ds = data.load(text["customers"], text["offers"], text["interactions"], 100)
    return build_profile(ds, text)


def test_profile_counts_rows_segments_events_time_range_and_bad_row_shares(
        tmp_path: Path) -> None:
    profile = profile_of(tmp_path, "a,x,click,1700000000\na,y,accept,1700000100\n"
                                   "c,x,impression,1700000200\nzz,x,click,1700000000\n")
    assert profile["rows"] == {"customers": 4, "offers": 2, "interactions": 4}
    assert profile["bad_rows"] == {"customers": 1, "offers": 0, "interactions": 1}
    assert profile["bad_row_share"] == {"customers": 0.25, "offers": 0.0, "interactions": 0.25}
    assert profile["interactions"] == 3 and profile["customers"] == 3
    assert profile["segments"] == {
        "gold": {"customers": 2, "customers_with_interactions": 1, "interactions": 2},
        "silver": {"customers": 1, "customers_with_interactions": 1, "interactions": 1}}
    assert profile["events"] == {"impression": 1, "click": 1, "accept": 1, "redeem": 0,
                                 "decline": 0}
    assert profile["time_range"] == {"first": "2023-11-14T22:13:20Z",
                                     "last": "2023-11-14T22:16:40Z"}
    assert bad_row_problems(profile, 0.25) == []
    assert [p.split(":")[0] for p in bad_row_problems(profile, 0.2)] == ["customers",
                                                                          "interactions"]


def _profile(interactions: int, events: dict[str, int],
             segments: dict[str, int]) -> dict[str, Any]:
    return {"format": 1, "interactions": interactions, "events": events,
            "segments": {n: {"customers": 10 if i else 0, "interactions": i}
                         for n, i in segments.items()}}


def _meta(profile: dict[str, Any], personalized: list[str]) -> dict[str, Any]:
    return {"data_profile": profile,
            "segments": [{"name": n, "strategy": "personalized" if n in personalized
                          else "popular"} for n in profile["segments"]]}


EVENTS = {"impression": 60, "click": 30, "accept": 10}


def test_a_first_deploy_only_applies_the_absolute_minimum() -> None:
    checks = check_data(_profile(0, {}, {}), None, Checks(min_interactions=100))
    assert [(c.name, c.passed, c.new, c.limit) for c in checks] == [
        ("min_interactions", False, 0, 100)]
    assert check_data(_profile(100, EVENTS, {"a": 100}), None, Checks())[0].passed


def test_a_retrain_on_similar_data_passes_every_comparison() -> None:
    active = _meta(_profile(1000, EVENTS, {"a": 600, "b": 400}), ["a", "b"])
    new = _profile(900, {"impression": 55, "click": 33, "accept": 12}, {"a": 500, "b": 400})
    checks = check_data(new, active, Checks())
    assert all(c.passed for c in checks), checks
    assert {c.name for c in checks} == {
        "min_interactions", "segment_present:a", "segment_present:b", "interaction_drop",
        "event_mix_shift", "segment_interactions:a", "segment_interactions:b"}


@pytest.mark.parametrize(("new", "failed"), [
    (_profile(1000, EVENTS, {"a": 1000}), {"segment_present:b", "segment_interactions:b"}),
    (_profile(499, EVENTS, {"a": 299, "b": 200}), {"interaction_drop"}),
    (_profile(500, EVENTS, {"a": 300, "b": 200}), set()),  # exactly 50% down: allowed
    (_profile(1000, {"impression": 80, "click": 20}, {"a": 600, "b": 400}), set()),  # 0.2
    (_profile(1000, {"impression": 81, "click": 19}, {"a": 600, "b": 400}),
     {"event_mix_shift"}),
    (_profile(1000, EVENTS, {"a": 951, "b": 49}), {"segment_interactions:b"}),
])
def test_each_comparison_refuses_exactly_beyond_its_threshold(new: dict[str, Any],
                                                              failed: set[str]) -> None:
    active = _meta(_profile(1000, {**EVENTS, "redeem": 0}, {"a": 600, "b": 400}), ["a", "b"])
    checks = check_data(new, active, Checks())
    assert {c.name for c in checks if not c.passed} == failed


def test_only_personalized_segments_need_the_minimum_of_interactions() -> None:
    active = _meta(_profile(1000, EVENTS, {"a": 990, "b": 10}), ["a"])
    checks = check_data(_profile(1000, EVENTS, {"a": 995, "b": 5}), active, Checks())
    assert all(c.passed for c in checks)
    assert "segment_interactions:b" not in {c.name for c in checks}


def test_event_mix_shift_is_the_largest_change_of_one_event_share() -> None:
    """L-infinity: 'click' mistyped as 'Click' moves click 0.3 -> 0 (impression .6 -> .857)."""
    assert event_mix_shift(EVENTS, {"impression": 60, "click": 0, "accept": 10}) == (
        0.3, "click")
    assert event_mix_shift(EVENTS, EVENTS) == (0.0, "accept")


def test_the_checks_section_of_the_config_is_validated() -> None:
    from recsvc.core.errors import DataError

    with pytest.raises(DataError, match="max_interaction_drop must lie in"):
        TrainConfig(checks=Checks(max_interaction_drop=1.5))
