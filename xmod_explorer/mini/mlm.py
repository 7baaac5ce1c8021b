"""The masked-language-model objective: choose masked positions, and score only those.

The LM head maps to the whole vocabulary, so running it on every token would cost more than
the encoder; we gather the hidden states at masked positions and apply ``lm_head`` there only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import XmodForMaskedLM

IGNORE = -100
SPECIAL_IDS = (0, 1, 2, 3)  # <s> <pad> </s> <unk>: never masked, never drawn as random tokens


def mask_tokens(
    input_ids: torch.Tensor,
    mask_id: int,
    rng: np.random.Generator,
    *,
    prob: float = 0.15,
    keep_and_random: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: pick ``prob`` of the ordinary tokens; returns (corrupted ids, labels with -100 elsewhere).

    With ``keep_and_random`` the picks become <mask> 80%, a random token 10%, unchanged 10%;
    without it every pick becomes <mask> (for evaluation).
    """
    ids = input_ids.numpy()
    ordinary = ~np.isin(ids, SPECIAL_IDS) & (ids != mask_id)
    picked = ordinary & (rng.random(ids.shape) < prob)
    labels = np.where(picked, ids, IGNORE)
    corrupted = ids.copy()
    if keep_and_random:
        roll = rng.random(ids.shape)
        corrupted[picked & (roll < 0.8)] = mask_id
        randomised = picked & (roll >= 0.8) & (roll < 0.9)
        corrupted[randomised] = rng.integers(len(SPECIAL_IDS), mask_id, size=int(randomised.sum()))
    else:
        corrupted[picked] = mask_id
    return torch.from_numpy(corrupted), torch.from_numpy(labels)


@dataclass
class MaskedPredictions:
    """Vocabulary logits at the masked positions only, with their targets and batch rows."""

    logits: torch.Tensor  # (n_masked, vocab)
    targets: torch.Tensor  # (n_masked,)
    rows: torch.Tensor  # (n_masked,) row index of each masked position


def masked_predictions(
    model: XmodForMaskedLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    lang_ids: torch.Tensor,
    labels: torch.Tensor,
    position_ids: torch.Tensor | None = None,
) -> MaskedPredictions:
    """Run the encoder with one language adapter per row, then the LM head at labelled positions."""
    hidden = model.roberta(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, lang_ids=lang_ids
    ).last_hidden_state
    rows, cols = (labels != IGNORE).nonzero(as_tuple=True)
    logits = model.lm_head(hidden[rows, cols])
    return MaskedPredictions(logits=logits, targets=labels[rows, cols], rows=rows)
