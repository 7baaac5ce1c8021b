"""Classification with X-MOD: label probabilities per adapter, linear probes on frozen features, transfer results.

The probe is the cheap half of the paper's recipe: the encoder, embeddings and all language
adapters stay frozen; only a linear softmax layer is trained, on mean-pooled sentence vectors
computed under the source language's adapter. Switching the adapter at test time is the transfer.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from xmod_explorer.errors import ExplorerError
from xmod_explorer.stats import ALPHA, mcnemar_exact, wilson_interval

FEATURE = "mean of the last hidden state over the text's tokens (no <s>, </s> or padding)"
PROBE_FORMAT = "xmod-explorer-probe"
PROBE_VERSION = "1"
TENSORS = ("weight", "bias", "mean", "std")


@dataclass
class Classification:
    """Label probabilities for one text under each chosen language adapter."""

    model: str
    text: str
    labels: list[str]
    languages: list[str]
    probabilities: dict[str, dict[str, float]]
    head: str = "checkpoint"  # or a description of the probe used

    def predicted(self) -> dict[str, str]:
        """The most probable label per language."""
        return {code: max(p, key=p.get) for code, p in self.probabilities.items()}

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "text": self.text,
            "head": self.head,
            "labels": list(self.labels),
            "languages": list(self.languages),
            "probabilities": {code: dict(p) for code, p in self.probabilities.items()},
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per language: the predicted label and one probability column per label."""
        predicted = self.predicted()
        return pd.DataFrame(
            [{"language": code, "predicted": predicted[code], **self.probabilities[code]} for code in self.languages]
        )


@dataclass
class ProbeHead:
    """A linear softmax layer over standardised pooled features, with where it came from."""

    weight: torch.Tensor  # (labels, hidden)
    bias: torch.Tensor  # (labels,)
    mean: torch.Tensor  # (hidden,) training-feature mean
    std: torch.Tensor  # (hidden,) training-feature standard deviation
    labels: list[str]
    source_language: str
    model: str
    feature: str = FEATURE
    examples: int = 0
    encoder: str = "frozen"  # "fine-tuned" when trained with a session's fine-tuned copy

    @property
    def hidden_size(self) -> int:
        return int(self.weight.shape[1])

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """(n, hidden) pooled features -> (n, labels) logits."""
        x = (features.float().cpu() - self.mean) / self.std
        return x @ self.weight.T + self.bias

    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(features).softmax(-1)

    def predict(self, features: torch.Tensor) -> list[str]:
        return [self.labels[i] for i in self.logits(features).argmax(-1).tolist()]

    def describe(self) -> str:
        kind = "probe" if self.encoder == "frozen" else "probe with a fine-tuned encoder"
        return f"{kind} trained on {self.source_language} ({self.examples} examples)"

    def to_dict(self) -> dict:
        """Provenance and labels (no weights): what the API and the UI show."""
        return {
            "labels": list(self.labels),
            "source_language": self.source_language,
            "model": self.model,
            "feature": self.feature,
            "examples": self.examples,
            "encoder": self.encoder,
            "hidden_size": self.hidden_size,
        }

    def _metadata(self) -> dict[str, str]:
        info = self.to_dict()
        return {
            "format": PROBE_FORMAT,
            "version": PROBE_VERSION,
            "labels": json.dumps(info["labels"], ensure_ascii=False),
            **{key: str(value) for key, value in info.items() if key != "labels"},
        }

    def to_bytes(self) -> bytes:
        """One safetensors file: the four tensors, and labels and provenance in its metadata."""
        from safetensors.torch import save

        tensors = {name: getattr(self, name).detach().float().contiguous().cpu() for name in TENSORS}
        return save(tensors, metadata=self._metadata())

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.to_bytes())
        return path

    @classmethod
    def load(cls, source: str | Path | bytes, *, max_bytes: int | None = None) -> ProbeHead:
        """Read a head written by save(); anything else is an ExplorerError saying what it is not."""
        if isinstance(source, (bytes, bytearray)):
            data, name = bytes(source), "The file"
        else:
            path = Path(source)
            name = f"The file {path.name}"
            if not path.is_file():
                raise ExplorerError(f"{name} cannot be found; upload it again.")
            if max_bytes is not None and path.stat().st_size > max_bytes:
                raise ExplorerError(f"{name} is larger than {max_bytes / 2**20:.1f} MiB; a probe head is far smaller.")
            data = path.read_bytes()
        if max_bytes is not None and len(data) > max_bytes:
            raise ExplorerError(f"{name} is larger than {max_bytes / 2**20:.1f} MiB; a probe head is far smaller.")
        not_a_head = (
            f"{name} is not a probe head saved by X-MOD Explorer (expected a .safetensors file from 'Download head')."
        )
        metadata = _safetensors_metadata(data)
        if metadata is None or metadata.get("format") != PROBE_FORMAT:
            raise ExplorerError(not_a_head)
        from safetensors.torch import load

        try:
            tensors = load(data)
            labels = json.loads(metadata["labels"])
            head = cls(
                weight=tensors["weight"].float(),
                bias=tensors["bias"].float(),
                mean=tensors["mean"].float(),
                std=tensors["std"].float(),
                labels=[str(label) for label in labels],
                source_language=metadata["source_language"],
                model=metadata["model"],
                feature=metadata.get("feature", FEATURE),
                examples=int(metadata.get("examples", 0)),
                encoder=metadata.get("encoder", "frozen"),
            )
        except Exception as exc:  # missing keys, bad JSON, truncated tensors: all mean the same to a user
            raise ExplorerError(f"{not_a_head} It looks damaged ({type(exc).__name__}).") from None
        k, h = head.weight.shape if head.weight.dim() == 2 else (0, 0)
        if not (k == len(head.labels) >= 2 and head.bias.shape == (k,) and head.mean.shape == head.std.shape == (h,)):
            raise ExplorerError(f"{not_a_head} Its tensors do not fit together.")
        return head


