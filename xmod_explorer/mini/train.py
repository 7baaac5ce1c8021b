"""Pre-train the mini X-MOD: shared transformer and per-language adapters trained jointly from step 0.

As in the X-MOD paper, every row passes through its own language's adapter (``lang_ids``),
so each adapter only ever sees its language. Batches hold the same number of rows per language.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, XmodConfig, XmodForMaskedLM

from xmod_explorer.machine import describe
from xmod_explorer.mini.batches import PAD, Batch, balanced_batch, tokenize_paragraphs
from xmod_explorer.mini.corpus import MINI_LANGUAGES, read_split
from xmod_explorer.mini.mlm import masked_predictions
from xmod_explorer.mini.tokenizer import save_tokenizer, train_tokenizer
from xmod_explorer.tiny import xmod_config

TRAINING_RECORD = "training.json"  # in an exported model folder: the run's settings, machine and final log record


@dataclass
class TrainSettings:
    """Everything that defines a training run; saved beside its checkpoints."""

    corpus: str = "data/corpus"
    out: str = "runs/mini"
    languages: list[str] = field(default_factory=lambda: list(MINI_LANGUAGES))
    vocab_size: int = 12000
    tokenizer_sample_per_language: int = 4000
    layers: int = 4
    hidden: int = 256
    heads: int = 4
    ffn: int = 1024
    dropout: float = 0.0
    sinusoidal_positions: bool = True  # initialise the (learned) position embeddings with sinusoids
    seq_len: int = 128
    rows_per_language: int = 4
    steps: int = 2000
    warmup_steps: int = 100
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    mask_prob: float = 0.15
    seed: int = 0
    threads: int = 2
    log_every: int = 10
    checkpoint_every: int = 200
    stop_after: int = 0  # >0: checkpoint and stop after this step (resume later with the same settings)

    @classmethod
    def load(cls, path: str | Path) -> TrainSettings:
        """Settings saved by an earlier run."""
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))

    def differences(self, other: TrainSettings) -> list[str]:
        """Names of settings that change what is trained (not logging, threads or stopping)."""
        free = {"threads", "log_every", "checkpoint_every", "stop_after", "corpus", "out"}
        return [name for name, value in asdict(self).items() if name not in free and getattr(other, name) != value]


def build_config(settings: TrainSettings, vocab_size: int) -> XmodConfig:
    """An xmod-base-style config (post-norm, adapters reuse the output LayerNorm) at the mini size."""
    return xmod_config(
        vocab_size=vocab_size,
        hidden_size=settings.hidden,
        num_layers=settings.layers,
        num_heads=settings.heads,
        intermediate_size=settings.ffn,
        languages=settings.languages,
        style="base",
        hidden_dropout_prob=settings.dropout,
        attention_probs_dropout_prob=settings.dropout,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )


def init_sinusoidal_positions(model: XmodForMaskedLM) -> None:
    """Start the learned absolute position embeddings as sinusoids at the word embeddings' scale.

    With random position vectors the model needs many steps to discover which tokens are
    neighbours; sinusoids make a fixed offset a fixed rotation from the start.
    """
    table = model.roberta.embeddings.position_embeddings.weight
    count, width = table.shape
    positions = torch.arange(count, dtype=torch.float32).unsqueeze(1)
    frequencies = torch.pow(10000.0, -torch.arange(0, width, 2, dtype=torch.float32) / width)
    values = torch.zeros(count, width)
    values[:, 0::2] = torch.sin(positions * frequencies)
    values[:, 1::2] = torch.cos(positions * frequencies)
    values *= model.config.initializer_range / values.std()
    values[model.config.pad_token_id] = 0.0  # the padding position stays a zero vector
    with torch.no_grad():
        table.copy_(values)


def tokenizer_sample(settings: TrainSettings) -> list[str]:
    """The same number of training paragraphs from every language, drawn with the run's seed."""
    sample: list[str] = []
    for language in settings.languages:
        texts = read_split(settings.corpus, language, "train")
        random.Random(settings.seed).shuffle(texts)
        sample.extend(texts[: settings.tokenizer_sample_per_language])
    return sample


