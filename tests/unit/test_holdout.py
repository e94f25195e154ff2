"""The holdout's configuration: per-segment shares, and clear errors for bad settings."""

from __future__ import annotations

import pytest

from recsvc.experiments.holdout import Holdout


def test_per_segment_shares_override_the_default() -> None:
    holdout = Holdout.parse(0.1, "vip=0, at_risk=0.5", "s", "popular")
    ids = [f"C{i}" for i in range(4000)]
    share = {seg: sum(holdout.arm(c, seg) == "control" for c in ids) / len(ids)
             for seg in ("vip", "at_risk", "other")}
    assert share["vip"] == 0.0
    assert share["at_risk"] == pytest.approx(0.5, abs=0.03)
    assert share["other"] == pytest.approx(0.1, abs=0.02)
    assert not Holdout().active and holdout.active


@pytest.mark.parametrize(("share", "segments", "baseline", "message"), [
    (1.5, "", "none", "default"),
    (0.1, "vip=2", "none", "segment 'vip'"),
    (0.1, "vip", "none", "not segment=share"),
    (0.1, "vip=x", "none", "not segment=share"),
    (0.1, "", "coin", "baseline must be one of"),
])
def test_bad_holdout_settings_are_refused_naming_what(share: float, segments: str,
                                                      baseline: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Holdout.parse(share, segments, "s", baseline)
