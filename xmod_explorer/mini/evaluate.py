"""Held-out masked-LM quality of every language's text under every language's adapter.

Row = language of the text, column = adapter used. If the adapters mean something, the
matching adapter (the diagonal) is the best one in every row.

Accuracies come with Wilson 95% intervals over masked tokens. Perplexities are exp of the mean
negative log-likelihood per masked token, pooled over the tokens of the cells concerned (never a
mean of per-cell perplexities, which the rare very unsure cells would dominate).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, XmodForMaskedLM

from xmod_explorer.mini.corpus import read_split
from xmod_explorer.mini.mlm import mask_tokens, masked_predictions
from xmod_explorer.stats import wilson_interval
from xmod_explorer.tokens import pad_rows

MAX_TOKENS = 128
MASK_ROUNDS = 2  # each paragraph is masked this many times, with different positions
EVALUATION_SAMPLE = 300  # held-out paragraphs per language in the matrix (fewer where a language has fewer)


@dataclass
class MaskedSet:
    """One language's held-out rows with fixed masks, ready to score under any adapter."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    @property
    def masked(self) -> int:
        """Number of masked positions."""
        return int((self.labels != -100).sum())


@dataclass
class AdapterMatrix:
    """Masked-token accuracy (%) and perplexity for each (text language, adapter) pair.

    ``correct`` and ``nll`` (summed over the row's ``masked_tokens``) are the raw counts behind
    each cell, from which intervals and pooled perplexities are computed.
    """

    languages: list[str]
    adapters: list[str]
    accuracy: list[list[float]]
    perplexity: list[list[float]]
    masked_tokens: list[int]
    sentences: list[int]
    correct: list[list[int]]
    nll: list[list[float]]

    def to_dict(self) -> dict:
        """Plain JSON-ready dict, with each cell's Wilson 95% interval (accuracy_ci95, in %)."""
        return {**asdict(self), "accuracy_ci95": self.accuracy_intervals()}

    def to_frame(self, metric: str = "accuracy") -> pd.DataFrame:
        """Languages x adapters table of one metric ("accuracy" or "perplexity")."""
        return pd.DataFrame(getattr(self, metric), index=self.languages, columns=self.adapters)

    def accuracy_intervals(self) -> list[list[list[float]]]:
        """Wilson 95% interval [low, high] (%) of each cell's accuracy, over the row's masked tokens."""
        return [
            [_percent_interval(hits, total) for hits in row] for row, total in zip(self.correct, self.masked_tokens)
        ]

    def best_adapters(self) -> list[str]:
        """For each text language, the adapter with the highest accuracy (ties: lowest perplexity)."""
        best = []
        for acc, ppl in zip(self.accuracy, self.perplexity):
            best.append(self.adapters[max(range(len(acc)), key=lambda j: (acc[j], -ppl[j]))])
        return best

    def pooled(self, cells: Sequence[tuple[int, int]]) -> dict:
        """Accuracy (%, Wilson 95% interval) and perplexity pooled over the masked tokens of the given cells."""
        hits = sum(self.correct[i][j] for i, j in cells)
        total = sum(self.masked_tokens[i] for i, _ in cells)
        nll = sum(self.nll[i][j] for i, j in cells)
        return {
            "accuracy": round(100 * hits / max(total, 1), 2),
            "accuracy_ci95": _percent_interval(hits, total),
            "perplexity": round(math.exp(nll / max(total, 1)), 2),
            "tokens": total,
        }

    def summary(self, languages: Sequence[str] | None = None) -> dict:
        """Matching vs mismatched adapters over the given languages (rows and columns; default all).

        Pooled figures weight every masked token alike; the mismatched ones count each token once per
        other adapter, so their interval treats those repeats as independent and is too narrow. The
        per-language means give every language the same weight.
        """
        chosen = [lang for lang in self.languages if languages is None or lang in languages]
        rows = [self.languages.index(lang) for lang in chosen]
        columns = [self.adapters.index(lang) for lang in chosen]
        diagonal = [(i, self.adapters.index(self.languages[i])) for i in rows]
        off = [(i, j) for i in rows for j in columns if self.adapters[j] != self.languages[i]]
        best = self.best_adapters()
        return {
            "languages": chosen,
            "matching": self.pooled(diagonal),
            "mismatched": self.pooled(off),
            "mean_accuracy_matching": round(float(np.mean([self.accuracy[i][j] for i, j in diagonal])), 2),
            "mean_accuracy_mismatched": round(float(np.mean([self.accuracy[i][j] for i, j in off])), 2),
            "matching_best_in_every_row": all(best[i] == self.languages[i] for i in rows),
            "rows_where_another_adapter_wins": {
                self.languages[i]: best[i] for i in rows if best[i] != self.languages[i]
            },
        }


def _percent_interval(successes: int, trials: int) -> list[float]:
    """Wilson 95% interval in percent, rounded to 2 decimals."""
    low, high = wilson_interval(successes, trials)
    return [round(100 * low, 2), round(100 * high, 2)]