def prepare_tokenizer(settings: TrainSettings) -> PreTrainedTokenizerBase:
    """Train the run's tokenizer once (language-balanced sample) and reuse it on resume."""
    directory = Path(settings.out) / "tokenizer"
    if not (directory / "tokenizer.json").exists():
        tokenizer = train_tokenizer(tokenizer_sample(settings), settings.vocab_size)
        save_tokenizer(tokenizer, directory)
    return AutoTokenizer.from_pretrained(str(directory))


def learning_rate(settings: TrainSettings, step: int) -> float:
    """Linear warmup, then cosine decay to a tenth of the peak (settings: learning_rate, warmup_steps, steps)."""
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return settings.learning_rate * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress))))


def make_optimizer(model: torch.nn.Module, settings: TrainSettings) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases and LayerNorm weights."""
    decay, plain = [], []
    for name, param in model.named_parameters():
        (plain if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=settings.learning_rate, betas=(0.9, 0.98), eps=1e-6)


def step_loss(model: XmodForMaskedLM, batch: Batch, n_languages: int) -> tuple[torch.Tensor, list[float]]:
    """Mean masked-token cross-entropy, and the mean for each language's rows (nan if none masked)."""
    predictions = masked_predictions(
        model, batch.input_ids, batch.attention_mask, batch.lang_ids, batch.labels, batch.position_ids
    )
    losses = torch.nn.functional.cross_entropy(predictions.logits, predictions.targets, reduction="none")
    token_langs = batch.lang_ids[predictions.rows]
    sums = torch.zeros(n_languages).index_add_(0, token_langs, losses.detach())
    counts = torch.bincount(token_langs, minlength=n_languages)
    means = torch.where(counts > 0, sums / counts.clamp(min=1), torch.nan)
    return losses.mean(), means.tolist()


def save_checkpoint(model: XmodForMaskedLM, optimizer: torch.optim.Optimizer, step: int, out: Path) -> None:
    """Write model and optimizer state to out/checkpoint, replacing the previous one atomically."""
    staging = out / "checkpoint.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    torch.save({"step": step, "optimizer": optimizer.state_dict()}, staging / "trainer_state.pt")
    final = out / "checkpoint"
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)


def load_data(settings: TrainSettings, tokenizer: PreTrainedTokenizerBase) -> list[list[np.ndarray]]:
    """Tokenised training paragraphs for each language, in config order."""
    return [
        tokenize_paragraphs(tokenizer, read_split(settings.corpus, language, "train"), settings.seq_len - 2)
        for language in settings.languages
    ]


