"""The logit lens per adapter and the mixing of two adapters: vocabulary read-outs and their result objects.

Both read hidden states through the model's own masked-LM head (dense, GELU, LayerNorm, decoder), so
their numbers are probabilities over the whole vocabulary, comparable with Fill the mask's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from xmod_explorer.masks import LOGIT_CHUNK_ROWS, TokenGuess

# How every layer's state is read, in the words the result carries (pre-norm and post-norm checkpoints differ).
READOUT_POST_NORM = (
    "Each layer's output is read as it is: in this post-norm checkpoint every layer ends with a LayerNorm, as "
    "the last one does before the masked-LM head."
)
READOUT_PRE_NORM = (
    "Each layer's output is read after the encoder's closing LayerNorm: this pre-norm checkpoint applies that "
    "LayerNorm once, after its last layer, so every layer is read as if the encoder stopped there."
)


def vocabulary_readout(
    states: torch.Tensor, project: Callable[[torch.Tensor], torch.Tensor], k: int, tracked: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Rows of hidden states through the vocabulary projection (in chunks), softmax over the full vocabulary.

    Returns the top-k probabilities and ids of each row and, with tracked (rows, t) token ids, the
    probability of each of those tokens in its row (rows, t)."""
    top_p, top_ids, kept = [], [], []
    for start in range(0, states.shape[0], LOGIT_CHUNK_ROWS):
        probabilities = project(states[start : start + LOGIT_CHUNK_ROWS]).float().softmax(-1)
        values, ids = probabilities.topk(k, dim=-1)
        top_p.append(values)
        top_ids.append(ids)
        if tracked is not None:
            kept.append(probabilities.gather(1, tracked[start : start + LOGIT_CHUNK_ROWS].to(ids.device)))
    return torch.cat(top_p), torch.cat(top_ids), torch.cat(kept) if tracked is not None else None


@dataclass
class LensMask:
    """One <mask> read at every layer under every adapter.

    layers[l][code] holds the top-k at layer l (0 = the embedding output, before any adapter; the last = what
    Fill the mask shows). final[code] is that adapter's answer at the last layer, and
    final_probability[code][l] its probability at layer l."""

    position: int
    layers: list[dict[str, list[TokenGuess]]]
    final: dict[str, TokenGuess]
    final_probability: dict[str, list[float]]

    def top_tokens(self, layer: int) -> dict[str, TokenGuess]:
        """Each adapter's top-1 guess at one layer."""
        return {code: guesses[0] for code, guesses in self.layers[layer].items()}

    def agrees_with_final(self, layer: int) -> dict[str, bool]:
        """Per adapter: is its top-1 at this layer already its own final answer?"""
        return {code: guess.token_id == self.final[code].token_id for code, guess in self.top_tokens(layer).items()}

    def divergence_layer(self) -> int | None:
        """The first layer at which the adapters' top-1 tokens are not all the same (None: they never differ)."""
        for layer in range(len(self.layers)):
            if len({guess.token_id for guess in self.top_tokens(layer).values()}) > 1:
                return layer
        return None

    def settled_layer(self) -> dict[str, int]:
        """Per adapter: the first layer from which its top-1 is its final answer at every later layer."""
        settled = {}
        for code in self.final:
            layer = len(self.layers) - 1
            while layer > 0 and self.layers[layer - 1][code][0].token_id == self.final[code].token_id:
                layer -= 1
            settled[code] = layer
        return settled

    def to_dict(self) -> dict:
        return {
            "position": self.position,
            "divergence_layer": self.divergence_layer(),
            "settled_layer": self.settled_layer(),
            "final": {code: guess.to_dict() for code, guess in self.final.items()},
            "final_probability": {code: list(values) for code, values in self.final_probability.items()},
            "layers": [
                {code: [guess.to_dict() for guess in guesses] for code, guesses in layer.items()}
                for layer in self.layers
            ],
        }


@dataclass
class LogitLens:
    """Result of Explorer.logit_lens: every <mask>, read through the masked-LM head at every layer, per adapter.

    Probabilities are softmaxes over the whole vocabulary (0 to 1). Intermediate layers were never trained
    to be read this way: a layer whose top token is noise says the answer is not yet linearly readable
    there through this head, not that the model "thinks" that token."""

    model: str
    text: str
    languages: list[str]
    tokens: list[str]
    readout: str
    masks: list[LensMask]

    @property
    def layers(self) -> list[int]:
        return list(range(len(self.masks[0].layers))) if self.masks else []

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "text": self.text,
            "languages": list(self.languages),
            "tokens": list(self.tokens),
            "layers": self.layers,
            "readout": self.readout,
            "masks": [mask.to_dict() for mask in self.masks],
        }

    def to_wide_frame(self) -> pd.DataFrame:
        """Side by side: one row per (mask, layer), one column per language holding its top-1 'token (p)'."""
        rows = [
            {
                "mask": number,
                "layer": layer,
                **{
                    code: f"{guesses[0].token} ({guesses[0].probability:.3f})"
                    for code, guesses in mask.layers[layer].items()
                },
            }
            for number, mask in enumerate(self.masks, start=1)
            for layer in range(len(mask.layers))
        ]
        return pd.DataFrame(rows, columns=["mask", "layer", *self.languages])

    def to_adapter_frame(self) -> pd.DataFrame:
        """One row per (language, mask), one column per layer holding its top-1 'token (p)': the cells of
        to_wide_frame turned so that many adapters make rows (a table draws only the rows in view), not columns."""
        rows = [
            {
                "language": code,
                "mask": number,
                **{
                    f"layer {layer}": f"{guesses[code][0].token} ({guesses[code][0].probability:.3f})"
                    for layer, guesses in enumerate(mask.layers)
                },
            }
            for code in self.languages
            for number, mask in enumerate(self.masks, start=1)
        ]
        return pd.DataFrame(rows, columns=["language", "mask", *[f"layer {layer}" for layer in self.layers]])

    def to_frame(self) -> pd.DataFrame:
        """One row per (mask, layer, language, rank)."""
        columns = ["mask", "position", "layer", "language", "rank", "token", "token_id", "probability"]
        extra = ["is_final_answer", "final_answer", "final_answer_probability"]
        rows = [
            {
                "mask": number,
                "position": mask.position,
                "layer": layer,
                "language": code,
                "rank": rank,
                "token": guess.token,
                "token_id": guess.token_id,
                "probability": guess.probability,
                "is_final_answer": guess.token_id == mask.final[code].token_id,
                "final_answer": mask.final[code].token,
                "final_answer_probability": mask.final_probability[code][layer],
            }
            for number, mask in enumerate(self.masks, start=1)
            for layer, by_language in enumerate(mask.layers)
            for code, guesses in by_language.items()
            for rank, guess in enumerate(guesses, start=1)
        ]
        return pd.DataFrame(rows, columns=columns + extra)