def _safetensors_metadata(data: bytes) -> dict | None:
    """The __metadata__ of a safetensors file, or None if data is not one (8-byte length, then a JSON header)."""
    if len(data) < 8:
        return None
    size = int.from_bytes(data[:8], "little")
    if size <= 0 or 8 + size > len(data):
        return None
    try:
        header = json.loads(data[8 : 8 + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(header, dict):
        return None
    metadata = header.get("__metadata__")
    return metadata if isinstance(metadata, dict) else None


@dataclass
class ProbeTraining:
    """A trained head and how the training went: loss per step, time, whether it converged or the time cap
    stopped it."""

    head: ProbeHead
    losses: list[float]
    seconds: float
    feature_seconds: float
    examples: int
    steps: int
    train_accuracy: float
    stopped_early: bool = False
    note: str = ""
    converged: bool | None = None  # probes: the gradient fell below the tolerance; None for fine-tuning
    gradient_norm: float | None = None  # probes: largest |gradient| of the objective at the end

    def to_dict(self) -> dict:
        return {
            "head": self.head.to_dict(),
            "losses": list(self.losses),
            "seconds": self.seconds,
            "feature_seconds": self.feature_seconds,
            "examples": self.examples,
            "steps": self.steps,
            "train_accuracy": self.train_accuracy,
            "stopped_early": self.stopped_early,
            "converged": self.converged,
            "gradient_norm": self.gradient_norm,
            "note": self.note,
        }

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"step": range(1, len(self.losses) + 1), "loss": self.losses})


