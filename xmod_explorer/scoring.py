"""Which adapter fits a text: pseudo-log-likelihood per adapter (Salazar et al., 2020), and its result object.

The pseudo-log-likelihood (PLL) of a text under an adapter masks each token in turn and sums the log
probability the model gives the original token there. Every token costs one forward row per adapter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from xmod_explorer.detect import DetectorGuess
from xmod_explorer.masks import LOGIT_CHUNK_ROWS

# Token positions per forward pass when scoring: bounds activation memory (rows x tokens x hidden).
SCORE_TOKENS_PER_PASS = 4096


def masked_copies(ids: Sequence[int], positions: Sequence[int], mask_id: int) -> list[list[int]]:
    """One copy of ids per position, with that position replaced by the mask token."""
    copies = []
    for position in positions:
        row = list(ids)
        row[position] = mask_id
        copies.append(row)
    return copies


def token_log_probs(
    states: torch.Tensor, project: Callable[[torch.Tensor], torch.Tensor], targets: torch.Tensor
) -> torch.Tensor:
    """log p(targets[i]) under the vocabulary softmax of row i of states (n, hidden), in chunks: (n,) float32."""
    out = []
    for start in range(0, states.shape[0], LOGIT_CHUNK_ROWS):
        log_p = project(states[start : start + LOGIT_CHUNK_ROWS]).float().log_softmax(-1)
        out.append(log_p.gather(1, targets[start : start + LOGIT_CHUNK_ROWS, None].to(log_p.device))[:, 0])
    return torch.cat(out)


def rows_per_pass(tokens_per_row: int, budget: int = SCORE_TOKENS_PER_PASS) -> int:
    """How many rows of this length one forward pass takes within the budget (at least one)."""
    return max(1, budget // max(1, tokens_per_row))


@dataclass
class LanguageScore:
    """One adapter's pseudo-log-likelihood of the text (natural log; higher = fits better).

    total: the sum over scored tokens (<= 0). per_token: total / tokens, comparable across texts.
    pseudo_perplexity: exp(-per_token), from 1 (certain) upwards."""

    language: str
    rank: int
    total: float
    per_token: float
    pseudo_perplexity: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ScoringCost:
    """What the scores cost: forward rows (scored tokens x adapters), passes, and wall time."""

    forward_rows: int
    forward_passes: int
    tokens_per_row: int
    seconds: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def describe(self) -> str:
        return (
            f"{self.forward_rows:,} forward rows of {self.tokens_per_row} tokens (scored tokens x adapters) in "
            f"{self.forward_passes:,} batched passes, {self.seconds:.2f} s"
        )


@dataclass
class LanguageScores:
    """Result of Explorer.score_languages: the adapters ranked by how well the model, wearing each, predicts
    the text's own tokens (pseudo-log-likelihood per token, best first), with the cost and, beside it, an
    off-the-shelf detector's guess.

    The PLL compares adapters on this one text: a gap of a few hundredths of a nat per token can be noise
    of the model, not evidence. The detector looks at characters only and knows nothing of the model."""

    model: str
    text: str
    tokens: list[str]  # the scored tokens, in text order
    scores: list[LanguageScore]  # best first
    token_log_probs: dict[str, list[float]]  # per adapter, per scored token (natural log)
    cost: ScoringCost
    detector: DetectorGuess | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def languages(self) -> list[str]:
        """Codes, best first."""
        return [score.language for score in self.scores]

    @property
    def best(self) -> str:
        return self.scores[0].language

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "text": self.text,
            "best": self.best,
            "languages": self.languages,
            "tokens": list(self.tokens),
            "scores": [score.to_dict() for score in self.scores],
            "token_log_probs": {code: list(values) for code, values in self.token_log_probs.items()},
            "cost": self.cost.to_dict(),
            "detector": self.detector.to_dict() if self.detector is not None else None,
            "notes": list(self.notes),
        }

    def to_token_frame(self) -> pd.DataFrame:
        """One row per scored token, one column per adapter (best first): log p of the token with it masked."""
        rows = [
            {"position": i + 1, "token": token, **{code: self.token_log_probs[code][i] for code in self.languages}}
            for i, token in enumerate(self.tokens)
        ]
        return pd.DataFrame(rows, columns=["position", "token", *self.languages])

    def to_frame(self) -> pd.DataFrame:
        """One row per adapter, best first."""
        return pd.DataFrame(
            [score.to_dict() for score in self.scores],
            columns=["rank", "language", "per_token", "total", "pseudo_perplexity"],
        )


def rank_scores(totals: dict[str, float], token_count: int) -> list[LanguageScore]:
    """Adapters by total log-likelihood, best first (ties keep the given order)."""
    ordered = sorted(totals.items(), key=lambda item: -item[1])
    return [
        LanguageScore(
            language=code,
            rank=rank,
            total=total,
            per_token=total / token_count,
            pseudo_perplexity=math.exp(-total / token_count),
        )
        for rank, (code, total) in enumerate(ordered, start=1)
    ]
