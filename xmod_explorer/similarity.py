"""Hidden-state similarity: pooling, raw and centred cosine, linear CKA; and their result objects.

Raw cosine between transformer states is high even for unrelated inputs (a few dominant
dimensions), so every comparison here also offers a centred variant and, for parallel sentences,
permutation tests against random re-pairings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import pandas as pd
import torch

from xmod_explorer.stats import (
    ALPHA,
    PERMUTATIONS,
    PermutationPlan,
    null_intervals,
    permutation_note,
    permutation_p_values,
    permutation_plan,
)


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


def token_cosine(states: torch.Tensor, reference: int, *, centre: torch.Tensor | None = None) -> torch.Tensor:
    """(adapters, tokens, hidden) -> (adapters, tokens): each token's cosine to the reference adapter's.

    centre: a (hidden,) vector subtracted from every state first (the centred variant)."""
    values = states.double()
    if centre is not None:
        values = values - centre.double()
    unit = torch.nn.functional.normalize(values, dim=-1)
    return (unit * unit[reference : reference + 1]).sum(-1)


@dataclass
class Centring:
    """What every centred cosine subtracts: one mean sentence vector per layer, a property of the loaded model.

    It is the mean over a fixed reference set (the shipped parallel sentences in the languages the model
    has, each through its own language's adapter) of the sentence vectors (mean over each text's tokens),
    so a centred value never depends on which other adapters or sentences a request chooses.
    """

    means: torch.Tensor  # (layers + 1, hidden) float64
    languages: list[str]
    sentences: int
    source: str = "assets/examples/parallel.tsv"

    def describe(self) -> str:
        return (
            f"the mean sentence vector of {self.sentences} reference sentences ({self.source}, in "
            f"{', '.join(self.languages)}, each through its own language's adapter), one per layer"
        )

    def to_dict(self) -> dict:
        return {
            "subtracted": "mean sentence vector per layer, computed once per loaded model",
            "source": self.source,
            "languages": list(self.languages),
            "sentences": self.sentences,
        }


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


# Elements of permuted Gram matrices held at once: bounds memory for large n and many permutations.
PERMUTED_ELEMENTS = 1 << 22


@dataclass
class PairedTests:
    """CKA and translation-pair cosine for language pairs at every layer, with their permutation nulls.

    Every tensor is indexed [layer, pair]; the nulls have a last dimension of one value per pairing.
    """

    cosine: torch.Tensor
    cosine_null: torch.Tensor
    cka: torch.Tensor  # nan with fewer than 3 items per language
    cka_null: torch.Tensor


def paired_tests(vectors: torch.Tensor, pairs: Sequence[tuple[int, int]], orders: torch.Tensor) -> PairedTests:
    """Statistics of paired sets and their values under re-pairing, for all layers and pairs at once.

    vectors: (layers, groups, n, hidden), item i of every group paired with item i of every other; pairs:
    (a, b) group indices; orders: (count, n) re-pairings (item i of a with item orders[r, i] of b).
    The cosine is the mean cosine of paired items, uncentred. CKA is linear CKA (debiased for n >= 4,
    biased for n = 3) with each group centred on its own mean. Nothing is recomputed from features per
    re-pairing: it only permutes the rows and columns of b's Gram matrix (and b's cosines), the
    self-similarity terms of CKA's denominator stay as they are, and the one term that changes is a
    dot product of flattened Gram matrices, so every group pair is one batched matrix product.
    """
    vectors = vectors.double()
    layers, groups, n, _ = vectors.shape
    a = torch.tensor([pair[0] for pair in pairs], dtype=torch.long)
    b = torch.tensor([pair[1] for pair in pairs], dtype=torch.long)
    orders = orders.long()
    identity = torch.arange(n)[None]

    units = torch.nn.functional.normalize(vectors, dim=-1).reshape(layers, groups * n, -1)
    every = (units @ units.transpose(1, 2)).view(layers, groups, n, groups, n)  # all sentences of all groups
    between = every.transpose(2, 3)[:, a, b]  # (layers, pairs, n, n): a's items (rows) against b's (columns)
    cosine = between.diagonal(dim1=-2, dim2=-1).mean(-1)
    step = max(1, PERMUTED_ELEMENTS // max(1, layers * len(pairs) * n))
    cosine_null = torch.cat(
        [between[:, :, identity[0], orders[i : i + step]].mean(-1) for i in range(0, len(orders), step)], dim=-1
    )  # (layers, pairs, count)

    if n < 3:
        empty = torch.full((layers, len(pairs)), math.nan, dtype=torch.float64)
        return PairedTests(cosine, cosine_null, empty, empty[..., :0])
    centred = vectors - vectors.mean(2, keepdim=True)
    grams = centred @ centred.transpose(-1, -2)  # (layers, groups, n, n)
    debiased = n >= 4
    if debiased:  # the unbiased HSIC estimator (Song et al., 2012) works on Gram matrices with zeroed diagonals
        grams.diagonal(dim1=-2, dim2=-1).zero_()
    row_sums = grams.sum(-1)  # (layers, groups, n)
    totals = row_sums.sum(-1)  # (layers, groups)
    middle = (totals[:, a] * totals[:, b] / ((n - 1) * (n - 2)))[..., None]  # the debiased estimator's constant term
    # Gram matrices are symmetric: tr(K L) = sum of K * L over the upper triangle, off-diagonal cells twice.
    rows, cols = torch.triu_indices(n, n, offset=1 if debiased else 0)
    weighted = grams[:, :, rows, cols] * torch.where(rows == cols, 1.0, 2.0).double()  # (layers, groups, cells)
    step = max(1, PERMUTED_ELEMENTS // (layers * groups * len(rows)))

    def under(part: torch.Tensor) -> torch.Tensor:
        """(layers, pairs, len(part)): the numerator of CKA (HSIC, or tr(K L) when biased) per re-pairing."""
        chunks = []
        for i in range(0, len(part), step):
            chunk = part[i : i + step]
            cells = (chunk[:, rows] * n + chunk[:, cols]).flatten()  # b's Gram matrix re-paired, as flat indices
            permuted = grams.reshape(layers, groups, n * n).index_select(-1, cells)  # (layers, groups, c * cells)
            flat = permuted.view(layers, groups * len(chunk), len(rows)).transpose(1, 2)
            trace = torch.bmm(weighted, flat).view(layers, groups, groups, len(chunk))
            value = trace[:, a, b]
            if debiased:
                moved = row_sums[:, :, chunk].reshape(layers, groups * len(chunk), n).transpose(1, 2)
                cross = torch.bmm(row_sums, moved).view(layers, groups, groups, len(chunk))[:, a, b]
                value = (value + middle - cross * 2 / (n - 2)) / (n * (n - 3))
            chunks.append(value)
        return torch.cat(chunks, dim=-1)

    if debiased:
        own = (grams * grams).sum((-1, -2)) + totals**2 / ((n - 1) * (n - 2)) - 2 / (n - 2) * (row_sums**2).sum(-1)
        own = own / (n * (n - 3))
        denominator = (own[:, a] * own[:, b]).clamp_min(0).sqrt()
    else:  # n == 3: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) = tr(K L) / (|K|_F |L|_F) for centred X, Y
        norms = torch.linalg.matrix_norm(grams)
        denominator = norms[:, a] * norms[:, b]
    valid = (denominator > 0)[..., None]
    cka_null = torch.where(valid, under(orders) / denominator[..., None], math.nan)
    cka = torch.where(valid, under(identity) / denominator[..., None], math.nan)[..., 0]
    return PairedTests(cosine, cosine_null, cka, cka_null)


def cka_under_pairings(x: torch.Tensor, y: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """Linear CKA of x (n, dx) and y (n, dy) with item i of x paired with item orders[r, i] of y: (count,).

    The same estimator as linear_cka, for every re-pairing at once."""
    return paired_tests(_stacked(x, y), [(0, 1)], orders).cka_null[0, 0]


def paired_cosine_under_pairings(x: torch.Tensor, y: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """Mean cosine of item i of x with item orders[r, i] of y, for every row r: (count,)."""
    return paired_tests(_stacked(x, y), [(0, 1)], orders).cosine_null[0, 0]


def _stacked(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x and y as two groups of one layer; zero columns widen the narrower (no Gram matrix or cosine changes)."""
    width = max(x.shape[1], y.shape[1])
    padded = [torch.nn.functional.pad(v.double(), (0, width - v.shape[1])) for v in (x, y)]
    return torch.stack(padded)[None]


