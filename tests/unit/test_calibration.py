"""p_accept maps: the pure reader (recsvc.core.calibration) and the isotonic fit on held-out
shown offers (training.calibrate), against known answers."""

from __future__ import annotations

import numpy as np
import pytest

from recsvc.core.calibration import constant, p_accept, validate
from training.calibrate import calibrate, fit_map, reliability

MAP = {"method": "isotonic", "score": [0.0, 1.0, 3.0], "p_accept": [0.1, 0.3, 0.7]}


def test_p_accept_is_linear_between_knots_and_flat_outside() -> None:
    got = p_accept(np.array([-5.0, 0.0, 0.5, 2.0, 3.0, 9.0]), MAP)
    assert got.tolist() == pytest.approx([0.1, 0.1, 0.2, 0.5, 0.7, 0.7])


def test_a_constant_map_gives_every_score_the_base_rate() -> None:
    assert p_accept(np.array([[-1.0, 0.0], [5.0, 1e9]]), constant(0.12)).tolist() == \
        [[0.12, 0.12], [0.12, 0.12]]
    assert validate(constant(1.7), "s")["p_accept"] == [1.0, 1.0]  # clipped into [0, 1]


@pytest.mark.parametrize(("bad", "message"), [
    ([], "must be an object"),
    ({"method": "isotonic", "score": [0.0]}, "lacks p_accept"),
    ({**MAP, "score": [0.0], "p_accept": [0.1]}, r"\(>= 2\) of knots"),
    ({**MAP, "method": ""}, "method must be a non-empty string"),
    ({**MAP, "score": [0.0, 1.0]}, "same number"),
    ({**MAP, "score": [0.0, 0.0, 1.0]}, "strictly increasing"),
    ({**MAP, "p_accept": [0.2, 0.1, 0.3]}, "non-decreasing"),
    ({**MAP, "p_accept": [0.2, 0.5, 1.5]}, r"\[0, 1\]"),
    ({**MAP, "score": [0.0, float("nan"), 1.0]}, r"score\[1\]"),
    ({**MAP, "p_accept": [0.1, "x", 0.3]}, r"p_accept\[1\]"),
])
def test_a_malformed_map_is_refused_naming_the_segment(bad: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        validate(bad, "at_risk")
    assert "segment 'at_risk'" in str(info.value)


def test_isotonic_fit_recovers_a_known_acceptance_curve() -> None:
    """Shown offers accepted with p = score / 4 on [0, 4]: the map reads p back within 0.03."""
    rng = np.random.default_rng(1)
    scores = rng.uniform(0.0, 4.0, size=100_000)
    accepted = rng.random(len(scores)) < scores / 4.0
    fitted = validate(fit_map(scores, accepted), "s")
    probe = np.array([0.5, 1.0, 2.0, 3.0, 3.5])
    assert p_accept(probe, fitted) == pytest.approx(probe / 4.0, abs=0.03)


def test_isotonic_fit_is_monotone_even_where_the_data_is_not() -> None:
    """A dip in the observed rate is pooled with its neighbour: the map is flat across them."""
    scores = np.repeat([0.0, 1.0, 2.0, 3.0], 1000)
    rates = np.repeat([0.1, 0.4, 0.2, 0.6], 1000)
    accepted = np.arange(4000) % 1000 < rates * 1000
    fitted = validate(fit_map(scores, accepted, bins=4), "s")
    assert fitted["p_accept"] == pytest.approx([0.1, 0.3, 0.3, 0.6], abs=0.002)
    assert fitted["score"] == [0.0, 1.0, 2.0, 3.0]


def test_too_few_cells_or_no_accept_give_the_constant_smoothed_base_rate() -> None:
    assert fit_map(np.arange(10.0), np.arange(10) < 3) == constant((3 + 1) / (10 + 2))
    flat = validate(fit_map(np.zeros(1000), np.arange(1000) < 100), "s")  # one score: one rate
    assert flat["p_accept"][0] == flat["p_accept"][1] == pytest.approx(0.1, abs=0.02)
    assert fit_map(np.arange(1000.0), np.zeros(1000, dtype=bool)) == constant(1 / 1002)
    # Accepts without impressions say nothing of the denominator: never a certain 1.
    assert max(fit_map(np.arange(1000.0), np.ones(1000, dtype=bool))["p_accept"]) < 1.0


def test_reliability_table_and_expected_calibration_error_have_known_values() -> None:
    scores = np.zeros(1000)
    accepted = np.arange(1000) < 100  # observed rate 0.1 everywhere
    measured = reliability(scores, accepted, constant(0.5), bins=4)
    assert measured["ece"] == pytest.approx(0.4)
    assert measured["table"] == [{"cells": 1000, "predicted": 0.5, "observed": 0.1}]
    assert reliability(scores, accepted, constant(0.1))["ece"] == pytest.approx(0.0)


def test_calibrate_reports_out_of_sample_error_of_a_well_calibrated_score() -> None:
    rng = np.random.default_rng(2)
    scores = rng.uniform(0.0, 1.0, size=50_000)
    accepted = rng.random(len(scores)) < scores
    published, measured = calibrate(scores, accepted, seed=3)
    validate(published, "s")
    assert measured["ece"] < 0.02 and measured["cells"] == pytest.approx(25_000, rel=0.05)