def masked_set(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], seed: int, rounds: int = 1, prob: float = 0.15
) -> MaskedSet:
    """Tokenise texts (<s> ... </s>, at most MAX_TOKENS) and mask them ``rounds`` times with a fixed seed.

    Rows are sorted by length so that batches of neighbouring rows carry little padding.
    """
    encoded = tokenizer(list(texts), truncation=True, max_length=MAX_TOKENS)["input_ids"]
    input_ids, attention_mask = pad_rows(sorted(encoded, key=len))
    rng = np.random.default_rng(seed)
    copies = [
        mask_tokens(input_ids, tokenizer.mask_token_id, rng, prob=prob, keep_and_random=False) for _ in range(rounds)
    ]
    return MaskedSet(
        torch.cat([ids for ids, _ in copies]),
        attention_mask.repeat(rounds, 1),
        torch.cat([labels for _, labels in copies]),
    )


@torch.no_grad()
def score(model: XmodForMaskedLM, data: MaskedSet, lang_id: int, batch_size: int = 64) -> tuple[int, float, int]:
    """(correct top-1 predictions, summed NLL, masked count) for data under one adapter."""
    correct, nll, count = 0, 0.0, 0
    for start in range(0, len(data.input_ids), batch_size):
        rows = slice(start, start + batch_size)
        width = int(data.attention_mask[rows].sum(1).max())
        labels = data.labels[rows, :width]
        if not (labels != -100).any():
            continue
        lang_ids = torch.full((len(labels),), lang_id, dtype=torch.long)
        ids, attention = data.input_ids[rows, :width], data.attention_mask[rows, :width]
        predictions = masked_predictions(model, ids, attention, lang_ids, labels)
        logits = predictions.logits.float()
        correct += int((logits.argmax(-1) == predictions.targets).sum())
        nll += float(torch.nn.functional.cross_entropy(logits, predictions.targets, reduction="sum"))
        count += len(predictions.targets)
    return correct, nll, count


def heldout_texts(
    corpus: str | Path, languages: Sequence[str], max_per_language: int, seed: int = 0
) -> dict[str, list[str]]:
    """A fixed random sample of each language's held-out paragraphs."""
    sample = {}
    for language in languages:
        texts = read_split(corpus, language, "heldout")
        random.Random(seed).shuffle(texts)
        sample[language] = texts[:max_per_language]
    return sample


def adapter_matrix(
    model: XmodForMaskedLM,
    tokenizer: PreTrainedTokenizerBase,
    texts: dict[str, list[str]],
    *,
    seed: int = 0,
    rounds: int = MASK_ROUNDS,
    diagonal_only: bool = False,
) -> AdapterMatrix:
    """Score each language's texts under each adapter of the model (or only its own, if diagonal_only)."""
    model.eval()
    adapters = list(model.config.languages)
    languages = [lang for lang in adapters if lang in texts]
    accuracy, perplexity, masked, sentences, hits, nlls = [], [], [], [], [], []
    for row, language in enumerate(languages):
        data = masked_set(tokenizer, texts[language], seed=seed * 1000 + row, rounds=rounds)
        acc_row, ppl_row, hit_row, nll_row = [], [], [], []
        for lang_id, adapter in enumerate(adapters):
            if diagonal_only and adapter != language:
                acc_row.append(float("nan"))
                ppl_row.append(float("nan"))
                hit_row.append(0)
                nll_row.append(float("nan"))
                continue
            correct, nll, count = score(model, data, lang_id)
            acc_row.append(round(100 * correct / max(count, 1), 2))
            ppl_row.append(round(math.exp(nll / max(count, 1)), 2))
            hit_row.append(correct)
            nll_row.append(round(nll, 4))
        accuracy.append(acc_row)
        perplexity.append(ppl_row)
        hits.append(hit_row)
        nlls.append(nll_row)
        masked.append(data.masked)
        sentences.append(len(texts[language]))
    return AdapterMatrix(languages, adapters, accuracy, perplexity, masked, sentences, hits, nlls)


def tokenizer_stats(tokenizer: PreTrainedTokenizerBase, texts: dict[str, list[str]]) -> dict[str, dict]:
    """Per language: characters per token and the share of <unk> tokens (%) in the given texts."""
    stats = {}
    for language, paragraphs in texts.items():
        ids = [i for row in tokenizer(paragraphs, add_special_tokens=False)["input_ids"] for i in row]
        stats[language] = {
            "chars_per_token": round(sum(len(t) for t in paragraphs) / max(len(ids), 1), 2),
            "unk_percent": round(100 * ids.count(tokenizer.unk_token_id) / max(len(ids), 1), 3),
        }
    return stats