def language_groups(codes: Sequence[str]) -> dict[str, list[int]]:
    """Row indices per language, languages in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for index, code in enumerate(codes):
        groups.setdefault(code, []).append(index)
    return groups


def language_pair_scores(
    pooled: torch.Tensor, codes: Sequence[str], *, permutations: int = PERMUTATIONS, seed: int = 0
) -> tuple[list[LanguagePairScore], int, list[str], PermutationPlan | None]:
    """Per layer and language pair of a parallel set: CKA and translation-pair cosine, each with a
    permutation test against random re-pairings of the sentences.

    pooled: (layers, n, hidden), row i in language codes[i]. A set is parallel when it has two or more
    languages with the same number (2 or more) of sentences each, the i-th sentences translations of each
    other. Every (layer, pair) is tested with the same pairings: all n! permutations when there are at
    most `permutations` of them, else that many random ones (seeded). Returns the scores, the sentences
    per language (0 if not parallel), notes for the reader, and the pairings used.
    """
    groups = language_groups(codes)
    sizes = {len(members) for members in groups.values()}
    if not (len(groups) >= 2 and len(sizes) == 1 and min(sizes) >= 2):
        note = (
            "CKA needs a parallel set: two or more languages with the same number of sentences, "
            "the i-th sentence of each language a translation of the others."
        )
        return [], 0, [note], None
    size = sizes.pop()
    notes = []
    if size < 3:
        notes.append("CKA needs at least 3 sentences per language (with 2 it is always 1); it is left out.")
    elif size < 4:
        notes.append(
            f"CKA from {size} sentences per language uses the biased estimator, which is close to 1 whatever the "
            "sentences; 4 or more give the debiased one."
        )
    small = permutation_note(size, permutations)
    if small:
        notes.append(small)
    plan = permutation_plan(size, permutations, seed)
    order = list(groups)
    pairs = [(i, j) for i in range(len(order)) for j in range(i + 1, len(order))]
    members = torch.tensor([groups[code] for code in order], dtype=torch.long)
    tests = paired_tests(pooled[:, members], pairs, plan.orders)  # pooled[:, members]: (layers, languages, n, h)
    columns = {
        "matched_cosine": tests.cosine,
        "shuffled_cosine": tests.cosine_null.mean(-1),
        "cosine_p_value": permutation_p_values(tests.cosine, tests.cosine_null, plan.exact),
        "cka": tests.cka,
    }
    columns["cosine_null_low"], columns["cosine_null_high"] = null_intervals(tests.cosine_null)
    if size >= 3:
        columns["shuffled_cka"] = tests.cka_null.mean(-1)
        columns["cka_p_value"] = permutation_p_values(tests.cka, tests.cka_null, plan.exact)
        columns["cka_null_low"], columns["cka_null_high"] = null_intervals(tests.cka_null)
    else:
        columns |= dict.fromkeys(("shuffled_cka", "cka_p_value", "cka_null_low", "cka_null_high"), tests.cka)
    values = {name: column.tolist() for name, column in columns.items()}  # one conversion per column, not per cell
    scores = [
        LanguagePairScore(
            layer=layer,
            language_a=order[i],
            language_b=order[j],
            **{name: column[layer][p] for name, column in values.items()},
        )
        for layer in range(pooled.shape[0])
        for p, (i, j) in enumerate(pairs)
    ]
    how = (
        f"all {plan.count:,} pairings (exact)"
        if plan.exact
        else f"{plan.count:,} random pairings (seed {seed}) of the {math.factorial(size):,} possible"
    )
    count = len(scores) * (2 if size >= 3 else 1)
    notes.append(
        f"Permutation tests from {how}. {count} tests in all (layers x language pairs x statistics): with no "
        f"correspondence at all, about {ALPHA * count:.0f} of them would still give p < {ALPHA} by chance."
    )
    return scores, size, notes, plan


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
    centred_cosine: torch.Tensor  # (layers, k, k) the same after subtracting the model's centring vector
    token_cosine: torch.Tensor  # (layers, k, tokens) raw cosine to the reference adapter
    token_cosine_centred: torch.Tensor  # (layers, k, tokens) the same after subtracting the centring vector
    centring: Centring | None = None

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
            "centring": self.centring.to_dict() if self.centring is not None else None,
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
    """Parallel sentences of two languages compared at one layer, each statistic with a permutation test.

    The null re-pairs the i-th sentence of one language with a random sentence of the other. p-values are
    one-sided (how often a re-pairing scores at least as high); the null band holds its middle 95 %.
    CKA centres each language's sentence vectors on that language's own mean (part of CKA's definition);
    the translation-pair cosine uses the vectors uncentred, since its test compares it with re-paired
    sentences in the same space.
    """

    layer: int
    language_a: str
    language_b: str
    matched_cosine: float  # mean cosine of translation pairs, in [-1, 1]
    shuffled_cosine: float  # its mean under random re-pairing (the permutation null's mean)
    cosine_p_value: float
    cosine_null_low: float
    cosine_null_high: float
    cka: float  # linear CKA (debiased for 4 or more sentences per language), nan with fewer than 3
    shuffled_cka: float  # its mean under random re-pairing
    cka_p_value: float
    cka_null_low: float
    cka_null_high: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class SentenceComparison:
    """Result of Explorer.compare_sentences: each sentence through its own language's adapter."""

    model: str
    pairs: list[tuple[str, str]]
    pooled_cosine: torch.Tensor  # (layers, n, n)
    centred_cosine: torch.Tensor  # (layers, n, n) after subtracting the model's centring vector
    parallel_size: int  # sentences per language when the set is parallel, else 0
    scores: list[LanguagePairScore] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    centring: Centring | None = None
    permutations: int = 0  # pairings each permutation test looked at (0: no test)
    exact_test: bool = False  # True when those were every possible pairing

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
            "permutations": self.permutations,
            "exact_test": self.exact_test,
            "notes": list(self.notes),
            "centring": self.centring.to_dict() if self.centring is not None else None,
        }

    def to_frame(self) -> pd.DataFrame:
        """Per (layer, language pair): each statistic, its permutation p-value and the 95 % band of its null."""
        columns = [item.name for item in fields(LanguagePairScore)]
        return pd.DataFrame([score.to_dict() for score in self.scores], columns=columns)
