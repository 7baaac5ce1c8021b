"""The transfer lab: which data, probe training, zero-shot transfer and fine-tuning, on a loaded Explorer.

Everything here goes through Explorer's public methods (check_languages, tokenize, pooled_features,
pooled_batch, check_head, private_copy), and the lab's rules (which data set, which targets, the
caps) live here rather than in the UI. Nothing here changes the shared model: probes read frozen
features, and fine-tuning works on a private copy.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from xmod_explorer import jobs
from xmod_explorer.budget import Cost
from xmod_explorer.classify import (
    FEATURE,
    GRADIENT_TOLERANCE,
    ProbeHead,
    ProbeTraining,
    TransferResult,
    TransferRow,
    accuracy,
    fit_linear_head,
    standardiser,
)
from xmod_explorer.datasets import (
    SENTIMENT_TARGETS,
    Example,
    as_examples,
    read_labelled_csv,
    sentiment_test,
    sentiment_train,
    split_by_language,
)
from xmod_explorer.errors import ExplorerError
from xmod_explorer.languages import resolve_language
from xmod_explorer.machine import available_memory_bytes

if TYPE_CHECKING:  # annotations only: the lab sits above the engine and never imports it at run time
    from xmod_explorer.engine import Explorer

log = logging.getLogger(__name__)

Progress = Callable[..., object]  # called as progress(fraction, desc="..."); a gr.Progress fits
TASK_ADAPTER = "lab_task"
BUNDLED_SOURCE = "en_XX"  # the bundled sentiment set's training rows are English


def _report(progress: Progress | None, fraction: float, text: str) -> None:
    if progress is not None:
        progress(min(max(fraction, 0.0), 1.0), desc=text)


# ----- which data ---------------------------------------------------------------------------------


def default_targets(languages: Sequence[str]) -> list[str]:
    """The bundled test set's languages that the model has (all six for xmod-base and the mini model)."""
    return [code for code in SENTIMENT_TARGETS if code in languages]


def bundled_data(explorer: Explorer, source: str, *, training: bool = True) -> tuple[list[Example], dict]:
    """The bundled sentiment set: English training rows, and test rows per language the model has."""
    if source != BUNDLED_SOURCE and training:
        raise ExplorerError(
            f"The bundled training set is in English: choose {BUNDLED_SOURCE} as the source language, or upload a CSV."
        )
    tests: dict[str, list[Example]] = {}
    for example in sentiment_test(explorer.languages):  # the held-out English set counts as a test set too
        tests.setdefault(example.language, []).append(example)
    return sentiment_train(), tests


def uploaded_data(
    explorer: Explorer, path: str | None, source: str, *, training: bool = True
) -> tuple[list[Example], dict]:
    """A user's labelled CSV, checked against the limits: source-language rows train, the rest are test sets."""
    if not path:
        raise ExplorerError(
            "Choose a CSV file to upload first (columns text,label[,language]), or pick the bundled data set."
        )
    examples = read_labelled_csv(path, explorer.limits, explorer.languages, name="The uploaded file")
    train, tests = split_by_language(examples, source)
    if not train and training:
        raise ExplorerError(
            f"The uploaded file has no rows in the source language {source} (or without a language) to train on. "
            "Choose the source language your rows are written in."
        )
    return train, tests


def target_languages(explorer: Explorer, chosen: Sequence[str] | str | None) -> list[str]:
    """The chosen target codes, checked; an empty choice means none."""
    return explorer.check_languages(chosen) if chosen else []


# ----- the probe ------------------------------------------------------------------------------------


def _rows(explorer: Explorer, examples: Sequence[Example], what: str) -> list[list[int]]:
    return [
        explorer.tokenize(example.text, what=f"text in row {number} of the {what}")
        for number, example in enumerate(examples, start=1)
    ]


def _training_set(explorer: Explorer, examples, source_language, what: str = "training examples"):
    items = as_examples(examples, what=what)
    source = resolve_language(source_language, explorer.languages)
    for number, example in enumerate(items, start=1):
        if example.language is not None:
            code = resolve_language(example.language, explorer.languages)
            if code != source:
                raise ExplorerError(
                    f"Row {number} of the {what} is in {code}, but training uses the source language {source}. "
                    "Give only source-language rows (or leave the language empty); test other languages with "
                    "evaluate_transfer."
                )
    cap = explorer.limits.max_train_examples
    if len(items) > cap:
        raise ExplorerError(f"{len(items):,} training examples; at most {cap:,} are accepted here. Use fewer.")
    labels = sorted({example.label for example in items})
    if len(labels) < 2:
        raise ExplorerError(
            f"All training examples have the label {labels[0]!r}; a classifier needs at least two labels."
        )
    explorer.check_languages([source])
    return items, source, labels


