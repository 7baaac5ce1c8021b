"""Two principal axes from sums gathered batch by batch: a 2-D PCA map of more points than fit in memory.

Memory is O(hidden²) whatever the number of points: a running sum and a sum of outer products, in
float64, of the points minus a fixed shift (the mean of the first batch), so that the large mean that
all transformer states share does not eat the precision of their spread. The axes are the top two
eigenvectors of the scatter matrix, which are the right singular vectors an SVD of all centred points
would give; each axis is oriented by one rule, so the same points always give the same picture: the
point farthest from the centre along it lies on its positive side.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

AXES = 2


@dataclass
class PrincipalAxes:
    """A fitted 2-D PCA: centre (hidden,), unit axes (2, hidden) and the share of all variance along each (2,),
    in [0, 1]. With no variance at all (every point the same), the shares are 0 and every point maps to 0."""

    mean: torch.Tensor
    components: torch.Tensor
    explained: torch.Tensor
    count: int

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """(n, hidden) -> coordinates on the two axes (n, 2), float64."""
        return (points.double() - self.mean) @ self.components.T

    def oriented(self, extremes: torch.Tensor) -> PrincipalAxes:
        """These axes, each flipped where extremes (the coordinate farthest from 0 along it) is negative."""
        signs = torch.where(extremes < 0, -1.0, 1.0).to(torch.float64)
        return PrincipalAxes(self.mean, self.components * signs[:, None], self.explained, self.count)


class CovarianceSums:
    """Sums of points and of their outer products, added to batch by batch; fit() gives the PCA axes."""

    def __init__(self, dimension: int):
        self.dimension = dimension
        self.count = 0
        self.shift: torch.Tensor | None = None
        self.total = torch.zeros(dimension, dtype=torch.float64)
        self.outer = torch.zeros(dimension, dimension, dtype=torch.float64)

    def add(self, points: torch.Tensor) -> None:
        """Add (n, dimension) points."""
        if points.shape[0] == 0:
            return
        values = points.double()
        if self.shift is None:
            self.shift = values.mean(0)
        values = values - self.shift
        self.count += values.shape[0]
        self.total += values.sum(0)
        self.outer += values.T @ values

    def fit(self) -> PrincipalAxes:
        """The two principal axes of every point added so far (not yet oriented: see Extremes)."""
        if self.count == 0 or self.shift is None:
            raise ValueError("no points were added")
        centre = self.total / self.count
        scatter = self.outer - self.count * torch.outer(centre, centre)
        scatter = (scatter + scatter.T) / 2
        values, vectors = torch.linalg.eigh(scatter)
        values = values.flip(0).clamp_min(0)
        vectors = vectors.flip(1)
        components = torch.zeros(AXES, self.dimension, dtype=torch.float64)
        explained = torch.zeros(AXES, dtype=torch.float64)
        trace = float(scatter.diagonal().sum())
        axes = min(AXES, self.dimension)
        for axis in range(axes):
            # An axis with no variance along it (two points, say) maps every point to 0, as an SVD would.
            if values[axis] > trace * 1e-12:
                components[axis] = vectors[:, axis]
                explained[axis] = values[axis] / trace
        return PrincipalAxes(centre + self.shift, components, explained, self.count)


class Extremes:
    """Along each axis, the coordinate farthest from 0 seen so far (the first one on ties, in point order)."""

    def __init__(self) -> None:
        self.values = torch.zeros(AXES, dtype=torch.float64)

    def add(self, coordinates: torch.Tensor) -> None:
        """Add (n, 2) coordinates."""
        if coordinates.shape[0] == 0:
            return
        at = coordinates.abs().argmax(0)
        for axis in range(AXES):
            value = coordinates[at[axis], axis]
            if value.abs() > self.values[axis].abs():
                self.values[axis] = value
