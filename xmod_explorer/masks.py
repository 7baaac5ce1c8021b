"""Masked-token predictions per language adapter: the math and its result objects."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations

import pandas as pd
import torch

# Rows of the vocabulary projection computed at once: bounds memory at rows x vocab floats.
LOGIT_CHUNK_ROWS = 64


@dataclass
class TokenGuess:
    """One candidate for a mask: the vocabulary piece as readable text, its id and probability."""

    token: str
    token_id: int
    probability: float

    def to_dict(self) -> dict:
        return {"token": self.token, "token_id": self.token_id, "probability": self.probability}


@dataclass
class MaskSlot:
    """Predictions of every chosen adapter for one <mask> (position = index in the token sequence)."""

    position: int
    predictions: dict[str, list[TokenGuess]]
    entropy_bits: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "position": self.position,
            "predictions": {code: [g.to_dict() for g in guesses] for code, guesses in self.predictions.items()},
            "entropy_bits": dict(self.entropy_bits),
        }


@dataclass
class MaskAgreement:
    """How far the adapters agree on one mask. Agreement is on vocabulary ids: two different pieces that read
    alike (say 'new' and '▁new', both shown as 'new') are different predictions."""

    position: int
    top_tokens: dict[str, str]  # each adapter's top prediction as readable text
    all_agree: bool  # every adapter's top prediction is the same vocabulary id
    mean_top_k_overlap: float  # mean pairwise Jaccard overlap of the top-k id sets
    entropy_bits: dict[str, float]
    top_token_ids: dict[str, int] = field(default_factory=dict)

    @property
    def look_alike(self) -> bool:
        """Different top ids that read the same: the text alone would suggest an agreement that is not there."""
        return len(set(self.top_token_ids.values())) > len(set(self.top_tokens.values()))

    def to_dict(self) -> dict:
        return {
            "position": self.position,
            "top_tokens": dict(self.top_tokens),
            "top_token_ids": dict(self.top_token_ids),
            "all_agree": self.all_agree,
            "mean_top_k_overlap": self.mean_top_k_overlap,
            "entropy_bits": dict(self.entropy_bits),
        }


@dataclass
class MaskPrediction:
    """Result of Explorer.predict_masks. auto_language: the adapter that "auto" stood for, if it was asked for."""

    model: str
    text: str
    languages: list[str]
    tokens: list[str]
    masks: list[MaskSlot]
    auto_language: str | None = None

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "text": self.text,
            "languages": list(self.languages),
            "tokens": list(self.tokens),
            "masks": [slot.to_dict() for slot in self.masks],
            "auto_language": self.auto_language,
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per (mask, language, rank)."""
        rows = [
            {
                "mask": number,
                "position": slot.position,
                "language": code,
                "rank": rank,
                "token": guess.token,
                "token_id": guess.token_id,
                "probability": guess.probability,
            }
            for number, slot in enumerate(self.masks, start=1)
            for code, guesses in slot.predictions.items()
            for rank, guess in enumerate(guesses, start=1)
        ]
        return pd.DataFrame(rows, columns=["mask", "position", "language", "rank", "token", "token_id", "probability"])

    def to_wide_frame(self) -> pd.DataFrame:
        """Side by side: one row per (mask, rank), one column per language holding 'token (p)'."""
        rows = []
        for number, slot in enumerate(self.masks, start=1):
            depth = max((len(g) for g in slot.predictions.values()), default=0)
            for rank in range(depth):
                row = {"mask": number, "rank": rank + 1}
                for code in self.languages:
                    guesses = slot.predictions.get(code, [])
                    row[code] = (
                        f"{guesses[rank].token} ({guesses[rank].probability:.3f})" if rank < len(guesses) else ""
                    )
                rows.append(row)
        return pd.DataFrame(rows, columns=["mask", "rank", *self.languages])

    def to_adapter_frame(self) -> pd.DataFrame:
        """One row per (language, mask) holding that adapter's whole top-k as 'token (p), token (p), ...': the cells
        of to_wide_frame turned so that many adapters make rows, not columns, and few cells (a table draws only the
        rows in view, but handles every cell: 81 adapters in 1,134 cells held the browser for a quarter second)."""
        rows = [
            {
                "language": code,
                "mask": number,
                "top-k: token (probability)": ", ".join(
                    f"{guess.token} ({guess.probability:.3f})" for guess in slot.predictions.get(code, [])
                ),
            }
            for code in self.languages
            for number, slot in enumerate(self.masks, start=1)
        ]
        return pd.DataFrame(rows, columns=["language", "mask", "top-k: token (probability)"])

    def completed(self, mask_token: str = "<mask>") -> dict[str, str]:
        """Per adapter: the text with each mask replaced by that adapter's top-1 token (masks in order)."""
        result = {}
        for code in self.languages:
            parts = self.text.split(mask_token)
            filled = [parts[0]]
            for number, rest in enumerate(parts[1:]):
                guesses = self.masks[number].predictions.get(code, []) if number < len(self.masks) else []
                filled.append((guesses[0].token if guesses else mask_token) + rest)
            result[code] = "".join(filled)
        return result

    def agreement(self) -> list[MaskAgreement]:
        """Per mask: top token per adapter, whether all agree (same vocabulary id), mean pairwise top-k overlap
        (Jaccard, on ids)."""
        summaries = []
        for slot in self.masks:
            tops = {code: guesses[0].token for code, guesses in slot.predictions.items() if guesses}
            top_ids = {code: guesses[0].token_id for code, guesses in slot.predictions.items() if guesses}
            sets = {code: {g.token_id for g in guesses} for code, guesses in slot.predictions.items()}
            pairs = list(combinations(sets.values(), 2))
            overlap = sum(len(a & b) / len(a | b) for a, b in pairs) / len(pairs) if pairs else 1.0
            summaries.append(
                MaskAgreement(
                    position=slot.position,
                    top_tokens=tops,
                    all_agree=len(set(top_ids.values())) <= 1,
                    mean_top_k_overlap=overlap,
                    entropy_bits=dict(slot.entropy_bits),
                    top_token_ids=top_ids,
                )
            )
        return summaries


def top_k_with_entropy(
    states: torch.Tensor, project: Callable[[torch.Tensor], torch.Tensor], k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Project hidden states to vocabulary logits (in chunks), softmax over the full vocabulary:
    top-k probabilities, their ids, and the entropy in bits of each row."""
    probabilities, ids, entropies = [], [], []
    for start in range(0, states.shape[0], LOGIT_CHUNK_ROWS):
        chunk = project(states[start : start + LOGIT_CHUNK_ROWS]).float()
        log_p = torch.log_softmax(chunk, dim=-1)
        p = log_p.exp()
        entropies.append(-(p * log_p).sum(-1) / math.log(2))
        top_p, top_ids = p.topk(k, dim=-1)
        probabilities.append(top_p)
        ids.append(top_ids)
    return torch.cat(probabilities), torch.cat(ids), torch.cat(entropies)


def readable_token(tokenizer, token_id: int) -> str:
    """A vocabulary piece as a reader sees it: '▁girl' becomes 'girl'; a bare '▁' stays visible."""
    text = tokenizer.decode([token_id], clean_up_tokenization_spaces=False).strip()
    return text or tokenizer.convert_ids_to_tokens(token_id)
