"""Uncertainty for the numbers the explorer reports: intervals, exact tests and permutation tests.

Plain Python and torch, no scipy at run time; the tests check every function here against
scipy.stats (or a direct enumeration) on fixed inputs.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from statistics import NormalDist

import torch

CONFIDENCE = 0.95  # every interval the explorer shows is a 95 % one
ALPHA = 0.05  # a difference is claimed only where p < ALPHA
PERMUTATIONS = 1000  # random permutations when there are more than this many in all
SMALL_SAMPLE = 5  # below this many items per group a permutation test can show little (see permutation_note)


def wilson_interval(successes: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (no continuity correction); (nan, nan) without trials.

    Better than the normal approximation near 0 and 1 and for small samples. It assumes independent trials:
    masked tokens of the same paragraph are not quite independent, so for them it is somewhat too narrow.
    """
    if trials < 0 or not 0 <= successes <= max(trials, 0):
        raise ValueError(f"need 0 <= successes <= trials; got {successes} of {trials}")
    if trials == 0:
        return (math.nan, math.nan)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / trials
    scale = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / scale
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / scale
    # At 0 or all successes the bound is exactly 0 or 1; rounding must not move it past the estimate.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return (low, high)


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs of a paired comparison.

    only_first: items the first method gets right and the second wrong; only_second: the reverse.
    Under no difference each discordant item is a fair coin, so this is a binomial test of
    only_first out of only_first + only_second at 1/2 (computed exactly in rationals).
    """
    discordant = only_first + only_second
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, i) for i in range(min(only_first, only_second) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2**discordant)))


@dataclass
class PermutationPlan:
    """The pairings a permutation test looks at: every permutation of n items, or a seeded random sample."""

    orders: torch.Tensor  # (count, n) long; row r pairs item i with item orders[r, i]
    exact: bool  # True: every permutation, the identity included, each once

    @property
    def count(self) -> int:
        return int(self.orders.shape[0])


def permutation_plan(n: int, count: int = PERMUTATIONS, seed: int = 0) -> PermutationPlan:
    """All n! permutations when there are at most count of them, else count uniform random ones (seeded)."""
    if math.factorial(n) <= count:
        return PermutationPlan(torch.tensor(list(itertools.permutations(range(n))), dtype=torch.long), True)
    generator = torch.Generator().manual_seed(seed)
    return PermutationPlan(torch.rand(count, n, generator=generator, dtype=torch.float64).argsort(dim=1), False)


def permutation_p_value(observed: float, null: torch.Tensor, exact: bool) -> float:
    """One-sided p-value: how often a permuted statistic reaches the observed one.

    exact: null holds the statistic for every permutation (the identity among them), so p is that share.
    Otherwise null is a random sample and p = (hits + 1) / (count + 1), which never falls below the
    test's true level (the observed pairing counts as one of the permutations).
    """
    if null.numel() == 0:
        return math.nan
    return float(permutation_p_values(torch.tensor(float(observed), dtype=torch.float64), null.double(), exact))


def permutation_p_values(observed: torch.Tensor, null: torch.Tensor, exact: bool) -> torch.Tensor:
    """permutation_p_value for many statistics at once: observed (...), null (..., count) -> (...); nan stays nan."""
    observed = observed.double()
    # Permutations that give the same value up to rounding must count as reaching it.
    slack = 100 * torch.finfo(torch.float64).eps * observed.abs()
    hits = (null.double() >= (observed - slack).unsqueeze(-1)).sum(-1).double()
    count = null.shape[-1]
    p = hits / count if exact else (hits + 1) / (count + 1)
    return torch.where(torch.isfinite(observed), p, torch.full_like(p, math.nan))


def null_interval(null: torch.Tensor, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central interval holding `confidence` of the permutation null (quantiles, linear interpolation)."""
    if null.numel() == 0:
        return (math.nan, math.nan)
    low, high = null_intervals(null.double(), confidence)
    return (float(low), float(high))


def null_intervals(null: torch.Tensor, confidence: float = CONFIDENCE) -> tuple[torch.Tensor, torch.Tensor]:
    """null_interval for many nulls at once: (..., count) -> two tensors (...)."""
    tails = torch.tensor([(1 - confidence) / 2, (1 + confidence) / 2], dtype=torch.float64)
    low, high = torch.quantile(null.double(), tails, dim=-1)
    return low, high


def smallest_p_value(n: int, count: int = PERMUTATIONS) -> float:
    """The smallest p-value a permutation test of n paired items can give (1 / n! when exact)."""
    total = math.factorial(n)
    return 1 / total if total <= count else 1 / (count + 1)


def permutation_note(n: int, count: int = PERMUTATIONS) -> str | None:
    """What a reader must know when n items per group are too few for the permutation test to mean much."""
    if n >= SMALL_SAMPLE:
        return None
    total = math.factorial(n)
    floor = smallest_p_value(n, count)
    verdict = "can never be below 0.05" if floor >= ALPHA else f"is at least {floor:.3f}"
    return (
        f"With {n} sentences per language there are only {total} pairings, so a permutation p-value {verdict} "
        f"and the null band is coarse: the test cannot tell a finding from chance. Use {SMALL_SAMPLE} or more "
        "translations per language."
    )