@dataclass
class TransferRow:
    """Accuracy on one target language's test texts: with its own adapter, and with the source language's adapter.

    Both runs see the same texts, so the gap is tested on the pairs: only texts that one adapter gets right
    and the other wrong (the discordant ones) carry information, and under no difference each of them is a
    fair coin (exact McNemar test). Accuracies come with Wilson 95 % intervals.
    """

    language: str
    examples: int
    target_correct: int  # texts classified right with the target language's own adapter
    source_correct: int  # texts classified right with the source language's adapter
    only_target_correct: int  # right with the target adapter, wrong with the source adapter
    only_source_correct: int  # right with the source adapter, wrong with the target adapter
    majority_share: float  # accuracy of always answering the most common label: the floor to beat

    @classmethod
    def from_predictions(
        cls, language: str, target: Sequence[str], source: Sequence[str], gold: Sequence[str]
    ) -> TransferRow:
        """Counts from each text's predicted label under the target adapter and under the source adapter."""
        target_right = [p == g for p, g in zip(target, gold)]
        source_right = [p == g for p, g in zip(source, gold)]
        return cls(
            language=language,
            examples=len(gold),
            target_correct=sum(target_right),
            source_correct=sum(source_right),
            only_target_correct=sum(t and not s for t, s in zip(target_right, source_right)),
            only_source_correct=sum(s and not t for t, s in zip(target_right, source_right)),
            majority_share=majority_share(list(gold)),
        )

    @property
    def target_adapter_accuracy(self) -> float:
        return self.target_correct / self.examples if self.examples else math.nan

    @property
    def source_adapter_accuracy(self) -> float:
        return self.source_correct / self.examples if self.examples else math.nan

    @property
    def gap(self) -> float:
        return self.target_adapter_accuracy - self.source_adapter_accuracy

    @property
    def target_adapter_ci(self) -> list[float]:
        return list(wilson_interval(self.target_correct, self.examples))

    @property
    def source_adapter_ci(self) -> list[float]:
        return list(wilson_interval(self.source_correct, self.examples))

    @property
    def gap_p_value(self) -> float:
        """Two-sided exact McNemar p-value for 'the two adapters are equally accurate on these texts'."""
        return mcnemar_exact(self.only_target_correct, self.only_source_correct)

    def to_dict(self) -> dict:
        return {
            "language": self.language,
            "examples": self.examples,
            "target_adapter_accuracy": self.target_adapter_accuracy,
            "target_adapter_ci": self.target_adapter_ci,
            "source_adapter_accuracy": self.source_adapter_accuracy,
            "source_adapter_ci": self.source_adapter_ci,
            "gap": self.gap,
            "gap_p_value": self.gap_p_value,
            "only_target_correct": self.only_target_correct,
            "only_source_correct": self.only_source_correct,
            "majority_share": self.majority_share,
        }


@dataclass
class TransferResult:
    """Zero-shot transfer of one head to several languages, X-MOD's way (target adapter) vs the baseline."""

    model: str
    source_language: str
    labels: list[str]
    rows: list[TransferRow]

    @property
    def languages(self) -> list[str]:
        return [row.language for row in self.rows]

    @property
    def target_rows(self) -> list[TransferRow]:
        """Rows of languages other than the source: in the source's own row both runs use the same adapter."""
        return [row for row in self.rows if row.language != self.source_language]

    def summary(self) -> str:
        """What the rows show, claiming a difference only where the McNemar test gives p < 0.05."""
        rows = self.target_rows
        if not rows:
            return f"No target language other than the source ({self.source_language}) was tested."
        better = [row.language for row in rows if row.gap > 0 and row.gap_p_value < ALPHA]
        worse = [row.language for row in rows if row.gap < 0 and row.gap_p_value < ALPHA]
        unclear = len(rows) - len(better) - len(worse)

        def named(codes: list[str]) -> str:
            return f"{len(codes)} ({', '.join(codes)})" if codes else "0"

        text = (
            f"Transfer to {len(rows)} target language{'s' if len(rows) != 1 else ''}: the target language's own "
            f"adapter is more accurate than the source adapter ({self.source_language}) in {named(better)}, less "
            f"accurate in {named(worse)}, and in {unclear} the test data cannot tell the two apart (exact McNemar "
            f"test on the same texts, p >= {ALPHA}; each language tested on its own)."
        )
        if len(rows) < len(self.rows):
            text += f" The {self.source_language} row uses the same adapter both ways and is not counted."
        return text

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "source_language": self.source_language,
            "labels": list(self.labels),
            "languages": self.languages,
            "rows": [row.to_dict() for row in self.rows],
            "summary": self.summary(),
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per target language; accuracies and interval bounds as fractions, the gap's p-value."""
        source = f"source adapter ({self.source_language})"
        return pd.DataFrame(
            [
                {
                    "language": row.language,
                    "examples": row.examples,
                    "target adapter": row.target_adapter_accuracy,
                    "target adapter low": row.target_adapter_ci[0],
                    "target adapter high": row.target_adapter_ci[1],
                    source: row.source_adapter_accuracy,
                    f"{source} low": row.source_adapter_ci[0],
                    f"{source} high": row.source_adapter_ci[1],
                    "gap": row.gap,
                    "gap p-value": row.gap_p_value,
                    "majority label": row.majority_share,
                }
                for row in self.rows
            ]
        )