@dataclass
class TrackedToken:
    """A token followed across the mixing weights: its probability at each alpha."""

    token: str
    token_id: int
    probabilities: list[float]

    def to_dict(self) -> dict:
        return {"token": self.token, "token_id": self.token_id, "probabilities": list(self.probabilities)}


@dataclass
class MixMask:
    """One <mask> under every mixing weight: the top-k per alpha, and the tokens that are top-1 at some alpha
    (with both pure adapters' top-1 among them) followed across all alphas."""

    position: int
    predictions: list[list[TokenGuess]]  # [alpha index][rank]
    tracked: list[TrackedToken]

    def to_dict(self) -> dict:
        return {
            "position": self.position,
            "predictions": [[guess.to_dict() for guess in guesses] for guesses in self.predictions],
            "tracked": [token.to_dict() for token in self.tracked],
        }


MIXED = (
    "In every layer the language adapter's bottleneck output (dense2(act(dense1(x)))) becomes "
    "(1 - alpha) * adapter_a(x) + alpha * adapter_b(x). Its input x, the residual it is added to and every "
    "LayerNorm are the model's own; each later layer's adapters see the mixed stream. This mixes outputs, not "
    "weights: it is not the adapter whose weights are the average."
)


@dataclass
class AdapterMix:
    """Result of Explorer.interpolate: the top predictions at each mixing weight alpha between two adapters.

    alpha 0 is adapter a alone and alpha 1 adapter b alone (equal to Fill the mask's numbers); probabilities
    are softmaxes over the whole vocabulary. `mixed` says exactly what is mixed."""

    model: str
    text: str
    language_a: str
    language_b: str
    alphas: list[float]
    tokens: list[str]
    masks: list[MixMask]
    mixed: str = MIXED

    def nearest(self, alpha: float) -> int:
        """Index of the computed alpha closest to alpha (the first of two equally close)."""
        return min(range(len(self.alphas)), key=lambda i: abs(self.alphas[i] - float(alpha)))

    def changes(self, mask_number: int = 1) -> list[float]:
        """The alphas at which the top-1 token differs from the one at the previous alpha."""
        guesses = self.masks[mask_number - 1].predictions
        return [self.alphas[i] for i in range(1, len(guesses)) if guesses[i][0].token_id != guesses[i - 1][0].token_id]

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "text": self.text,
            "language_a": self.language_a,
            "language_b": self.language_b,
            "alphas": list(self.alphas),
            "tokens": list(self.tokens),
            "mixed": self.mixed,
            "masks": [mask.to_dict() for mask in self.masks],
        }

    def to_wide_frame(self) -> pd.DataFrame:
        """One row per (mask, alpha), one column per rank holding 'token (p)'."""
        depth = len(self.masks[0].predictions[0]) if self.masks else 0
        rows = [
            {
                "mask": number,
                "alpha": alpha,
                **{f"top {r + 1}": f"{g.token} ({g.probability:.3f})" for r, g in enumerate(mask.predictions[i])},
            }
            for number, mask in enumerate(self.masks, start=1)
            for i, alpha in enumerate(self.alphas)
        ]
        return pd.DataFrame(rows, columns=["mask", "alpha", *[f"top {r + 1}" for r in range(depth)]])

    def to_frame(self, alpha: float | None = None) -> pd.DataFrame:
        """One row per (mask, alpha, rank); with alpha, only the computed alpha nearest to it."""
        chosen = range(len(self.alphas)) if alpha is None else [self.nearest(alpha)]
        rows = [
            {
                "mask": number,
                "position": mask.position,
                "alpha": self.alphas[i],
                "rank": rank,
                "token": guess.token,
                "token_id": guess.token_id,
                "probability": guess.probability,
            }
            for number, mask in enumerate(self.masks, start=1)
            for i in chosen
            for rank, guess in enumerate(mask.predictions[i], start=1)
        ]
        return pd.DataFrame(rows, columns=["mask", "position", "alpha", "rank", "token", "token_id", "probability"])


def mixing_weights(steps: int) -> list[float]:
    """steps evenly spaced alphas from 0 to 1, with both ends exact."""
    return [i / (steps - 1) for i in range(steps)]


def first_appearances(rows: Sequence[Sequence[int]]) -> list[int]:
    """Distinct ids in order of first appearance, reading row by row."""
    seen: list[int] = []
    for row in rows:
        for token in row:
            if token not in seen:
                seen.append(token)
    return seen
