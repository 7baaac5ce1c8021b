"""Confidence intervals, checked against scipy's independent implementation."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

from xmod_explorer.stats import wilson_interval

CASES = [(0, 1), (1, 1), (0, 10), (10, 10), (3, 7), (1, 300), (299, 300), (512, 2000), (8917, 30000), (7, 11)]


@pytest.mark.parametrize(("successes", "trials"), CASES)
@pytest.mark.parametrize("confidence", [0.95, 0.99, 0.8])
def test_wilson_interval_matches_scipy(successes, trials, confidence):
    expected = binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    low, high = wilson_interval(successes, trials, confidence)
    assert low == pytest.approx(float(expected.low), abs=1e-12)
    assert high == pytest.approx(float(expected.high), abs=1e-12)


def test_wilson_interval_holds_the_proportion_and_narrows_with_more_trials():
    for successes, trials in CASES:
        low, high = wilson_interval(successes, trials)
        assert 0 <= low <= successes / trials <= high <= 1
    assert (
        wilson_interval(30, 100)[1] - wilson_interval(30, 100)[0]
        > wilson_interval(300, 1000)[1] - wilson_interval(300, 1000)[0]
    )


def test_wilson_interval_refuses_impossible_counts():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 4)
    with pytest.raises(ValueError):
        wilson_interval(-1, 4)
