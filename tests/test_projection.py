"""The map of sentences and adapters: pooled states equal plain transformers', PCA equals an independent
eigendecomposition with a fixed orientation, and the same input always gives the same picture."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import LANGUAGES, reference_hidden_states

from xmod_explorer import Explorer, ExplorerError
from xmod_explorer.projection import pca_2d, umap_available

PAIRS = [
    ("en_XX", "Choose two languages."),
    ("de_DE", "Wähle zwei Sprachen."),
    ("fr_XX", "Choisis deux langues."),
    ("en_XX", "Every layer holds an adapter."),
    ("de_DE", "Jede Schicht hat einen Adapter."),
    ("ja_XX", "各層にアダプターがあります。"),
]
TEXT = "Every layer holds an adapter."
BACKENDS = ["transformers", pytest.param("adapters", marks=pytest.mark.adapters_backend)]


def reference_pca(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates on the two leading eigenvectors of the covariance, and their share of the variance (numpy)."""
    centred = points - points.mean(0)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    order = np.argsort(values)[::-1][:2]
    return centred @ vectors[:, order], values[order] / values.sum()


def assert_same_up_to_sign(got: torch.Tensor, expected: np.ndarray) -> None:
    for axis in range(2):
        column = got[:, axis].numpy()
        sign = 1.0 if np.abs(column - expected[:, axis]).max() < np.abs(column + expected[:, axis]).max() else -1.0
        np.testing.assert_allclose(column, sign * expected[:, axis], atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sentence_map_equals_pca_of_reference_states(base_dir, backend):
    projection = Explorer.from_pretrained(str(base_dir), backend=backend).project(PAIRS)
    assert projection.kind == "sentences" and projection.method == "pca"
    assert projection.layers == [0, 1, 2]
    assert projection.languages == [code for code, _ in PAIRS] and projection.texts == [text for _, text in PAIRS]
    pooled = torch.stack([reference_hidden_states(base_dir, text, code)[0].mean(1) for code, text in PAIRS], 1)
    for layer in projection.layers:
        coordinates, share = reference_pca(pooled[layer].double().numpy())
        assert_same_up_to_sign(projection.coordinates[layer], coordinates)
        np.testing.assert_allclose(projection.explained_variance[layer].numpy(), share, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_adapter_map_equals_pca_of_reference_states(model_dir, backend):
    projection = Explorer.from_pretrained(str(model_dir), backend=backend).project(TEXT, languages=LANGUAGES)
    assert projection.kind == "adapters" and projection.languages == LANGUAGES and projection.texts == [TEXT] * 5
    pooled = torch.stack([reference_hidden_states(model_dir, TEXT, code)[0].mean(1) for code in LANGUAGES], 1)
    # Layer 0 is before any adapter: one point five times, no variance to show.
    assert torch.all(projection.coordinates[0] == 0) and torch.all(projection.explained_variance[0] == 0)
    assert any("Layer 0" in note for note in projection.notes)
    for layer in projection.layers[1:]:
        coordinates, share = reference_pca(pooled[layer].double().numpy())
        assert_same_up_to_sign(projection.coordinates[layer], coordinates)
        np.testing.assert_allclose(projection.explained_variance[layer].numpy(), share, atol=1e-5)


def test_axes_are_oriented_by_the_farthest_point_and_runs_repeat(base_dir):
    explorer = Explorer.from_pretrained(str(base_dir))
    first = explorer.project(PAIRS)
    for layer in first.coordinates[1:]:
        for axis in range(2):
            column = layer[:, axis]
            assert column[column.abs().argmax()] > 0
    again = explorer.project(list(PAIRS))
    assert torch.equal(first.coordinates, again.coordinates)
    # Flipping the data flips nothing in the picture: the rule, not the solver's sign, decides.
    points = torch.randn(7, 16, generator=torch.Generator().manual_seed(0))
    a, share_a = pca_2d(points)
    b, share_b = pca_2d(-points)
    assert torch.allclose(a, b) and torch.allclose(share_a, share_b)


def test_one_layer_and_the_result_shapes(base_dir):
    explorer = Explorer.from_pretrained(str(base_dir))
    everything = explorer.project(PAIRS)
    one = explorer.project(PAIRS, layer=1)
    assert one.layers == [1] and torch.equal(one.coordinates[0], everything.coordinates[1])
    assert one.at(1) == 0
    data = json.loads(json.dumps(everything.to_dict()))
    assert len(data["coordinates"]) == 3 and len(data["coordinates"][0]) == len(PAIRS)
    assert all(0 <= v <= 1 for layer in data["explained_variance"] for v in layer)
    frame = everything.to_frame()
    assert list(frame.columns) == ["layer", "point", "language", "text", "x", "y"] and len(frame) == 3 * len(PAIRS)


@pytest.fixture(scope="module")
def explorer(base_dir):
    return Explorer.from_pretrained(str(base_dir))


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((PAIRS[:2],), {}, "at least 3 points"),
        ((TEXT,), {"languages": ["en_XX", "de_DE"]}, "Choose more languages"),
        ((PAIRS,), {"layer": 7}, "layer must be a whole number between 0 and 2"),
        ((PAIRS,), {"method": "tsne"}, "method must be one of"),
        (([("xx_YY", "Hello."), *PAIRS],), {}, "Row 1"),
        (("",), {"languages": LANGUAGES}, "empty"),
    ],
)
def test_project_bad_input(explorer, args, kwargs, message):
    with pytest.raises(ExplorerError, match=message):
        explorer.project(*args, **kwargs)


@pytest.mark.skipif(umap_available(), reason="checks the message shown where umap-learn is not installed")
def test_umap_without_umap_learn_says_how_to_get_it(explorer):
    with pytest.raises(ExplorerError, match="pip install umap-learn"):
        explorer.project(PAIRS, method="umap")


@pytest.mark.skipif(not umap_available(), reason="umap-learn is optional and not installed here")
def test_umap_map_is_seeded(explorer):
    first = explorer.project(PAIRS, layer=2, method="umap")
    again = explorer.project(PAIRS, layer=2, method="umap")
    assert first.method == "umap" and first.explained_variance is None
    assert first.coordinates.shape == (1, len(PAIRS), 2) and torch.equal(first.coordinates, again.coordinates)
