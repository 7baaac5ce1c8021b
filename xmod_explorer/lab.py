"""The transfer lab's steps on a loaded Explorer: classify, pooled features, probe training, transfer, fine-tuning.

Explorer's methods (classify, train_probe, evaluate_transfer, finetune) are thin wrappers over the
functions here; inputs are checked here once. Nothing here changes the shared model: probes read
frozen features under ``torch.inference_mode()``, and fine-tuning works on a private deep copy.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from xmod_explorer.classify import (
    FEATURE,
    Classification,
    ProbeHead,
    ProbeTraining,
    TransferResult,
    TransferRow,
    accuracy,
    fit_linear_head,
    majority_share,
    standardiser,
)
from xmod_explorer.datasets import Example, as_examples
from xmod_explorer.errors import ExplorerError
from xmod_explorer.languages import resolve_language
from xmod_explorer.similarity import mean_pool

if TYPE_CHECKING:
    from xmod_explorer.engine import Explorer

log = logging.getLogger(__name__)

Progress = Callable[..., object]  # called as progress(fraction, desc="..."); a gr.Progress fits
TASK_ADAPTER = "lab_task"


def _report(progress: Progress | None, fraction: float, text: str) -> None:
    if progress is not None:
        progress(min(max(fraction, 0.0), 1.0), desc=text)


def _no_classifier_message(explorer: Explorer) -> str:
    kind = type(explorer.backend.model).__name__
    return (
        f"This checkpoint ({explorer.name}, loaded as {kind}) has no sequence-classification head, so it cannot "
        "classify by itself. Load an XmodForSequenceClassification checkpoint (config.json architectures), or an "
        "adapters-format model with a classification head; or train a probe in the transfer lab and classify with it."
    )


def check_head(explorer: Explorer, head: object) -> ProbeHead:
    """head must be a ProbeHead trained on features of this model."""
    if not isinstance(head, ProbeHead):
        raise ExplorerError(
            f"head must be a ProbeHead (from train_probe or ProbeHead.load); got {type(head).__name__}."
        )
    hidden = int(explorer.backend.model.config.hidden_size)
    if head.hidden_size != hidden or head.model != explorer.name:
        raise ExplorerError(
            f"This head was trained on {head.model} (hidden size {head.hidden_size}); the loaded model is "
            f"{explorer.name} (hidden size {hidden}). Load that model again, or train a new head here."
        )
    return head


# ----- classify one text ------------------------------------------------------------------------


def classify(explorer: Explorer, text: str, languages, head: ProbeHead | None = None) -> Classification:
    """Label probabilities for text under each language's adapter, all languages in one batched pass."""
    if head is None and explorer.backend.classifier_labels() is None:
        raise ExplorerError(_no_classifier_message(explorer))
    if head is not None:
        head = check_head(explorer, head)
    codes = explorer._languages(languages)
    ids = explorer._tokenize(text)
    input_ids, attention = explorer._tensor([ids])
    with torch.inference_mode():
        encoded = explorer.backend.encode_adapters(input_ids, attention, codes)
        if head is None:
            labels = explorer.backend.classifier_labels()
            probabilities = explorer.backend.classifier_logits(encoded.last).float().softmax(-1).cpu()
        else:
            labels = head.labels
            keep = _content_mask(explorer, input_ids.expand(len(codes), -1), attention.expand(len(codes), -1))
            probabilities = head.probabilities(mean_pool(encoded.last.float(), keep))
    return Classification(
        model=explorer.name,
        text=text,
        labels=list(labels),
        languages=codes,
        probabilities={
            code: {label: float(p) for label, p in zip(labels, row)} for code, row in zip(codes, probabilities)
        },
        head="checkpoint" if head is None else head.describe(),
    )


# ----- pooled features ----------------------------------------------------------------------------


