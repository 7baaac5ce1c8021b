"""Similarity math against independent formulas and known invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xmod_explorer.similarity import (
    cka_under_pairings,
    cosine_matrix,
    language_pair_scores,
    linear_cka,
    mean_pool,
    paired_cosine_under_pairings,
    token_cosine,
)
from xmod_explorer.stats import permutation_plan


def hsic_biased(x: torch.Tensor, y: torch.Tensor) -> float:
    """HSIC with the centring matrix H = I - 11^T/n, written out independently of the module."""
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - torch.ones(n, n, dtype=torch.float64) / n
    gram_x, gram_y = x @ x.T, y @ y.T
    return float(torch.trace(gram_x @ h @ gram_y @ h)) / (n - 1) ** 2


@pytest.fixture
def data():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(12, 6, generator=generator, dtype=torch.float64)
    y = x @ torch.randn(6, 5, generator=generator, dtype=torch.float64) + 0.3 * torch.randn(
        12, 5, generator=generator, dtype=torch.float64
    )
    noise = torch.randn(12, 5, generator=generator, dtype=torch.float64)
    return x, y, noise


def test_biased_cka_matches_hsic_formula(data):
    x, y, _ = data
    expected = hsic_biased(x, y) / math.sqrt(hsic_biased(x, x) * hsic_biased(y, y))
    assert linear_cka(x, y, debiased=False) == pytest.approx(expected, rel=1e-10)


def test_cka_invariances(data):
    x, y, _ = data
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    for debiased in (False, True):
        assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0)
        base = linear_cka(x, y, debiased=debiased)
        assert linear_cka(x @ q, y, debiased=debiased) == pytest.approx(base)  # orthogonal transform
        assert linear_cka(3.0 * x + 2.0, y, debiased=debiased) == pytest.approx(base)  # scale and shift


def test_related_beats_unrelated_and_shuffled(data):
    x, y, noise = data
    related = linear_cka(x, y)
    assert related > 0.5
    assert linear_cka(x, noise) < related
    shuffled = cka_under_pairings(x, y, permutation_plan(12, 50, seed=1).orders)
    assert float(shuffled.mean()) < related


def test_debiased_estimator_removes_small_sample_inflation():
    """Independent random matrices: biased CKA is far above 0 at small n, debiased is near 0."""
    generator = torch.Generator().manual_seed(0)
    biased, debiased = [], []
    for _ in range(200):
        x = torch.randn(8, 50, generator=generator, dtype=torch.float64)
        y = torch.randn(8, 50, generator=generator, dtype=torch.float64)
        biased.append(linear_cka(x, y, debiased=False))
        debiased.append(linear_cka(x, y, debiased=True))
    assert sum(biased) / 200 > 0.5
    assert abs(sum(debiased) / 200) < 0.1


def test_pooling_and_cosines():
    states = torch.tensor([[[1.0, 0.0], [3.0, 4.0], [9.0, 9.0]]])
    keep = torch.tensor([[True, True, False]])
    assert torch.allclose(mean_pool(states, keep), torch.tensor([[2.0, 2.0]]))
    vectors = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    matrix = cosine_matrix(vectors)
    assert matrix[0, 1] == pytest.approx(0.0) and matrix[0, 2] == pytest.approx(1 / math.sqrt(2))


def test_centred_cosine_removes_a_shared_offset():
    """A large common vector makes raw cosine ~1; subtracting it shows the differences, token by token too."""
    generator = torch.Generator().manual_seed(0)
    own = torch.randn(2, 6, 16, generator=generator)
    offset = torch.full((16,), 50.0)
    states = own + offset
    raw = cosine_matrix(states.mean(1))
    centred = cosine_matrix(states.mean(1) - offset)
    assert raw[0, 1] > 0.99
    assert centred[0, 1] < 0.5
    assert torch.allclose(centred, cosine_matrix(own.mean(1)), atol=1e-5)
    per_token = token_cosine(states, 0, centre=offset)
    expected = torch.nn.functional.cosine_similarity(own[1].double(), own[0].double(), dim=-1)
    assert torch.allclose(per_token[1], expected, atol=1e-5)
    assert torch.allclose(token_cosine(states, 0)[0], torch.ones(6, dtype=torch.float64))
    assert (token_cosine(states, 0)[1] > 0.99).all()


@pytest.mark.parametrize("n", [3, 4, 6, 9])
def test_re_paired_statistics_equal_a_direct_computation_for_every_pairing(n):
    """The batched Gram-matrix shortcut against linear_cka and cosines recomputed from features, pairing by pairing."""
    generator = torch.Generator().manual_seed(n)
    x = torch.randn(n, 7, generator=generator, dtype=torch.float64) + 2.0
    y = x[:, :5] @ torch.randn(5, 7, generator=generator, dtype=torch.float64) + torch.randn(
        n, 7, generator=generator, dtype=torch.float64
    )
    plan = permutation_plan(n, 200, seed=2)
    ckas = cka_under_pairings(x, y, plan.orders)
    cosines = paired_cosine_under_pairings(x, y, plan.orders)
    narrower = cka_under_pairings(x, y[:, :4], plan.orders)  # CKA compares representations of any widths
    for order, cka, cosine, narrow in zip(plan.orders.tolist(), ckas.tolist(), cosines.tolist(), narrower.tolist()):
        assert cka == pytest.approx(linear_cka(x, y[order]), abs=1e-10)
        assert narrow == pytest.approx(linear_cka(x, y[order, :4]), abs=1e-10)
        direct = torch.nn.functional.cosine_similarity(x, y[order], dim=-1).mean()
        assert cosine == pytest.approx(float(direct), abs=1e-12)


def parallel_pooled(n: int, languages: int = 3, layers: int = 2, seed: int = 0):
    """Sentence vectors of a parallel set: a shared meaning per sentence plus language and noise terms."""
    generator = torch.Generator().manual_seed(seed)
    meaning = torch.randn(layers, 1, n, 16, generator=generator, dtype=torch.float64)
    offset = torch.randn(layers, languages, 1, 16, generator=generator, dtype=torch.float64) * 3
    noise = torch.randn(layers, languages, n, 16, generator=generator, dtype=torch.float64)
    weight = torch.tensor([0.0, 6.0]).view(2, 1, 1, 1)[:layers]  # layer 0 unrelated, layer 1 closely related
    pooled = (weight * meaning + offset + noise).reshape(layers, languages * n, 16)
    codes = [f"l{g}" for g in range(languages) for _ in range(n)]
    return pooled, codes


def scipy_pairing_test(statistic, n: int, permutations: float):
    from scipy import stats as scipy_stats

    return scipy_stats.permutation_test(
        (np.arange(n),),
        statistic,
        permutation_type="pairings",
        vectorized=False,
        n_resamples=permutations,
        alternative="greater",
    )


def test_language_pair_tests_equal_scipy_exact_permutation_tests():
    """n = 5: all 120 pairings, so p-values and null bands must equal scipy's exact test to rounding."""
    pooled, codes = parallel_pooled(5)
    scores, size, notes, plan = language_pair_scores(pooled, codes, permutations=1000)
    assert size == 5 and plan.exact and plan.count == 120 and len(scores) == 2 * 3
    for score in scores:
        a = [i for i, c in enumerate(codes) if c == score.language_a]
        b = [i for i, c in enumerate(codes) if c == score.language_b]
        x, y = pooled[score.layer, a], pooled[score.layer, b]
        cka = scipy_pairing_test(lambda order, x=x, y=y: linear_cka(x, y[list(order)]), 5, math.inf)
        assert score.cka == pytest.approx(cka.statistic, abs=1e-10)
        assert score.cka_p_value == pytest.approx(cka.pvalue, abs=1e-12)
        low, high = np.quantile(cka.null_distribution, [0.025, 0.975])
        assert (score.cka_null_low, score.cka_null_high) == pytest.approx((low, high), abs=1e-10)
        assert score.shuffled_cka == pytest.approx(float(np.mean(cka.null_distribution)), abs=1e-10)

        def cosine(order, x=x, y=y):
            return float(torch.nn.functional.cosine_similarity(x, y[list(order)], dim=-1).mean())

        matched = scipy_pairing_test(cosine, 5, math.inf)
        assert score.matched_cosine == pytest.approx(matched.statistic, abs=1e-12)
        assert score.cosine_p_value == pytest.approx(matched.pvalue, abs=1e-12)
        low, high = np.quantile(matched.null_distribution, [0.025, 0.975])
        assert (score.cosine_null_low, score.cosine_null_high) == pytest.approx((low, high), abs=1e-12)
    related = [s for s in scores if s.layer == 1]
    assert all(s.cka_p_value < 0.05 and s.cka > s.cka_null_high for s in related), [s.to_dict() for s in related]
    assert any("120 pairings (exact)" in note for note in notes)


