"""Hidden-state similarity: pooling, raw and centred cosine, linear CKA; and their result objects.

Raw cosine between transformer states is high even for unrelated inputs (a few dominant
dimensions), so every comparison here also offers a centred variant or a shuffled baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch


def mean_pool(states: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean over the positions where keep is True: (batch, tokens, hidden) -> (batch, hidden)."""
    weights = keep.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def cosine_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """All pairwise cosines of the rows of (n, hidden)."""
    unit = torch.nn.functional.normalize(vectors.double(), dim=-1)
    return unit @ unit.T


def cross_cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cosine of every row of x (n, h) with every row of y (m, h): (n, m)."""
    return torch.nn.functional.normalize(x.double(), dim=-1) @ torch.nn.functional.normalize(y.double(), dim=-1).T


def centred_token_cosine(states: torch.Tensor) -> torch.Tensor:
    """(adapters, tokens, hidden) -> (adapters, adapters): per-token cosine after removing the mean
    state of all tokens under all adapters, averaged over tokens."""
    centred = states.double() - states.double().mean(dim=(0, 1), keepdim=True)
    unit = torch.nn.functional.normalize(centred, dim=-1)  # (k, t, h)
    return torch.einsum("ath,bth->ab", unit, unit) / states.shape[1]


def token_cosine(states: torch.Tensor, reference: int, *, centred: bool = False) -> torch.Tensor:
    """(adapters, tokens, hidden) -> (adapters, tokens): each token's cosine to the reference adapter's."""
    values = states.double()
    if centred:
        values = values - values.mean(dim=(0, 1), keepdim=True)
    unit = torch.nn.functional.normalize(values, dim=-1)
    return (unit * unit[reference : reference + 1]).sum(-1)


def _hsic_unbiased(gram_x: torch.Tensor, gram_y: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC estimator (Song et al., 2012) on Gram matrices with zeroed diagonals."""
    n = gram_x.shape[0]
    kx = gram_x.clone().fill_diagonal_(0)
    ky = gram_y.clone().fill_diagonal_(0)
    ones = torch.ones(n, 1, dtype=kx.dtype)
    trace = (kx * ky).sum()
    middle = (ones.T @ kx @ ones) * (ones.T @ ky @ ones) / ((n - 1) * (n - 2))
    last = (ones.T @ kx @ ky @ ones) * 2 / (n - 2)
    return ((trace + middle - last) / (n * (n - 3))).squeeze()


def linear_cka(x: torch.Tensor, y: torch.Tensor, *, debiased: bool = True) -> float:
    """Linear CKA between two representations of the same n items, (n, dx) and (n, dy).

    The debiased estimator needs n >= 4; with fewer items the biased one is used.
    """
    x = x.double() - x.double().mean(0, keepdim=True)
    y = y.double() - y.double().mean(0, keepdim=True)
    if debiased and x.shape[0] >= 4:
        gram_x, gram_y = x @ x.T, y @ y.T
        xy = _hsic_unbiased(gram_x, gram_y)
        xx = _hsic_unbiased(gram_x, gram_x)
        yy = _hsic_unbiased(gram_y, gram_y)
        denominator = (xx * yy).clamp_min(0).sqrt()
        return float(xy / denominator) if denominator > 0 else float("nan")
    numerator = torch.linalg.matrix_norm(y.T @ x) ** 2
    denominator = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(numerator / denominator) if denominator > 0 else float("nan")


def derangements(n: int, count: int, seed: int = 0) -> list[list[int]]:
    """Up to count random permutations of range(n) that move every item (the shuffled pairing)."""
    generator = torch.Generator().manual_seed(seed)
    found: list[list[int]] = []
    for _ in range(count * 50):
        if len(found) >= count or n < 2:
            break
        order = torch.randperm(n, generator=generator).tolist()
        if all(order[i] != i for i in range(n)):
            found.append(order)
    return found


def shuffled_cka(x: torch.Tensor, y: torch.Tensor, *, permutations: int = 20, seed: int = 0) -> float:
    """Mean linear CKA after pairing each item of x with a different item of y: the chance level."""
    orders = derangements(x.shape[0], permutations, seed)
    if not orders:
        return float("nan")
    return sum(linear_cka(x, y[order]) for order in orders) / len(orders)