def _features(
    explorer: Explorer,
    token_rows: Sequence[Sequence[int]],
    row_languages: Sequence[str],
    *,
    batch_size: int = 32,
    progress: Progress | None = None,
    span: tuple[float, float] = (0.0, 1.0),
    deadline: float | None = None,
) -> torch.Tensor:
    """explorer.pooled_features with progress reports and the lab's time cap."""

    def on_batch(done: int, total: int) -> None:
        if deadline is not None and done < total and time.monotonic() > deadline:
            raise ExplorerError(
                f"Computing sentence features took longer than the {explorer.limits.max_train_seconds:.0f} s "
                "allowed here; nothing was trained. Use fewer or shorter examples."
            )
        if done:
            fraction = span[0] + (span[1] - span[0]) * done / total
            _report(progress, fraction, f"Sentence features: batch {done} of {total}")

    return explorer.pooled_features(token_rows, row_languages, batch_size=batch_size, on_batch=on_batch)


def fit_share(step: int, scale: float = 25.0) -> float:
    """How far along the probe's fit is after step steps, from 0 towards 1. The fit stops when it converges, which
    is not known in advance (a few dozen steps of max_steps=1000 on the bundled set), so step / max_steps left the
    bar near 80 % and then jumped to 100 % (issue 16); this rises quickly at first and keeps moving: 0.5 at step 25,
    0.75 at 75, 0.9 at 225."""
    return step / (step + scale)


def train_probe(
    explorer: Explorer,
    examples,
    source_language: str,
    *,
    max_steps: int = 1000,
    weight_decay: float = 1e-2,
    batch_size: int = 32,
    progress: Progress | None = None,
    seed: int = 0,
) -> ProbeTraining:
    """Train a linear softmax head on frozen features computed under the source language's adapter.

    examples: (text, label) rows, Example objects, dicts or a DataFrame. progress: called as
    progress(fraction, desc=...). Capped by the explorer's limits (examples and seconds).
    """
    start = time.monotonic()
    deadline = start + float(explorer.limits.max_train_seconds)
    items, source, labels = _training_set(explorer, examples, source_language)
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or not 1 <= max_steps <= 10_000:
        raise ExplorerError(f"max_steps must be a whole number from 1 to 10000; got {max_steps!r}.")
    torch.manual_seed(seed)
    rows = _rows(explorer, items, "training examples")
    _report(progress, 0.0, f"Sentence features for {len(items)} examples under {source}")
    features = _features(
        explorer,
        rows,
        [source] * len(rows),
        batch_size=batch_size,
        progress=progress,
        span=(0.0, 0.8),
        deadline=deadline,
    )
    feature_seconds = time.monotonic() - start
    mean, std = standardiser(features)
    targets = torch.tensor([labels.index(example.label) for example in items])

    def on_step(step: int, loss: float) -> None:
        jobs.checkpoint()
        _report(progress, 0.8 + 0.2 * fit_share(step), f"Training the probe: step {step}, loss {loss:.4f}")

    fit = fit_linear_head(
        (features - mean) / std,
        targets,
        len(labels),
        weight_decay=weight_decay,
        max_steps=max_steps,
        deadline=deadline,
        on_step=on_step,
    )
    head = ProbeHead(fit.weight, fit.bias, mean, std, labels, source, explorer.name, FEATURE, len(items))
    if fit.stopped:
        note = (
            f"Stopped at the time cap of {explorer.limits.max_train_seconds:.0f} s after {fit.iterations} steps, "
            f"before converging (largest gradient {fit.gradient_norm:.1e}); the head is usable but not fully trained."
        )
    elif not fit.converged:
        note = (
            f"Stopped after {fit.iterations} steps without converging (largest gradient {fit.gradient_norm:.1e}, "
            f"tolerance {GRADIENT_TOLERANCE:.0e}); the head is usable but may not be fully trained."
        )
    else:
        note = ""
    _report(progress, 1.0, "Probe trained")
    return ProbeTraining(
        head=head,
        losses=fit.losses,
        seconds=time.monotonic() - start,
        feature_seconds=feature_seconds,
        examples=len(items),
        steps=fit.iterations,
        train_accuracy=accuracy(head.predict(features), [example.label for example in items]),
        stopped_early=fit.stopped,
        note=note,
        converged=fit.converged,
        gradient_norm=fit.gradient_norm,
    )


# ----- transfer -------------------------------------------------------------------------------------