def train(settings: TrainSettings) -> Path:
    """Run (or resume) training; returns the checkpoint directory."""
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    tokenizer = prepare_tokenizer(settings)
    checkpoint = out / "checkpoint"
    if (checkpoint / "trainer_state.pt").exists():
        changed = TrainSettings.load(out / "settings.json").differences(settings)
        if changed:
            raise ValueError(f"{out} was started with other values of {changed}; resume with the same settings")
        model = XmodForMaskedLM.from_pretrained(str(checkpoint))
        state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
        optimizer = make_optimizer(model, settings)
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        _truncate_log(out / "log.jsonl", start)
        print(f"resuming at step {start}", flush=True)
    else:
        model = XmodForMaskedLM(build_config(settings, len(tokenizer)))
        if settings.sinusoidal_positions:
            init_sinusoidal_positions(model)
        optimizer = make_optimizer(model, settings)
        start = 0
        (out / "settings.json").write_text(json.dumps(asdict(settings), indent=2) + "\n", encoding="utf-8")
        (out / "log.jsonl").write_text("", encoding="utf-8")
        (out / "environment.json").write_text(json.dumps(describe_machine(settings), indent=2) + "\n", encoding="utf-8")
    model.train()
    data = load_data(settings, tokenizer)
    print(f"{model.num_parameters():,} parameters; paragraphs per language {[len(d) for d in data]}", flush=True)
    mask_id = tokenizer.mask_token_id
    began = time.perf_counter()
    elapsed_before, tokens = _progress_so_far(out / "log.jsonl")
    window: list[list[float]] = []
    window_loss: list[float] = []
    tokens_before = tokens
    with (out / "log.jsonl").open("a", encoding="utf-8") as log:
        for step in range(start, settings.steps):
            torch.manual_seed(settings.seed * 1_000_003 + step)  # dropout, reproducible across resumes
            batch = balanced_batch(
                data, settings.rows_per_language, settings.seq_len, mask_id, settings.seed, step, settings.mask_prob
            )
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(settings, step)
            loss, per_language = step_loss(model, batch, len(settings.languages))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            tokens += int((batch.position_ids != PAD).sum())
            window_loss.append(loss.item())
            window.append(per_language)
            done = step + 1
            if done % settings.log_every == 0 or done == settings.steps:
                seconds = time.perf_counter() - began
                record = {
                    "step": done,
                    "loss": round(float(np.mean(window_loss)), 4),
                    "loss_by_language": {
                        lang: round(float(np.nanmean([w[i] for w in window])), 4)
                        for i, lang in enumerate(settings.languages)
                    },
                    "lr": learning_rate(settings, step),
                    "tokens_per_s": round((tokens - tokens_before) / seconds, 1),
                    "tokens_seen": tokens,
                    "elapsed_s": round(elapsed_before + seconds, 1),
                }
                _write_record(log, record, settings.steps)
                window, window_loss = [], []
            stopping = done == settings.steps or done == settings.stop_after
            if done % settings.checkpoint_every == 0 or stopping:
                save_checkpoint(model, optimizer, done, out)
            if stopping:
                break
    return checkpoint


def _write_record(log, record: dict, steps: int) -> None:
    """Append a record to the JSON-lines log and print it as one line."""
    log.write(json.dumps(record) + "\n")
    log.flush()
    by_language = " ".join(f"{k[:2]}={v:.2f}" for k, v in record["loss_by_language"].items())
    print(
        f"step {record['step']}/{steps} loss {record['loss']:.3f} lr {record['lr']:.2e} "
        f"{record['tokens_per_s']:.0f} tok/s {by_language}",
        flush=True,
    )


def describe_machine(settings: TrainSettings) -> dict:
    """CPU, thread count and library versions, for the model card."""
    machine = describe()
    return {
        "cpu": machine["cpu"],
        "cpu_count": machine["cores"],
        "torch_threads": settings.threads,
        "torch": machine["torch"],
        "transformers": machine["transformers"],
        "python": machine["python"],
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _progress_so_far(log_path: Path) -> tuple[float, int]:
    """(training seconds, tokens) already logged by an interrupted run; zeros for a fresh one."""
    if not log_path.exists():
        return 0.0, 0
    lines = [line for line in log_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        return 0.0, 0
    last = json.loads(lines[-1])
    return last["elapsed_s"], last.get("tokens_seen", 0)


def _truncate_log(log_path: Path, step: int) -> None:
    """Drop log records past the checkpoint being resumed, so steps are not logged twice."""
    if not log_path.exists():
        return
    lines = [line for line in log_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    log_path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")


def training_record(run: str | Path) -> dict:
    """What the model card needs from a run: its settings, machine, and final log record."""
    run = Path(run)
    lines = [line for line in (run / "log.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    return {
        "settings": json.loads((run / "settings.json").read_text(encoding="utf-8")),
        "environment": json.loads((run / "environment.json").read_text(encoding="utf-8")),
        "last_log": json.loads(lines[-1]),
    }