def language_groups(codes: Sequence[str]) -> dict[str, list[int]]:
    """Row indices per language, languages in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for index, code in enumerate(codes):
        groups.setdefault(code, []).append(index)
    return groups


def language_pair_scores(
    pooled: torch.Tensor, codes: Sequence[str], *, permutations: int = 20
) -> tuple[list[LanguagePairScore], int, list[str]]:
    """Per layer and language pair of a parallel set: matched vs shuffled cosine, CKA vs shuffled CKA.

    pooled: (layers, n, hidden), row i in language codes[i]. A set is parallel when it has two or more
    languages with the same number (2 or more) of sentences each, the i-th sentences translations of each
    other. Returns the scores, the sentences per language (0 if not parallel) and notes for the reader.
    """
    groups = language_groups(codes)
    sizes = {len(members) for members in groups.values()}
    if not (len(groups) >= 2 and len(sizes) == 1 and min(sizes) >= 2):
        note = (
            "CKA needs a parallel set: two or more languages with the same number of sentences, "
            "the i-th sentence of each language a translation of the others."
        )
        return [], 0, [note]
    size = sizes.pop()
    notes = []
    if size < 3:
        notes.append("CKA needs at least 3 sentences per language (with 2 it is always 1); it is left out.")
    elif size < 4:
        notes.append(
            f"CKA from {size} sentences per language uses the biased estimator; 4 or more give the debiased one."
        )
    off_diagonal = ~torch.eye(size, dtype=torch.bool)
    order = list(groups)
    scores = []
    for layer, vectors in enumerate(pooled):
        for i, a in enumerate(order):
            for b in order[i + 1 :]:
                x, y = vectors[groups[a]], vectors[groups[b]]
                between = cross_cosine(x, y)
                scores.append(
                    LanguagePairScore(
                        layer=layer,
                        language_a=a,
                        language_b=b,
                        matched_cosine=float(between.diagonal().mean()),
                        shuffled_cosine=float(between[off_diagonal].mean()),
                        cka=linear_cka(x, y) if size >= 3 else math.nan,
                        shuffled_cka=shuffled_cka(x, y, permutations=permutations) if size >= 3 else math.nan,
                    )
                )
    return scores, size, notes


def _nested(tensor: torch.Tensor) -> list:
    return (
        [[round(float(v), 6) for v in row] for row in tensor]
        if tensor.dim() == 2
        else [round(float(v), 6) for v in tensor]
    )


@dataclass
class AdapterComparison:
    """Result of Explorer.compare_adapters: one text through several adapters, layer by layer.

    Arrays are indexed [layer][language][...]; layer 0 is the embedding output (no adapter yet).
    """

    model: str
    text: str
    languages: list[str]
    reference: str
    tokens: list[str]
    pooled_cosine: torch.Tensor  # (layers, k, k) cosine of mean-pooled states
    centred_cosine: torch.Tensor  # (layers, k, k) per-token centred cosine, averaged over tokens
    token_cosine: torch.Tensor  # (layers, k, tokens) raw cosine to the reference adapter
    token_cosine_centred: torch.Tensor  # (layers, k, tokens)

    @property
    def layers(self) -> list[int]:
        return list(range(self.pooled_cosine.shape[0]))

    def reference_curve(self, centred: bool = False) -> torch.Tensor:
        """(layers, k): each adapter's pooled similarity to the reference adapter per layer."""
        matrix = self.centred_cosine if centred else self.pooled_cosine
        return matrix[:, :, self.languages.index(self.reference)]

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "text": self.text,
            "languages": list(self.languages),
            "reference": self.reference,
            "layers": self.layers,
            "tokens": list(self.tokens),
            "pooled_cosine": [_nested(m) for m in self.pooled_cosine],
            "centred_cosine": [_nested(m) for m in self.centred_cosine],
            "token_cosine_to_reference": [_nested(m) for m in self.token_cosine],
            "token_cosine_to_reference_centred": [_nested(m) for m in self.token_cosine_centred],
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per (layer, language pair): pooled raw cosine and centred cosine."""
        rows = [
            {
                "layer": layer,
                "language_a": a,
                "language_b": b,
                "pooled_cosine": float(self.pooled_cosine[layer, i, j]),
                "centred_cosine": float(self.centred_cosine[layer, i, j]),
            }
            for layer in self.layers
            for i, a in enumerate(self.languages)
            for j, b in enumerate(self.languages)
        ]
        return pd.DataFrame(rows)

    def pairs_at(self, layer: int) -> pd.DataFrame:
        """One row per unordered pair of different adapters at one layer (no self-pairs, no mirror rows), the
        least similar first: the summary a page can show; to_frame() holds every layer and order."""
        rows = [
            {
                "language_a": a,
                "language_b": b,
                "pooled_cosine": float(self.pooled_cosine[layer, i, j]),
                "centred_cosine": float(self.centred_cosine[layer, i, j]),
            }
            for i, a in enumerate(self.languages)
            for j, b in enumerate(self.languages)
            if i < j
        ]
        frame = pd.DataFrame(rows, columns=["language_a", "language_b", "pooled_cosine", "centred_cosine"])
        return frame.sort_values("pooled_cosine", kind="stable").reset_index(drop=True)


@dataclass
class LanguagePairScore:
    """Parallel sentences of two languages compared at one layer, with the shuffled baseline."""

    layer: int
    language_a: str
    language_b: str
    matched_cosine: float  # mean cosine of translation pairs
    shuffled_cosine: float  # mean cosine of non-translation pairs (baseline)
    cka: float
    shuffled_cka: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class SentenceComparison:
    """Result of Explorer.compare_sentences: each sentence through its own language's adapter."""

    model: str
    pairs: list[tuple[str, str]]
    pooled_cosine: torch.Tensor  # (layers, n, n)
    centred_cosine: torch.Tensor  # (layers, n, n) after removing the mean over the n sentences
    parallel_size: int  # sentences per language when the set is parallel, else 0
    scores: list[LanguagePairScore] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def layers(self) -> list[int]:
        return list(range(self.pooled_cosine.shape[0]))

    @property
    def labels(self) -> list[str]:
        counts: dict[str, int] = {}
        names = []
        for code, _ in self.pairs:
            counts[code] = counts.get(code, 0) + 1
            names.append(f"{code} #{counts[code]}")
        return names

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "pairs": [[code, text] for code, text in self.pairs],
            "labels": self.labels,
            "layers": self.layers,
            "pooled_cosine": [_nested(m) for m in self.pooled_cosine],
            "centred_cosine": [_nested(m) for m in self.centred_cosine],
            "parallel_size": self.parallel_size,
            "scores": [score.to_dict() for score in self.scores],
            "notes": list(self.notes),
        }

    def to_frame(self) -> pd.DataFrame:
        """Per (layer, language pair): matched vs shuffled cosine, CKA vs shuffled CKA."""
        columns = ["layer", "language_a", "language_b", "matched_cosine", "shuffled_cosine", "cka", "shuffled_cka"]
        return pd.DataFrame([score.to_dict() for score in self.scores], columns=columns)
