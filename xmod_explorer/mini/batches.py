"""Language-balanced training batches: packed rows, sorted by language, one lang id per row.

Every batch is a pure function of (seed, step), so a resumed run sees exactly the batches the
interrupted one would have seen, with no data-loader state to save.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from xmod_explorer.mini.mlm import mask_tokens

BOS, PAD, EOS = 0, 1, 2


@dataclass
class Batch:
    """Model inputs for one step; rows are grouped by language in config order."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    lang_ids: torch.Tensor
    labels: torch.Tensor


def tokenize_paragraphs(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_tokens: int) -> list[np.ndarray]:
    """Token ids of each paragraph without <s>/</s>, cut to max_tokens; empty results dropped."""
    encoded = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=max_tokens)["input_ids"]
    return [np.asarray(ids, dtype=np.int64) for ids in encoded if ids]


def pack_row(paragraphs: Sequence[np.ndarray], order: np.ndarray, seq_len: int) -> list[int]:
    """Fill one row "<s> a </s> b </s> ..." with paragraphs in the given order while they fit."""
    row = [BOS]
    for index in order:
        ids = paragraphs[index]
        if len(row) > 1 and len(row) + len(ids) + 1 > seq_len:
            break
        row.extend(ids[: seq_len - 2].tolist())
        row.append(EOS)
    return row


def pad_rows(rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad rows to the longest; returns (input_ids, attention_mask)."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
    return ids, attention


def balanced_batch(
    data: Sequence[Sequence[np.ndarray]],
    rows_per_language: int,
    seq_len: int,
    mask_id: int,
    seed: int,
    step: int,
    mask_prob: float = 0.15,
) -> Batch:
    """Batch for one step: rows_per_language packed rows for each language index in data, masked."""
    rng = np.random.default_rng([seed, step])
    rows: list[list[int]] = []
    lang_ids: list[int] = []
    for lang_id, paragraphs in enumerate(data):
        for _ in range(rows_per_language):
            # Enough candidates for any row; short paragraphs are ~10 tokens.
            order = rng.integers(0, len(paragraphs), size=seq_len // 4 + 1)
            rows.append(pack_row(paragraphs, order, seq_len))
            lang_ids.append(lang_id)
    input_ids, attention_mask = pad_rows(rows)
    corrupted, labels = mask_tokens(input_ids, mask_id, rng, prob=mask_prob)
    return Batch(corrupted, attention_mask, torch.tensor(lang_ids), labels)
