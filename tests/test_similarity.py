"""Similarity math against independent formulas and known invariances."""

from __future__ import annotations

import math

import pytest
import torch

from xmod_explorer.similarity import (
    cosine_matrix,
    derangements,
    linear_cka,
    mean_pool,
    shuffled_cka,
    token_cosine,
)


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
    assert shuffled_cka(x, y) < related


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


def test_derangements_move_every_item():
    orders = derangements(5, 10)
    assert orders and all(all(order[i] != i for i in range(5)) for order in orders)
    assert derangements(1, 3) == []


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
