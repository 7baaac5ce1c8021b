"""Language-balanced training batches: packed rows, sorted by language, one lang id per row.

A row holds several paragraphs "<s> a </s><s> b </s>...", but each paragraph attends only to
itself and has its own positions (from 2, as RoBERTa counts), so the model sees exactly what it
sees at inference (one text per row) with no compute spent on padding.
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
    attention_mask: torch.Tensor  # (rows, width, width): which token may attend to which
    position_ids: torch.Tensor
    lang_ids: torch.Tensor
    labels: torch.Tensor


def tokenize_paragraphs(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_tokens: int) -> list[np.ndarray]:
    """Token ids of each paragraph without <s>/</s>, cut to max_tokens; empty results dropped."""
    encoded = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=max_tokens)["input_ids"]
    return [np.asarray(ids, dtype=np.int64) for ids in encoded if ids]


def pack_row(paragraphs: Sequence[np.ndarray], order: np.ndarray, seq_len: int) -> list[list[int]]:
    """Paragraphs "<s> text </s>", taken in the given order while they fit in seq_len tokens."""
    row: list[list[int]] = []
    used = 0
    for index in order:
        ids = paragraphs[index][: seq_len - 2].tolist()
        if row and used + len(ids) + 2 > seq_len:
            break
        row.append([BOS, *ids, EOS])
        used += len(ids) + 2
    return row


def packed_inputs(rows: Sequence[Sequence[Sequence[int]]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, block-diagonal 3-D attention mask, position ids) for rows of packed paragraphs."""
    width = max(sum(len(p) for p in row) for row in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    segment = torch.zeros((len(rows), width), dtype=torch.long)
    positions = torch.full((len(rows), width), PAD, dtype=torch.long)  # RoBERTa's padding position
    for i, row in enumerate(rows):
        start = 0
        for number, paragraph in enumerate(row, start=1):
            end = start + len(paragraph)
            ids[i, start:end] = torch.tensor(paragraph)
            segment[i, start:end] = number
            positions[i, start:end] = torch.arange(PAD + 1, PAD + 1 + len(paragraph))
            start = end
    same = segment.unsqueeze(2) == segment.unsqueeze(1)
    real = (segment > 0).unsqueeze(1)
    # Padding tokens attend to themselves only, so no softmax row is empty.
    attention = (same & real) | torch.eye(width, dtype=torch.bool).unsqueeze(0)
    return ids, attention.long(), positions


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
    rows: list[list[list[int]]] = []
    lang_ids: list[int] = []
    for lang_id, paragraphs in enumerate(data):
        for _ in range(rows_per_language):
            # Enough candidates for any row; short paragraphs are ~10 tokens.
            order = rng.integers(0, len(paragraphs), size=seq_len // 4 + 1)
            rows.append(pack_row(paragraphs, order, seq_len))
            lang_ids.append(lang_id)
    input_ids, attention_mask, position_ids = packed_inputs(rows)
    corrupted, labels = mask_tokens(input_ids, mask_id, rng, prob=mask_prob)
    return Batch(corrupted, attention_mask, position_ids, torch.tensor(lang_ids), labels)
