"""PCA from accumulated sums equals an SVD of all the points at once, however the points are split into batches."""

from __future__ import annotations

import pytest
import torch
from helpers import pca_reference

from xmod_explorer.streaming_pca import CovarianceSums, Extremes


def streamed(points: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    sums = CovarianceSums(points.shape[1])
    for start in range(0, len(points), batch):
        sums.add(points[start : start + batch])
    axes = sums.fit()
    extremes = Extremes()
    for start in range(0, len(points), batch):
        extremes.add(axes.project(points[start : start + batch]))
    axes = axes.oriented(extremes.values)
    return axes.project(points), axes.explained


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_streamed_pca_equals_svd_of_all_points(batch):
    generator = torch.Generator().manual_seed(0)
    # Like transformer states: a large shared offset and a few dominant directions.
    points = torch.randn(200, 48, generator=generator) * torch.linspace(3, 0.1, 48) + 40.0
    points = points.float()
    coordinates, explained = streamed(points, batch)
    expected_coordinates, expected_explained = pca_reference(points)
    torch.testing.assert_close(coordinates, expected_coordinates, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(explained, expected_explained, atol=1e-9, rtol=1e-9)


def test_no_spread_maps_every_point_to_zero():
    coordinates, explained = streamed(torch.ones(5, 4), 2)
    assert torch.equal(coordinates, torch.zeros(5, 2, dtype=torch.float64))
    assert torch.equal(explained, torch.zeros(2, dtype=torch.float64))
    two = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0]])
    coordinates, explained = streamed(two, 1)
    assert explained.tolist() == pytest.approx([1.0, 0.0])
    # Both points are equally far from the centre: the first one goes on the positive side.
    assert coordinates[:, 1].abs().max() == 0 and coordinates[:, 0].tolist() == pytest.approx([1.5, -1.5])
