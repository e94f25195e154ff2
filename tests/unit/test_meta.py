"""Model metadata is one typed value: parsed and validated in one place, unknown fields kept."""

from __future__ import annotations

import json

import pytest

from recsvc.core.meta import MetaError, ModelMeta, SegmentMeta

META = {
    "version": "20261124T101500Z-3f9a1c", "trained_at": "2026-11-24T10:15:00Z",
    "data_fingerprint": "ab12", "parameters": {"algorithm": "als", "config": {"seed": 1}},
    "overall_ndcg_at_10": 0.31, "previous_version": None,
    "segments": [
        {"name": "at_risk", "strategy": "blended", "blend_weight": 0.5, "factors": 16,
         "customers": 10, "offers": 4, "interactions": 40, "evaluated_customers": 3,
         "params": {"factors": 16}, "metrics": {"ndcg_at_10": 0.3}, "model_metrics": None,
         "baseline_metrics": None, "notes": ["n"], "fit_seconds": 1.0,
         "evaluate_seconds": 0.5, "calibration": {"method": "isotonic"}},
        {"name": "quiet", "strategy": "popular", "factors": 0},
    ],
    "feedback_cutoff": {"0": "1-0"},
}


def test_metadata_round_trips_and_keeps_fields_it_does_not_know() -> None:
    meta = ModelMeta.from_json(json.dumps(META))
    assert meta.algorithm == "als" and meta.segment_index("quiet") == 1
    assert meta.segments[0] == SegmentMeta(
        name="at_risk", strategy="blended", blend_weight=0.5, factors=16, customers=10,
        offers=4, interactions=40, evaluated_customers=3, params={"factors": 16},
        metrics={"ndcg_at_10": 0.3}, notes=["n"], fit_seconds=1.0, evaluate_seconds=0.5,
        extra={"calibration": {"method": "isotonic"}})
    assert meta.extra == {"feedback_cutoff": {"0": "1-0"}}
    again = json.loads(meta.to_json())
    assert again["segments"][0]["calibration"] == {"method": "isotonic"}
    assert ModelMeta.from_dict(again) == meta


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m.pop("version"), "'version' must be a non-empty string"),
    (lambda m: m.update(segments={}), "'segments' must be a list"),
    (lambda m: m["segments"][0].update(strategy="magic"), "segments[0] ('at_risk'): unknown"),
    (lambda m: m["segments"][0].update(factors=0), "needs factors > 0"),
    (lambda m: m["segments"][1].update(blend_weight=2), "segments[1] ('quiet'): blend_weight"),
    (lambda m: m.update(overall_ndcg_at_10="high"), "overall_ndcg_at_10 must be a finite"),
])
def test_malformed_metadata_is_refused_naming_the_field(change: object, message: str) -> None:
    broken = json.loads(json.dumps(META))
    change(broken)  # type: ignore[operator]
    with pytest.raises(MetaError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        ModelMeta.from_dict(broken)


def test_metadata_that_is_not_json_is_refused() -> None:
    with pytest.raises(MetaError, match="not JSON"):
        ModelMeta.from_json(b"\x00{")