def evaluate_model(
    model_dir: str | Path, corpus: str | Path, *, max_per_language: int = EVALUATION_SAMPLE, seed: int = 0
) -> AdapterMatrix:
    """Compute the full matrix for a saved model, print it, and write <model_dir>/eval.json.

    The summary covers the languages the model was pre-trained on; each language added post hoc gets
    its own entry: its text under its adapter against every pre-trained adapter.
    """
    torch.manual_seed(seed)
    model = XmodForMaskedLM.from_pretrained(str(model_dir), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    texts = heldout_texts(corpus, model.config.languages, max_per_language, seed)
    matrix = adapter_matrix(model, tokenizer, texts, seed=seed)
    added = list(getattr(model.config, "post_hoc_languages", None) or [])
    summary = matrix.summary([lang for lang in matrix.languages if lang not in added])
    post_hoc = {language: post_hoc_summary(matrix, language, summary["languages"]) for language in added}
    words = whole_word_results(model, tokenizer, corpus, post_hoc)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(matrix.to_frame("accuracy").round(1))
    print(json.dumps({"summary": summary, "post_hoc": post_hoc, "whole_words": words}, indent=2))
    result = {
        "heldout_sample": {
            "max_per_language": max_per_language,
            "seed": seed,
            "mask_prob": 0.15,
            "mask_rounds": MASK_ROUNDS,
        },
        "summary": summary,
        "post_hoc": post_hoc,
        "whole_words": words,
        "tokenizer_on_heldout": tokenizer_stats(tokenizer, {k: read_split(corpus, k, "heldout") for k in texts}),
        **matrix.to_dict(),
    }
    Path(model_dir, "eval.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return matrix


def post_hoc_summary(matrix: AdapterMatrix, language: str, pretrained: Sequence[str]) -> dict:
    """An added language's text under its own adapter against each pre-trained adapter, with intervals.

    ``beats_every_original`` holds when the own adapter's interval lies wholly above every original
    adapter's interval (a stricter test than comparing the point estimates).
    """
    row = matrix.languages.index(language)
    intervals = matrix.accuracy_intervals()[row]
    own = matrix.adapters.index(language)
    others = {code: matrix.adapters.index(code) for code in pretrained}
    best_other = max(others, key=lambda code: matrix.accuracy[row][others[code]])
    own_diagonal = matrix.summary(pretrained)
    return {
        "masked_tokens": matrix.masked_tokens[row],
        "own_adapter": {
            "accuracy": matrix.accuracy[row][own],
            "accuracy_ci95": intervals[own],
            "perplexity": matrix.perplexity[row][own],
        },
        "original_adapters": {
            code: {
                "accuracy": matrix.accuracy[row][j],
                "accuracy_ci95": intervals[j],
                "perplexity": matrix.perplexity[row][j],
            }
            for code, j in others.items()
        },
        "best_original_adapter": best_other,
        "beats_every_original": all(intervals[own][0] > intervals[j][1] for j in others.values()),
        "original_languages_own_adapter": own_diagonal["matching"],
        "original_languages_own_adapter_range": [
            min(matrix.accuracy[matrix.languages.index(code)][matrix.adapters.index(code)] for code in pretrained),
            max(matrix.accuracy[matrix.languages.index(code)][matrix.adapters.index(code)] for code in pretrained),
        ],
    }


def whole_word_accuracy(
    model: XmodForMaskedLM, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], language: str, adapter: str
) -> dict:
    """Top-1 accuracy (%, Wilson 95% interval) on whole words masked one at a time in readable sentences.

    The words are those the example sentences are chosen from: one vocabulary piece each, at least four
    letters (ja/zh: two characters), not a product name. Unlike per-token accuracy over random pieces, this
    does not reward a tokenizer for cutting a language into small, easily guessed fragments; a language the
    tokenizer splits finely also has few such words, which ``candidates`` shows.
    """
    from xmod_explorer.mini.examples import answer_token, fill_probabilities, mask_candidates, readable

    candidates = [e for text in texts if readable(text, language) for e in mask_candidates(tokenizer, text, language)]
    correct = 0
    with torch.no_grad():
        for start in range(0, len(candidates), 64):
            part = candidates[start : start + 64]
            _, top = fill_probabilities(model, tokenizer, part, adapter)
            correct += sum(int(t) == answer_token(tokenizer, e) for t, e in zip(top.tolist(), part))
    return {
        "adapter": adapter,
        "candidates": len(candidates),
        "correct": correct,
        "accuracy": round(100 * correct / max(len(candidates), 1), 2),
        "accuracy_ci95": _percent_interval(correct, len(candidates)),
    }


def whole_word_results(
    model: XmodForMaskedLM, tokenizer: PreTrainedTokenizerBase, corpus: str | Path, post_hoc: dict[str, dict]
) -> dict[str, list[dict]]:
    """Whole-word accuracy on each language's held-out split under its own adapter, and, for a language added
    post hoc, also under the original adapter that does best on its text per token."""
    model.eval()
    results = {}
    for language in model.config.languages:
        texts = read_split(corpus, language, "heldout")
        adapters = [language]
        if language in post_hoc:
            adapters.append(post_hoc[language]["best_original_adapter"])
        results[language] = [whole_word_accuracy(model, tokenizer, texts, language, adapter) for adapter in adapters]
    return results