def _test_sets(explorer: Explorer, examples, target_languages) -> dict[str, list[Example]]:
    """Test rows grouped by model language code; with target languages given, rows in other languages are left out."""
    chosen = None if target_languages in (None, "", []) else explorer.check_languages(target_languages)
    raw: dict[str, list[Example]] = {}
    if isinstance(examples, Mapping):
        for language, rows in examples.items():
            raw.setdefault(str(language), []).extend(as_examples(rows, what=f"test examples for {language}"))
    else:
        for number, example in enumerate(as_examples(examples, what="test examples"), start=1):
            if example.language is None:
                raise ExplorerError(
                    f"Row {number} of the test examples has no language; each test row needs one (e.g. de_DE)."
                )
            raw.setdefault(example.language, []).append(example)
    groups: dict[str, list[Example]] = {}
    for language, rows in raw.items():
        try:
            code = resolve_language(language, explorer.languages)
        except ExplorerError:
            if chosen is not None:
                continue  # rows in a language this model lacks, and not asked for
            raise
        if chosen is not None and code not in chosen:
            continue  # e.g. zh_CN rows of the bundled set when only de_DE is asked for
        groups.setdefault(code, []).extend(Example(e.text, e.label, code) for e in rows)
    if chosen is None:
        chosen = list(groups)
    else:
        absent = [code for code in chosen if code not in groups]
        if absent:
            have = ", ".join(raw) or "none"
            raise ExplorerError(
                f"No test examples in {', '.join(absent)} (the test set has: {have}). Choose other target languages."
            )
    if not chosen:
        raise ExplorerError("There are no test examples to evaluate on.")
    total = sum(len(groups[code]) for code in chosen)
    cap = explorer.limits.max_train_examples
    if total > cap:
        raise ExplorerError(f"{total:,} test examples; at most {cap:,} are accepted here. Use fewer languages or rows.")
    return {code: groups[code] for code in chosen}


