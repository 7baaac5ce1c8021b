"""A 2-D map of pooled hidden states: PCA (deterministic, the default) or UMAP when umap-learn is installed.

PCA axes are oriented by one rule, so the same states always give the same picture: along each axis, the
point farthest from the centre lies on the positive side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from xmod_explorer.streaming_pca import CovarianceSums, Extremes

METHODS = ("pca", "umap")


def umap_available() -> bool:
    """Whether the optional umap-learn package can be imported."""
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def pca_2d(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, hidden) -> coordinates on the first two principal axes (n, 2) and the share of the total variance
    each axis explains (2,), in float64. With no variance at all (every point the same) both are zeros. The same
    fit and orientation as batch mode's map of a whole corpus (streaming_pca), here in one batch."""
    sums = CovarianceSums(points.shape[1])
    sums.add(points)
    axes = sums.fit()
    extremes = Extremes()
    extremes.add(axes.project(points))
    axes = axes.oriented(extremes.values)
    return axes.project(points), axes.explained


def umap_2d(points: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(n, hidden) -> UMAP coordinates (n, 2), float64; seeded, so repeatable on one machine and version."""
    import umap

    n = points.shape[0]
    reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(15, n - 1)), random_state=seed, init="random", n_jobs=1)
    return torch.as_tensor(reducer.fit_transform(points.double().numpy()), dtype=torch.float64)


@dataclass
class Projection:
    """Result of Explorer.project: each point a mean-pooled hidden state, placed in 2-D, per layer.

    kind "sentences": one point per sentence, each through its own language's adapter; kind "adapters": one
    text through many adapters, one point per adapter. coordinates[i] are the points at layers[i].
    explained_variance[i] holds the share of all variance along the two PCA axes (None for UMAP, whose axes
    have no such meaning). Distances in a 2-D picture are a projection of distances in the full space: points
    close here may be far apart there, and only large, repeated structure should be read."""

    model: str
    method: str
    kind: str
    layers: list[int]
    languages: list[str]  # per point
    texts: list[str]  # per point
    coordinates: torch.Tensor  # (len(layers), n, 2)
    explained_variance: torch.Tensor | None  # (len(layers), 2)
    notes: list[str] = field(default_factory=list)

    def at(self, layer: int) -> int:
        """Index into coordinates of a layer number."""
        return self.layers.index(layer)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "method": self.method,
            "kind": self.kind,
            "layers": list(self.layers),
            "languages": list(self.languages),
            "texts": list(self.texts),
            "coordinates": [[[round(float(v), 6) for v in point] for point in layer] for layer in self.coordinates],
            "explained_variance": (
                [[round(float(v), 6) for v in layer] for layer in self.explained_variance]
                if self.explained_variance is not None
                else None
            ),
            "notes": list(self.notes),
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per (layer, point)."""
        rows = [
            {
                "layer": layer,
                "point": point,
                "language": self.languages[point],
                "text": self.texts[point],
                "x": float(self.coordinates[i, point, 0]),
                "y": float(self.coordinates[i, point, 1]),
            }
            for i, layer in enumerate(self.layers)
            for point in range(len(self.languages))
        ]
        return pd.DataFrame(rows, columns=["layer", "point", "language", "text", "x", "y"])


def project_layers(
    pooled: torch.Tensor, layers: Sequence[int], method: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Project (all layers, n, hidden) pooled states at the chosen layers: coordinates and, for PCA, the
    explained variance of both axes."""
    if method == "umap":
        return torch.stack([umap_2d(pooled[layer]) for layer in layers]), None
    results = [pca_2d(pooled[layer]) for layer in layers]
    return torch.stack([c for c, _ in results]), torch.stack([e for _, e in results])