def accuracy(predicted: Sequence[str], gold: Sequence[str]) -> float:
    return sum(p == g for p, g in zip(predicted, gold)) / len(gold) if gold else math.nan


def majority_share(gold: Sequence[str]) -> float:
    return max(gold.count(label) for label in set(gold)) / len(gold) if gold else math.nan


def standardiser(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and standard deviation of training features (std floored: constant dimensions)."""
    features = features.float()
    mean = features.mean(0)
    std = features.std(0, unbiased=False).clamp_min(1e-6) if len(features) > 1 else torch.ones_like(mean)
    return mean, std


@dataclass
class LinearFit:
    """A softmax layer fitted by fit_linear_head, and how the optimisation ended."""

    weight: torch.Tensor  # (labels, hidden) float32
    bias: torch.Tensor  # (labels,) float32
    losses: list[float]  # cross-entropy after each iteration
    stopped: bool  # the deadline stopped it
    converged: bool  # the largest |gradient| of the objective fell to the tolerance
    gradient_norm: float  # that largest |gradient| at the end

    @property
    def iterations(self) -> int:
        return len(self.losses)


GRADIENT_TOLERANCE = 1e-5


def fit_linear_head(
    features: torch.Tensor,
    targets: torch.Tensor,
    num_labels: int,
    *,
    weight_decay: float = 1e-2,
    max_steps: int = 1000,
    tolerance: float = GRADIENT_TOLERANCE,
    deadline: float | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> LinearFit:
    """Softmax regression on standardised features, full-batch L-BFGS from zero weights (deterministic).

    Minimises mean cross-entropy + weight_decay / 2 * |weight|^2 in float64 until the largest |gradient|
    is at most `tolerance` (the objective is strictly convex, so that is near its one optimum), the
    objective stops changing, max_steps iterations pass, or the deadline (a time.monotonic() value) does.
    """
    x = features.double()
    weight = torch.zeros(num_labels, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_labels, dtype=torch.float64, requires_grad=True)
    # One L-BFGS iteration per step (with up to 25 evaluations for its line search), so that the deadline
    # and progress reports are checked between iterations; the stopping rules are ours.
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=1,
        max_eval=25,
        history_size=20,
        tolerance_grad=0.0,
        tolerance_change=0.0,
        line_search_fn="strong_wolfe",
    )

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight.T + bias, targets)
        total = loss + 0.5 * weight_decay * weight.pow(2).sum()
        total.backward()
        return total

    def gradient_norm() -> float:
        return float(torch.cat([weight.grad.flatten(), bias.grad]).abs().max())

    losses: list[float] = []
    stopped = False
    with torch.enable_grad():
        previous = objective().item()
        norm = gradient_norm()
        for step in range(1, max_steps + 1):
            if norm <= tolerance:
                break
            if deadline is not None and time.monotonic() > deadline:
                stopped = True
                break
            optimizer.step(objective)
            current = objective().item()  # recomputed at the new weights: the gradient there decides
            norm = gradient_norm()
            with torch.no_grad():
                losses.append(float(torch.nn.functional.cross_entropy(x @ weight.T + bias, targets)))
            if on_step is not None:
                on_step(step, losses[-1])
            if current >= previous and norm > tolerance:
                break  # no progress: rounding has the last word
            previous = current
    return LinearFit(weight.detach().float(), bias.detach().float(), losses, stopped, norm <= tolerance, norm)
