"""Intervals and tests against an independent implementation: scipy.stats, or a direct enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from xmod_explorer.stats import (
    mcnemar_exact,
    null_interval,
    permutation_note,
    permutation_p_value,
    permutation_plan,
    smallest_p_value,
    wilson_interval,
)


@pytest.mark.parametrize("successes,trials", [(0, 1), (0, 10), (1, 10), (5, 10), (37, 48), (48, 48), (113, 200)])
def test_wilson_interval_equals_scipy(successes, trials):
    expected = scipy_stats.binomtest(successes, trials).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(successes, trials)
    assert low == pytest.approx(expected.low, abs=1e-12)
    assert high == pytest.approx(expected.high, abs=1e-12)
    assert low <= successes / trials <= high


def test_wilson_interval_other_levels_and_no_trials():
    expected = scipy_stats.binomtest(7, 30).proportion_ci(confidence_level=0.9, method="wilson")
    assert wilson_interval(7, 30, confidence=0.9) == pytest.approx((expected.low, expected.high), abs=1e-12)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


@pytest.mark.parametrize("b,c", [(0, 0), (1, 0), (0, 5), (3, 3), (2, 9), (9, 2), (10, 4), (17, 30), (0, 60)])
def test_mcnemar_exact_equals_scipy_binomial_test(b, c):
    expected = 1.0 if b + c == 0 else scipy_stats.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12, abs=1e-300)
    assert mcnemar_exact(b, c) == mcnemar_exact(c, b)


def paired_statistic(x: np.ndarray, y: np.ndarray):
    """Mean product of paired values: a statistic whose pairings matter."""
    return lambda order: float(np.mean(x * y[np.asarray(order)]))


@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_exact_permutation_test_equals_scipy(n):
    rng = np.random.default_rng(n)
    x = rng.normal(size=n)
    y = x + rng.normal(size=n)
    statistic = paired_statistic(x, y)
    plan = permutation_plan(n, 1000)
    assert plan.exact and plan.count == math.factorial(n)
    assert len({tuple(order) for order in plan.orders.tolist()}) == plan.count  # each permutation once
    null = torch.tensor([statistic(order) for order in plan.orders.tolist()], dtype=torch.float64)
    observed = statistic(range(n))
    expected = scipy_stats.permutation_test(
        (np.arange(n),),
        lambda order: statistic(order),
        permutation_type="pairings",
        vectorized=False,
        n_resamples=math.factorial(n),
        alternative="greater",
    )
    assert permutation_p_value(observed, null, plan.exact) == pytest.approx(expected.pvalue, abs=1e-12)
    assert null_interval(null) == pytest.approx(tuple(np.quantile(expected.null_distribution, [0.025, 0.975])))


def test_random_permutations_are_seeded_uniform_and_counted_with_the_observed_one():
    plan = permutation_plan(9, 1000, seed=4)
    assert not plan.exact and plan.orders.shape == (1000, 9)
    assert torch.equal(plan.orders, permutation_plan(9, 1000, seed=4).orders)
    assert not torch.equal(plan.orders, permutation_plan(9, 1000, seed=5).orders)
    assert all(sorted(order) == list(range(9)) for order in plan.orders.tolist())
    # Uniform: each item lands in each position about 1000 / 9 times.
    counts = torch.zeros(9, 9)
    for order in plan.orders.tolist():
        for position, item in enumerate(order):
            counts[position, item] += 1
    chi2 = float(((counts - 1000 / 9) ** 2 / (1000 / 9)).sum(1).max())
    assert chi2 < scipy_stats.chi2.ppf(0.999, 8)
    null = torch.arange(1000, dtype=torch.float64)
    assert permutation_p_value(989.5, null, exact=False) == pytest.approx(11 / 1001)
    assert permutation_p_value(2000.0, null, exact=False) == pytest.approx(1 / 1001)
    assert permutation_p_value(989.5, null, exact=True) == pytest.approx(10 / 1000)


def test_random_permutation_p_value_agrees_with_scipy_within_monte_carlo_error():
    n = 8
    rng = np.random.default_rng(1)
    x = rng.normal(size=n)
    y = 0.4 * x + rng.normal(size=n)
    statistic = paired_statistic(x, y)
    plan = permutation_plan(n, 20_000, seed=0)
    null = torch.tensor([statistic(order) for order in plan.orders.tolist()], dtype=torch.float64)
    ours = permutation_p_value(statistic(range(n)), null, plan.exact)
    exact = scipy_stats.permutation_test(
        (np.arange(n),), statistic, permutation_type="pairings", n_resamples=math.inf, alternative="greater"
    ).pvalue
    assert abs(ours - exact) < 4 * math.sqrt(exact * (1 - exact) / 20_000) + 1e-4


def test_ties_with_the_observed_value_count_as_reaching_it():
    null = torch.tensor([0.1 + 0.2, 0.3, 0.2, 0.1], dtype=torch.float64)  # 0.1 + 0.2 != 0.3 in floating point
    assert permutation_p_value(0.3, null, exact=True) == pytest.approx(2 / 4)


def test_small_samples_are_flagged():
    assert smallest_p_value(3) == pytest.approx(1 / 6) and smallest_p_value(7) == pytest.approx(1 / 1001)
    assert "never be below 0.05" in permutation_note(3)
    assert "0.042" in permutation_note(4)
    assert permutation_note(5) is None
    assert sum(1 for _ in itertools.permutations(range(4))) == 24


WILSON_CASES = [(0, 1), (1, 1), (0, 10), (10, 10), (3, 7), (1, 300), (299, 300), (512, 2000), (8917, 30000), (7, 11)]


@pytest.mark.parametrize(("successes", "trials"), WILSON_CASES)
@pytest.mark.parametrize("confidence", [0.95, 0.99, 0.8])
def test_wilson_interval_matches_scipy_at_every_confidence(successes, trials, confidence):
    expected = scipy_stats.binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    low, high = wilson_interval(successes, trials, confidence)
    assert low == pytest.approx(float(expected.low), abs=1e-12)
    assert high == pytest.approx(float(expected.high), abs=1e-12)


def test_wilson_interval_narrows_with_more_trials_and_refuses_impossible_counts():
    for successes, trials in WILSON_CASES:
        low, high = wilson_interval(successes, trials)
        assert 0 <= low <= successes / trials <= high <= 1
    assert (
        wilson_interval(30, 100)[1] - wilson_interval(30, 100)[0]
        > wilson_interval(300, 1000)[1] - wilson_interval(300, 1000)[0]
    )
    assert all(math.isnan(bound) for bound in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(5, 4)
    with pytest.raises(ValueError):
        wilson_interval(-1, 4)