def evaluate_transfer(
    explorer: Explorer,
    head: ProbeHead,
    examples,
    target_languages=None,
    *,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> TransferResult:
    """Accuracy per target language with the target's adapter (X-MOD's way) and the source's (the baseline).

    examples: rows with a language, or a dict {language: rows}; target_languages: default all given.
    """
    head = explorer.check_head(head)
    groups = _test_sets(explorer, examples, target_languages)
    source = head.source_language
    if source not in explorer.languages:
        raise ExplorerError(f"The head was trained with the {source} adapter, which this model does not have.")
    for code, rows in groups.items():
        for number, example in enumerate(rows, start=1):
            if example.label not in head.labels:
                raise ExplorerError(
                    f"Row {number} of the {code} test examples has the label {example.label!r}, which the head does "
                    f"not know (its labels: {', '.join(head.labels)})."
                )
    explorer.check_languages(sorted(set(groups) | {source}, key=explorer.languages.index))
    token_rows, row_languages = [], []
    for code, rows in groups.items():
        tokens = _rows(explorer, rows, f"{code} test examples")
        token_rows += tokens + tokens  # each text twice: under the target's adapter, then under the source's
        row_languages += [code] * len(tokens) + [source] * len(tokens)
    features = _features(explorer, token_rows, row_languages, batch_size=batch_size, progress=progress)
    predicted = head.predict(features)
    result_rows, offset = [], 0
    for code, rows in groups.items():
        gold = [example.label for example in rows]
        n = len(rows)
        target, baseline = predicted[offset : offset + n], predicted[offset + n : offset + 2 * n]
        result_rows.append(TransferRow.from_predictions(code, target, baseline, gold))
        offset += 2 * n
    return TransferResult(model=explorer.name, source_language=source, labels=list(head.labels), rows=result_rows)


def run_bundled(explorer: Explorer, source_language: str, target_languages: Sequence[str] | None) -> dict:
    """The whole lab on the bundled set, keeping nothing: the training summary and transfer table as one dict."""
    if source_language != BUNDLED_SOURCE:
        raise ExplorerError(f"The bundled training set is in English: use source_language='{BUNDLED_SOURCE}'.")
    train, tests = bundled_data(explorer, source_language)
    targets = target_languages_or_default(explorer, target_languages)
    missing = [code for code in targets if code not in tests]
    if missing:
        raise ExplorerError(f"The bundled test set has no rows in {', '.join(missing)}; it has {', '.join(tests)}.")
    training = train_probe(explorer, train, source_language)
    transfer = evaluate_transfer(explorer, training.head, {code: tests[code] for code in targets})
    return {"training": training.to_dict(), "transfer": transfer.to_dict()}


def target_languages_or_default(explorer: Explorer, chosen: Sequence[str] | str | None) -> list[str]:
    """The chosen target codes, checked; none chosen: the bundled test set's languages."""
    return target_languages(explorer, chosen) or default_targets(explorer.languages)


# ----- fine-tuning a private copy ---------------------------------------------------------------------


@dataclass
class Finetuned:
    """What fine-tuning made: the session's private copy of the model, and the head and record of its training."""

    explorer: Explorer
    training: ProbeTraining


def finetune(
    explorer: Explorer,
    examples,
    source_language: str,
    *,
    steps: int = 30,
    batch_size: int = 16,
    learning_rate: float | None = None,
    progress: Progress | None = None,
    seed: int = 0,
) -> Finetuned:
    """The paper's recipe on a private copy: embeddings and language adapters frozen, the source adapter active.

    Native backend: the shared transformer layers train (freeze_embeddings_and_language_adapters).
    Adapters backend: a new task adapter trains, stacked on the language adapter (Stack(lang, task)).
    A linear head on pooled features trains jointly. The explorer passed in is not changed.
    """
    start = time.monotonic()
    deadline = start + float(explorer.limits.max_train_seconds)
    items, source, labels = _training_set(explorer, examples, source_language)
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 100_000:
        raise ExplorerError(f"steps must be a whole number of at least 1; got {steps!r}.")
    native = explorer.backend.name == "transformers"
    copy_bytes = sum(p.numel() for p in explorer.backend.model.parameters()) * 4
    # Native: gradients and two Adam moments for the shared layers; a task adapter is small.
    needed = int(copy_bytes * (4 if native else 1.3))
    free = available_memory_bytes(explorer.loaded.device)
    if free is not None and needed > 0.8 * free:
        raise ExplorerError(
            f"Fine-tuning needs a private copy of the model (about {needed / 2**30:.1f} GiB with the optimizer) and "
            f"only {free / 2**30:.1f} GiB are free here. Train the probe without fine-tuning, or use a machine with "
            "more memory."
        )
    torch.manual_seed(seed)
    _report(progress, 0.0, "Copying the model for this session")
    # The copy outlives this request: a server's budget holds its memory for as long as the copy exists.
    with jobs.admitted(Cost(needed, 0.0, "A fine-tuned copy of the model"), hold=True) as holding:
        tuned = explorer.private_copy(f"{explorer.name} (fine-tuned on {source})")
        if holding is not None:
            weakref.finalize(tuned, holding.release)
    trainable = tuned.backend.start_finetuning(TASK_ADAPTER)
    rate = learning_rate or (2e-5 if native else 1e-3)
    rows = _rows(explorer, items, "training examples")
    initial = _features(tuned, rows, [source] * len(rows), progress=progress, span=(0.0, 0.2), deadline=deadline)
    mean, std = standardiser(initial)
    targets = torch.tensor([labels.index(example.label) for example in items])
    weight = torch.zeros(len(labels), initial.shape[1], requires_grad=True)
    bias = torch.zeros(len(labels), requires_grad=True)
    optimizer = torch.optim.AdamW(
        [
            {"params": trainable, "lr": rate, "weight_decay": 0.0},
            {"params": [weight, bias], "lr": 1e-2, "weight_decay": 1e-2},
        ]
    )
    generator = torch.Generator().manual_seed(seed)
    device = tuned.loaded.device
    losses: list[float] = []
    stopped = False
    model = tuned.backend.model
    model.train()
    try:
        for step in range(1, steps + 1):
            if time.monotonic() > deadline:
                stopped = True
                break
            jobs.checkpoint()
            chosen = torch.randperm(len(rows), generator=generator)[:batch_size].tolist()
            tokens = max(len(rows[i]) for i in chosen)
            step_cost = tuned.cost(len(chosen), tokens, grad=True, what=f"A fine-tuning step on {len(chosen)} rows")
            with jobs.admitted(step_cost), torch.enable_grad():
                pooled = tuned.pooled_batch([rows[i] for i in chosen], [source] * len(chosen), grad=True)
                logits = ((pooled - mean.to(device)) / std.to(device)) @ weight.to(device).T + bias.to(device)
                loss = torch.nn.functional.cross_entropy(logits, targets[chosen].to(device))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            losses.append(loss.item())
            _report(progress, 0.2 + 0.7 * step / steps, f"Fine-tuning: step {step} of {steps}, loss {losses[-1]:.4f}")
    finally:
        model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
    head = ProbeHead(
        weight.detach().cpu(),
        bias.detach().cpu(),
        mean,
        std,
        labels,
        source,
        tuned.name,
        FEATURE,
        len(items),
        "fine-tuned",
    )
    features = _features(tuned, rows, [source] * len(rows), progress=progress, span=(0.9, 1.0))
    note = (
        f"Stopped at the time cap of {explorer.limits.max_train_seconds:.0f} s after {len(losses)} steps."
        if stopped
        else ""
    )
    training = ProbeTraining(
        head=head,
        losses=losses,
        seconds=time.monotonic() - start,
        feature_seconds=0.0,
        examples=len(items),
        steps=len(losses),
        train_accuracy=accuracy(head.predict(features), [example.label for example in items]),
        stopped_early=stopped,
        note=note,
    )
    return Finetuned(tuned, training)
