"""Token rows as tensors: right-padding and which positions hold text (pure torch, no models)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch

XLMR_PAD_ID = 1  # <pad> in XLM-R's vocabulary, and so in every X-MOD tokenizer


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int = XLMR_PAD_ID) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token rows to the longest; returns (input_ids, attention_mask), both (rows, width) long."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        attention[i, : len(row)] = 1
    return ids, attention


def content_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor, structural: Collection[int]) -> torch.Tensor:
    """True where a position holds text: not padding and not a structural token such as <s> or </s>."""
    special = torch.tensor(sorted(structural), dtype=input_ids.dtype, device=input_ids.device)
    return attention_mask.bool() & ~torch.isin(input_ids, special)


def length_batches(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Row indices grouped into forward passes: shortest rows first, each pass holding at most budget tokens
    once padded to its longest row (a row longer than budget gets a pass of its own). Equal lengths keep
    their order, so the passes depend only on the rows, never on the machine or the process."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    passes: list[list[int]] = []
    current: list[int] = []
    for index in order:
        if current and (len(current) + 1) * lengths[index] > budget:
            passes.append(current)
            current = []
        current.append(index)
    if current:
        passes.append(current)
    return passes
