"""Held-out masked-LM quality of every language's text under every language's adapter.

Row = language of the text, column = adapter used. If the adapters mean something, the
matching adapter (the diagonal) is the best one in every row.
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
from xmod_explorer.tokens import pad_rows

MAX_TOKENS = 128
MASK_ROUNDS = 2  # each paragraph is masked this many times, with different positions


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
    """Masked-token accuracy (%) and perplexity for each (text language, adapter) pair."""

    languages: list[str]
    adapters: list[str]
    accuracy: list[list[float]]
    perplexity: list[list[float]]
    masked_tokens: list[int]
    sentences: list[int]

    def to_dict(self) -> dict:
        """Plain JSON-ready dict."""
        return asdict(self)

    def to_frame(self, metric: str = "accuracy") -> pd.DataFrame:
        """Languages x adapters table of one metric ("accuracy" or "perplexity")."""
        return pd.DataFrame(getattr(self, metric), index=self.languages, columns=self.adapters)

    def best_adapters(self) -> list[str]:
        """For each text language, the adapter with the highest accuracy (ties: lowest perplexity)."""
        best = []
        for acc, ppl in zip(self.accuracy, self.perplexity):
            best.append(self.adapters[max(range(len(acc)), key=lambda j: (acc[j], -ppl[j]))])
        return best

    def summary(self) -> dict:
        """Mean diagonal vs off-diagonal accuracy and whether the matching adapter wins every row."""
        diag, off, diag_ppl, off_ppl = [], [], [], []
        for i, language in enumerate(self.languages):
            for j, adapter in enumerate(self.adapters):
                (diag if adapter == language else off).append(self.accuracy[i][j])
                (diag_ppl if adapter == language else off_ppl).append(self.perplexity[i][j])
        best = self.best_adapters()
        return {
            "mean_accuracy_matching": round(float(np.mean(diag)), 2),
            "mean_accuracy_mismatched": round(float(np.mean(off)), 2),
            "mean_perplexity_matching": round(float(np.mean(diag_ppl)), 2),
            "mean_perplexity_mismatched": round(float(np.mean(off_ppl)), 2),
            "matching_best_in_every_row": all(b == lang for b, lang in zip(best, self.languages)),
            "rows_where_another_adapter_wins": {lang: b for lang, b in zip(self.languages, best) if b != lang},
        }


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
    accuracy, perplexity, masked, sentences = [], [], [], []
    for row, language in enumerate(languages):
        data = masked_set(tokenizer, texts[language], seed=seed * 1000 + row, rounds=rounds)
        acc_row, ppl_row = [], []
        for lang_id, adapter in enumerate(adapters):
            if diagonal_only and adapter != language:
                acc_row.append(float("nan"))
                ppl_row.append(float("nan"))
                continue
            correct, nll, count = score(model, data, lang_id)
            acc_row.append(round(100 * correct / max(count, 1), 2))
            ppl_row.append(round(math.exp(nll / max(count, 1)), 2))
        accuracy.append(acc_row)
        perplexity.append(ppl_row)
        masked.append(data.masked)
        sentences.append(len(texts[language]))
    return AdapterMatrix(languages, adapters, accuracy, perplexity, masked, sentences)


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
    model_dir: str | Path, corpus: str | Path, *, max_per_language: int = 300, seed: int = 0
) -> AdapterMatrix:
    """Compute the full matrix for a saved model, print it, and write <model_dir>/eval.json."""
    torch.manual_seed(seed)
    model = XmodForMaskedLM.from_pretrained(str(model_dir), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    texts = heldout_texts(corpus, model.config.languages, max_per_language, seed)
    matrix = adapter_matrix(model, tokenizer, texts, seed=seed)
    summary = matrix.summary()
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(matrix.to_frame("accuracy").round(1))
    print(json.dumps(summary, indent=2))
    result = {
        "heldout_sample": {
            "max_per_language": max_per_language,
            "seed": seed,
            "mask_prob": 0.15,
            "mask_rounds": MASK_ROUNDS,
        },
        "summary": summary,
        "tokenizer_on_heldout": tokenizer_stats(tokenizer, {k: read_split(corpus, k, "heldout") for k in texts}),
        **matrix.to_dict(),
    }
    Path(model_dir, "eval.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return matrix