def _content_mask(explorer: Explorer, input_ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    special = torch.tensor(sorted(explorer._special_ids), device=input_ids.device)
    return attention.bool() & ~torch.isin(input_ids, special)


def pooled_features(
    explorer: Explorer,
    token_rows: Sequence[Sequence[int]],
    row_languages: Sequence[str],
    *,
    batch_size: int = 32,
    progress: Progress | None = None,
    span: tuple[float, float] = (0.0, 1.0),
    deadline: float | None = None,
    grad: bool = False,
) -> torch.Tensor:
    """Mean-pooled last hidden states (n, hidden), float32 on the CPU, each row under its own language.

    Rows are sorted by length so that batches carry little padding.
    """
    order = sorted(range(len(token_rows)), key=lambda i: len(token_rows[i]))
    hidden = int(explorer.backend.model.config.hidden_size)
    out = torch.empty(len(token_rows), hidden)
    batches = math.ceil(len(order) / batch_size)
    for number, start in enumerate(range(0, len(order), batch_size), start=1):
        if deadline is not None and time.monotonic() > deadline:
            raise ExplorerError(
                f"Computing sentence features took longer than the {explorer.limits.max_train_seconds:.0f} s allowed "
                "here; "
                "nothing was trained. Use fewer or shorter examples."
            )
        chosen = order[start : start + batch_size]
        input_ids, attention = explorer._tensor([list(token_rows[i]) for i in chosen])
        codes = [row_languages[i] for i in chosen]
        with torch.inference_mode():
            encoded = explorer.backend.encode_rows(input_ids, attention, codes)
            pooled = mean_pool(encoded.last.float(), _content_mask(explorer, input_ids, attention))
        out[chosen] = pooled.cpu()
        _report(
            progress,
            span[0] + (span[1] - span[0]) * number / batches,
            f"Sentence features: batch {number} of {batches}",
        )
    return out


def _rows(explorer: Explorer, examples: Sequence[Example], what: str) -> list[list[int]]:
    return [
        explorer._tokenize(example.text, what=f"text in row {number} of the {what}")
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
    explorer.backend.ensure_languages([source])
    return items, source, labels


# ----- the probe ------------------------------------------------------------------------------------


def train_probe(
    explorer: Explorer,
    examples,
    source_language: str,
    *,
    max_steps: int = 100,
    weight_decay: float = 1e-2,
    batch_size: int = 32,
    progress: Progress | None = None,
    seed: int = 0,
) -> ProbeTraining:
    """Train a linear softmax head on frozen features computed under the source language's adapter."""
    start = time.monotonic()
    deadline = start + float(explorer.limits.max_train_seconds)
    items, source, labels = _training_set(explorer, examples, source_language)
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or not 1 <= max_steps <= 10_000:
        raise ExplorerError(f"max_steps must be a whole number from 1 to 10000; got {max_steps!r}.")
    torch.manual_seed(seed)
    rows = _rows(explorer, items, "training examples")
    _report(progress, 0.0, f"Sentence features for {len(items)} examples under {source}")
    features = pooled_features(
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
        _report(progress, 0.8 + 0.2 * step / max_steps, f"Training the probe: step {step}, loss {loss:.4f}")

    weight, bias, losses, stopped = fit_linear_head(
        (features - mean) / std,
        targets,
        len(labels),
        weight_decay=weight_decay,
        max_steps=max_steps,
        deadline=deadline,
        on_step=on_step,
    )
    head = ProbeHead(weight, bias, mean, std, labels, source, explorer.name, FEATURE, len(items))
    seconds = time.monotonic() - start
    note = (
        f"Stopped at the time cap of {explorer.limits.max_train_seconds:.0f} s after {len(losses)} steps; the head "
        "is usable but may not be fully trained."
        if stopped
        else ""
    )
    _report(progress, 1.0, "Probe trained")
    return ProbeTraining(
        head=head,
        losses=losses,
        seconds=seconds,
        feature_seconds=feature_seconds,
        examples=len(items),
        steps=len(losses),
        train_accuracy=accuracy(head.predict(features), [example.label for example in items]),
        stopped_early=stopped,
        note=note,
    )


# ----- transfer -------------------------------------------------------------------------------------


def _test_sets(explorer: Explorer, examples, target_languages) -> dict[str, list[Example]]:
    """Test rows grouped by model language code; with target languages given, rows in other languages are left out."""
    chosen = None if target_languages in (None, "", []) else explorer._languages(target_languages)
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
    """Accuracy per target language with the target's adapter and with the source's adapter, in batched passes."""
    head = check_head(explorer, head)
    groups = _test_sets(explorer, examples, target_languages)
    source = head.source_language
    if source not in explorer.languages:
        raise ExplorerError(f"The head was trained with the {source} adapter, which this model does not have.")
    for code, rows in groups.items():
        for number, example in enumerate(rows, start=1):
            if example.label not in head.labels:
                raise ExplorerError(
                    f"Row {number} of the {code} test examples has the label {example.label!r}, which the head does "
                    "not know "
                    f"(its labels: {', '.join(head.labels)})."
                )
    explorer.backend.ensure_languages(sorted(set(groups) | {source}, key=explorer.languages.index))
    token_rows, row_languages = [], []
    for code, rows in groups.items():
        tokens = _rows(explorer, rows, f"{code} test examples")
        token_rows += tokens + tokens  # each text twice: under the target's adapter, then under the source's
        row_languages += [code] * len(tokens) + [source] * len(tokens)
    features = pooled_features(explorer, token_rows, row_languages, batch_size=batch_size, progress=progress)
    predicted = head.predict(features)
    result_rows, offset = [], 0
    for code, rows in groups.items():
        gold = [example.label for example in rows]
        n = len(rows)
        result_rows.append(
            TransferRow(
                language=code,
                examples=n,
                target_adapter_accuracy=accuracy(predicted[offset : offset + n], gold),
                source_adapter_accuracy=accuracy(predicted[offset + n : offset + 2 * n], gold),
                majority_share=majority_share(gold),
            )
        )
        offset += 2 * n
    return TransferResult(model=explorer.name, source_language=source, labels=list(head.labels), rows=result_rows)


# ----- fine-tuning a private copy ---------------------------------------------------------------------


def free_memory_bytes(device: torch.device) -> int | None:
    """Free memory on device (None if unknown): CUDA's own count, else MemAvailable from /proc/meminfo."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _private_copy(explorer: Explorer, name: str) -> Explorer:
    """A float32 deep copy of the model in a new Explorer: what fine-tuning may change."""
    from xmod_explorer.backends import AdapterBackend, NativeBackend
    from xmod_explorer.engine import Explorer

    backend = explorer.backend
    model = copy.deepcopy(backend.model).to(dtype=torch.float32)
    if isinstance(backend, NativeBackend):
        runner = NativeBackend(model, backend.languages)
    else:
        runner = AdapterBackend(
            model, backend.languages, backend.adapter_source, dtype=torch.float32, mlm_head=backend.mlm_head_name
        )
        runner.classifier_head = backend.classifier_head
        runner.task_adapter = backend.task_adapter
    runner.has_mlm = getattr(backend, "has_mlm", False)
    loaded = dataclasses.replace(explorer.loaded, backend=runner, dtype=torch.float32)
    reason = f"a private fine-tuned copy of {explorer.name}"
    return Explorer(loaded, reason=reason, random_weights=explorer.random_weights, limits=explorer.limits, name=name)


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
) -> ProbeTraining:
    """The paper's recipe on a private copy: embeddings and language adapters frozen, the source adapter active.

    Native backend: the shared transformer layers are trained (freeze_embeddings_and_language_adapters).
    Adapters backend: a new task adapter is trained, stacked on the language adapter (Stack(lang, task)).
    A linear head on pooled features is trained jointly. The result's ``explorer`` is the copy; the model
    this was called on is not changed.
    """
    from adapters import SeqBnConfig

    from xmod_explorer.backends import NativeBackend

    start = time.monotonic()
    deadline = start + float(explorer.limits.max_train_seconds)
    items, source, labels = _training_set(explorer, examples, source_language)
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 100_000:
        raise ExplorerError(f"steps must be a whole number of at least 1; got {steps!r}.")
    native = isinstance(explorer.backend, NativeBackend)
    if not native and explorer.backend.task_adapter is not None:
        raise ExplorerError(
            "This checkpoint already stacks a task adapter; the lab fine-tunes plain X-MOD checkpoints only."
        )
    parameters = list(explorer.backend.model.parameters())
    copy_bytes = sum(p.numel() for p in parameters) * 4
    # Native: gradients and two Adam moments for the shared layers; a task adapter is small.
    needed = int(copy_bytes * (4 if native else 1.3))
    free = free_memory_bytes(explorer.loaded.device)
    if free is not None and needed > 0.8 * free:
        raise ExplorerError(
            f"Fine-tuning needs a private copy of the model (about {needed / 2**30:.1f} GiB with the optimizer) and "
            "only "
            f"{free / 2**30:.1f} GiB are free here. Train the probe without fine-tuning, or use a machine with more "
            "memory."
        )
    torch.manual_seed(seed)
    _report(progress, 0.0, "Copying the model for this session")
    tuned = _private_copy(explorer, f"{explorer.name} (fine-tuned on {source})")
    model = tuned.backend.model
    if native:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        model.freeze_embeddings_and_language_adapters()
        trainable = [
            p for name, p in model.named_parameters() if p.requires_grad and name.startswith("roberta.encoder.")
        ]
        for name, parameter in model.named_parameters():
            if not name.startswith("roberta.encoder."):
                parameter.requires_grad_(False)  # heads and pooler: not part of this objective
        rate = learning_rate or 2e-5
    else:
        reduction = max(1, int(model.config.hidden_size) // 48)
        model.add_adapter(TASK_ADAPTER, config=SeqBnConfig(reduction_factor=reduction))
        model.to(device=tuned.loaded.device, dtype=torch.float32)
        tuned.backend.task_adapter = TASK_ADAPTER
        marker = f".adapters.{TASK_ADAPTER}."
        trainable = []
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(marker in name)
            if marker in name:
                trainable.append(parameter)
        rate = learning_rate or 1e-3
    rows = _rows(explorer, items, "training examples")
    initial = pooled_features(tuned, rows, [source] * len(rows), progress=progress, span=(0.0, 0.2), deadline=deadline)
    mean, std = standardiser(initial)
    targets = torch.tensor([labels.index(example.label) for example in items])
    weight = torch.zeros(len(labels), initial.shape[1], requires_grad=True)
    bias = torch.zeros(len(labels), requires_grad=True)
    optimizer = torch.optim.AdamW(
        [
            {"params": trainable, "lr": rate, "weight_decay": 0.01},
            {"params": [weight, bias], "lr": 1e-2, "weight_decay": 1e-2},
        ]
    )
    generator = torch.Generator().manual_seed(seed)
    device = tuned.loaded.device
    losses: list[float] = []
    stopped = False
    model.train()
    try:
        for step in range(1, steps + 1):
            if time.monotonic() > deadline:
                stopped = True
                break
            chosen = torch.randperm(len(rows), generator=generator)[:batch_size].tolist()
            input_ids, attention = tuned._tensor([rows[i] for i in chosen])
            with torch.enable_grad():
                encoded = tuned.backend.encode_rows(input_ids, attention, [source] * len(chosen))
                pooled = mean_pool(encoded.last.float(), _content_mask(tuned, input_ids, attention))
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
    features = pooled_features(tuned, rows, [source] * len(rows), progress=progress, span=(0.9, 1.0))
    note = (
        f"Stopped at the time cap of {explorer.limits.max_train_seconds:.0f} s after {len(losses)} steps."
        if stopped
        else ""
    )
    return ProbeTraining(
        head=head,
        losses=losses,
        seconds=time.monotonic() - start,
        feature_seconds=0.0,
        examples=len(items),
        steps=len(losses),
        train_accuracy=accuracy(head.predict(features), [example.label for example in items]),
        stopped_early=stopped,
        note=note,
        explorer=tuned,
    )