def test_random_pairings_follow_scipys_convention_and_are_seeded():
    """n = 7: 1,000 random pairings of 5,040; p = (hits + 1) / 1,001, close to scipy's exact p-value."""
    pooled, codes = parallel_pooled(7, languages=2, seed=3)
    scores, _, notes, plan = language_pair_scores(pooled, codes, permutations=1000, seed=7)
    assert not plan.exact and plan.count == 1000
    again, _, _, _ = language_pair_scores(pooled, codes, permutations=1000, seed=7)
    assert [s.to_dict() for s in scores] == [s.to_dict() for s in again]
    for score in scores:
        x, y = pooled[score.layer, :7], pooled[score.layer, 7:]
        nulls = [linear_cka(x, y[order]) for order in plan.orders.tolist()]
        hits = sum(value >= score.cka - 1e-12 for value in nulls)
        assert score.cka_p_value == pytest.approx((hits + 1) / 1001)
        exact = scipy_pairing_test(lambda order, x=x, y=y: linear_cka(x, y[list(order)]), 7, math.inf).pvalue
        assert abs(score.cka_p_value - exact) < 4 * math.sqrt(exact * (1 - exact) / 1000) + 2 / 1001
    assert any("1,000 random pairings (seed 7)" in note for note in notes)


def test_small_parallel_sets_say_the_test_cannot_tell():
    pooled, codes = parallel_pooled(3)
    scores, size, notes, plan = language_pair_scores(pooled, codes)
    assert size == 3 and plan.count == 6
    assert any("never be below 0.05" in note for note in notes) and any("biased" in note for note in notes)
    assert all(score.cka_p_value >= 1 / 6 for score in scores)
    pooled, codes = parallel_pooled(2)
    scores, _, notes, _ = language_pair_scores(pooled, codes)
    assert all(math.isnan(s.cka) and math.isnan(s.cka_p_value) and s.cosine_p_value >= 0.5 for s in scores)
