"""Add a language to a trained X-MOD after pre-training: one new adapter, every other weight frozen.

This is X-MOD's post-hoc recipe. The embeddings, the shared layers, the LM head and every existing
adapter stay exactly as they are, so the model's behaviour for its original languages cannot change;
``original_tensors.sha256.json`` in the model folder records a hash of every tensor from before the
first addition, and :func:`changed_tensors` checks a weights file against it.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, PreTrainedTokenizerBase, XmodForMaskedLM

from xmod_explorer.mini.batches import PAD, balanced_batch, tokenize_paragraphs
from xmod_explorer.mini.corpus import build_corpus, help_package, read_split
from xmod_explorer.mini.evaluate import EVALUATION_SAMPLE, MASK_ROUNDS, MaskedSet, masked_set, score
from xmod_explorer.mini.mlm import masked_predictions
from xmod_explorer.mini.train import describe_machine, learning_rate
from xmod_explorer.stats import wilson_interval

WEIGHTS = "model.safetensors"
ORIGINAL_HASHES = "original_tensors.sha256.json"
POST_HOC_RECORD = "post_hoc.json"  # per added language: data, settings, initialisations compared, timing


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's raw bytes (its dtype's in-memory layout, row-major)."""
    raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    return hashlib.sha256(raw.numpy().tobytes()).hexdigest()


def tensor_hashes(weights: str | Path) -> dict[str, dict]:
    """Name -> {"dtype", "shape", "sha256"} for every tensor of a safetensors file."""
    hashes = {}
    with safe_open(str(weights), framework="pt") as handle:
        for name in sorted(handle.keys()):
            tensor = handle.get_tensor(name)
            hashes[name] = {
                "dtype": str(tensor.dtype).replace("torch.", ""),
                "shape": list(tensor.shape),
                "sha256": tensor_digest(tensor),
            }
    return hashes


def record_original_tensors(model_dir: str | Path) -> Path:
    """Write model_dir/original_tensors.sha256.json: the hash of every tensor as it is now."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    record = {
        "about": (
            "SHA-256 of the raw bytes of every tensor in model.safetensors before any language was added post "
            "hoc. Adding a language must leave each of these tensors bit-identical."
        ),
        "languages": list(config["languages"]),
        "model_safetensors_sha256": hashlib.sha256((model_dir / WEIGHTS).read_bytes()).hexdigest(),
        "tensors": tensor_hashes(model_dir / WEIGHTS),
    }
    path = model_dir / ORIGINAL_HASHES
    path.write_text(_one_tensor_a_line(record), encoding="utf-8")
    return path


def _one_tensor_a_line(record: dict) -> str:
    """JSON with one line per tensor, so a diff of the file names the tensor that changed."""
    head = {key: value for key, value in record.items() if key != "tensors"}
    lines = [json.dumps(head, indent=1)[:-2] + ",", ' "tensors": {']
    entries = [f"  {json.dumps(name)}: {json.dumps(entry)}" for name, entry in record["tensors"].items()]
    lines.append(",\n".join(entries))
    lines.append(" }\n}\n")
    return "\n".join(lines)


def changed_tensors(weights: str | Path, recorded: dict) -> list[str]:
    """Names of recorded tensors that are missing from the weights file or differ in dtype, shape or bytes."""
    current = tensor_hashes(weights)
    return sorted(name for name, entry in recorded["tensors"].items() if current.get(name) != entry)


# --- training one new adapter ----------------------------------------------------------------------


@dataclass
class AddLanguageSettings:
    """Everything that defines the addition of one language; saved with the run and in the model folder."""

    language: str = "nl_XX"
    model: str = "assets/xmod-mini"
    target: str = ""  # where the extended model is written; empty: the model folder itself
    corpus: str = "data/corpus"
    cache: str = "data/debs"
    out: str = ""  # run folder (settings, log); empty: runs/add-<language>
    init: str = "compare"  # "compare" (copy of the closest adapter vs mean of all), "mean", or a code to copy
    # 675 steps x 16 rows = 10,800 rows of up to 128 tokens: what each original adapter saw in pre-training
    # (2,700 steps x 4 rows per language).
    steps: int = 675
    warmup_steps: int = 40
    rows: int = 16  # rows per batch, all of the new language
    seq_len: int = 128
    learning_rate: float = 1e-3  # the pre-training's peak; linear warm-up, then cosine decay to a tenth
    weight_decay: float = 0.01
    mask_prob: float = 0.15
    seed: int = 0
    threads: int = 1  # on a shared 2-core machine one thread was faster than two (0.37 vs 0.58 s a step)
    log_every: int = 25
    eval_every: int = 75
    eval_sample: int = EVALUATION_SAMPLE  # held-out paragraphs kept for the final evaluation, never used here

    def run_dir(self) -> Path:
        """The run folder: settings.json, environment.json, log.jsonl."""
        return Path(self.out or f"runs/add-{self.language}")

    def target_dir(self) -> Path:
        """The folder the extended model is written to."""
        return Path(self.target or self.model)


@dataclass
class Candidate:
    """One initialisation of the new adapter, trained with the run's budget, and its learning curve."""

    name: str  # "copy of de_DE" or "mean of 12 adapters"
    sources: list[str]
    curve: list[dict] = field(default_factory=list)  # {"step", "accuracy", "perplexity", "correct", "masked"}
    state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    final_loss: float = float("nan")
    seconds: float = 0.0

    @property
    def final(self) -> dict:
        """The last point of the learning curve."""
        return self.curve[-1]

    def to_dict(self) -> dict:
        """JSON-ready summary (without the weights)."""
        low, high = wilson_interval(self.final["correct"], self.final["masked"])
        return {
            "sources": self.sources,
            "curve": self.curve,
            "selection_accuracy": self.final["accuracy"],
            "selection_accuracy_ci95": [round(100 * low, 2), round(100 * high, 2)],
            "final_training_loss": round(self.final_loss, 4),
            "seconds": round(self.seconds, 1),
        }


def selection_texts(corpus: str | Path, language: str, eval_sample: int, seed: int = 0) -> list[str]:
    """Held-out paragraphs outside the final evaluation's sample: for choosing the initialisation.

    ``evaluate`` scores the first ``eval_sample`` paragraphs of the held-out split in a fixed shuffled
    order (``heldout_texts`` with its default seed 0); the rest of that order is used here, so the
    choice of initialisation never sees the text the reported accuracy is measured on.
    """
    texts = read_split(corpus, language, "heldout")
    random.Random(seed).shuffle(texts)
    rest = texts[eval_sample:]
    if not rest:
        raise ValueError(f"{language} has only {len(texts)} held-out paragraphs, all in the evaluation sample")
    return rest


def extended_model(model_dir: str | Path, language: str) -> XmodForMaskedLM:
    """The saved model in float32 with one more adapter (the last lang id) for language, randomly initialised."""
    config = json.loads(Path(model_dir, "config.json").read_text(encoding="utf-8"))
    if language in config["languages"]:
        raise ValueError(f"{model_dir} already has an adapter for {language}")
    languages = [*config["languages"], language]
    model, info = XmodForMaskedLM.from_pretrained(
        str(model_dir), languages=languages, dtype=torch.float32, output_loading_info=True
    )
    expected = {name for name in model.state_dict() if f".adapter_modules.{language}." in name}
    if set(info["missing_keys"]) != expected or info["unexpected_keys"] or info["mismatched_keys"]:
        raise RuntimeError(f"loading {model_dir} with a new adapter did not go as expected: {info}")
    return model


def new_adapters(model: XmodForMaskedLM, language: str) -> list[torch.nn.Module]:
    """The new language's adapter module in every layer."""
    return [layer.output.adapter_modules[language] for layer in model.roberta.encoder.layer]


def freeze_all_but(model: XmodForMaskedLM, language: str) -> list[torch.nn.Parameter]:
    """Freeze every parameter except the language's adapters; returns the trainable ones."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trainable = [p for module in new_adapters(model, language) for p in module.parameters()]
    for parameter in trainable:
        parameter.requires_grad_(True)
    return trainable


@torch.no_grad()
def initialise_adapter(model: XmodForMaskedLM, language: str, sources: Sequence[str]) -> None:
    """Set the new adapter in every layer to the mean of the sources' adapters (one source: a copy)."""
    for layer in model.roberta.encoder.layer:
        modules = layer.output.adapter_modules
        for name, parameter in modules[language].named_parameters():
            parameter.copy_(torch.stack([modules[s].get_parameter(name) for s in sources]).mean(0))


def adapter_state(model: XmodForMaskedLM, language: str) -> dict[str, torch.Tensor]:
    """The new adapter's tensors under their state-dict names (a copy)."""
    marker = f".adapter_modules.{language}."
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items() if marker in name}


def _adapter_optimizer(parameters: list[torch.nn.Parameter], settings: AddLanguageSettings) -> torch.optim.AdamW:
    """AdamW as in pre-training: weight decay on the weight matrices, none on biases."""
    groups = [
        {"params": [p for p in parameters if p.ndim >= 2], "weight_decay": settings.weight_decay},
        {"params": [p for p in parameters if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=settings.learning_rate, betas=(0.9, 0.98), eps=1e-6)


def _selection_point(model: XmodForMaskedLM, data: MaskedSet, lang_id: int, step: int) -> dict:
    """Masked accuracy (%) and perplexity on the selection text at a step."""
    correct, nll, count = score(model, data, lang_id)
    return {
        "step": step,
        "accuracy": round(100 * correct / max(count, 1), 2),
        "perplexity": round(math.exp(nll / max(count, 1)), 2),
        "correct": correct,
        "masked": count,
    }


def train_candidate(
    model: XmodForMaskedLM,
    candidate: Candidate,
    data: list[np.ndarray],
    selection: MaskedSet,
    tokenizer: PreTrainedTokenizerBase,
    settings: AddLanguageSettings,
    log,
) -> Candidate:
    """Initialise the new adapter from the candidate's sources and train it for settings.steps steps."""
    language = settings.language
    lang_id = model.config.languages.index(language)
    torch.manual_seed(settings.seed)
    initialise_adapter(model, language, candidate.sources)
    trainable = freeze_all_but(model, language)
    optimizer = _adapter_optimizer(trainable, settings)
    model.eval()  # no dropout in the mini model; eval also keeps the frozen parts exactly as they are
    candidate.curve = [_selection_point(model, selection, lang_id, 0)]
    began = time.perf_counter()
    losses: list[float] = []
    tokens = 0
    for step in range(settings.steps):
        batch = balanced_batch(
            [data], settings.rows, settings.seq_len, tokenizer.mask_token_id, settings.seed, step, settings.mask_prob
        )
        lang_ids = torch.full_like(batch.lang_ids, lang_id)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(settings, step)
        predictions = masked_predictions(
            model, batch.input_ids, batch.attention_mask, lang_ids, batch.labels, batch.position_ids
        )
        loss = torch.nn.functional.cross_entropy(predictions.logits, predictions.targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        losses.append(loss.item())
        tokens += int((batch.position_ids != PAD).sum())
        done = step + 1
        if done % settings.log_every == 0 or done == settings.steps:
            record = {
                "init": candidate.name,
                "step": done,
                "loss": round(float(np.mean(losses[-settings.log_every :])), 4),
                "lr": learning_rate(settings, step),
                "tokens_per_s": round(tokens / (time.perf_counter() - began), 1),
                "elapsed_s": round(time.perf_counter() - began, 1),
            }
            if done % settings.eval_every == 0 or done == settings.steps:
                point = _selection_point(model, selection, lang_id, done)
                candidate.curve.append(point)
                record["selection_accuracy"] = point["accuracy"]
            log.write(json.dumps(record) + "\n")
            log.flush()
            extra = f" selection accuracy {record['selection_accuracy']:.2f}%" if "selection_accuracy" in record else ""
            print(f"{candidate.name} step {done}/{settings.steps} loss {record['loss']:.3f}{extra}", flush=True)
    candidate.final_loss = float(np.mean(losses[-settings.log_every :]))
    candidate.seconds = time.perf_counter() - began
    candidate.state = adapter_state(model, language)
    return candidate


def closest_adapter(model: XmodForMaskedLM, selection: MaskedSet, originals: Sequence[str]) -> tuple[str, dict]:
    """The original adapter with the highest masked accuracy on the new language's selection text, and all scores."""
    scores = {}
    for code in originals:
        correct, _, count = score(model, selection, model.config.languages.index(code))
        scores[code] = round(100 * correct / max(count, 1), 2)
    return max(scores, key=scores.get), scores


def candidates_for(settings: AddLanguageSettings, originals: Sequence[str], closest: str) -> list[Candidate]:
    """The initialisations to train: both of the paper's options, or the one the settings name."""
    mean = Candidate(f"mean of {len(originals)} adapters", list(originals))
    if settings.init == "compare":
        return [Candidate(f"copy of {closest}", [closest]), mean]
    if settings.init == "mean":
        return [mean]
    if settings.init not in originals:
        raise ValueError(f"init must be 'compare', 'mean' or one of {', '.join(originals)}; got {settings.init!r}")
    return [Candidate(f"copy of {settings.init}", [settings.init])]


def add_language(settings: AddLanguageSettings) -> dict:
    """Train the new adapter (comparing initialisations), write the extended model; returns what was recorded."""
    source, target, run = Path(settings.model), settings.target_dir(), settings.run_dir()
    language = settings.language
    help_package(language)  # a clear error for a language without LibreOffice help, before any work
    if language in json.loads((source / "config.json").read_text(encoding="utf-8"))["languages"]:
        raise ValueError(f"{source} already has an adapter for {language}")
    torch.set_num_threads(settings.threads)
    if not Path(settings.corpus, f"{language}.train.txt").exists():
        build_corpus(settings.corpus, settings.cache, [language])
    original_hashes = _original_hashes(source)
    changed = changed_tensors(source / WEIGHTS, original_hashes)
    if changed:
        raise ValueError(f"{source} differs from its {ORIGINAL_HASHES} in {len(changed)} tensors, e.g. {changed[:3]}")
    run.mkdir(parents=True, exist_ok=True)
    (run / "settings.json").write_text(json.dumps(asdict(settings), indent=2) + "\n", encoding="utf-8")
    environment = describe_machine(settings)
    (run / "environment.json").write_text(json.dumps(environment, indent=2) + "\n", encoding="utf-8")

    tokenizer = AutoTokenizer.from_pretrained(str(source))
    model = extended_model(source, language)
    originals = list(model.config.languages[:-1])
    data = tokenize_paragraphs(tokenizer, read_split(settings.corpus, language, "train"), settings.seq_len - 2)
    texts = selection_texts(settings.corpus, language, settings.eval_sample)
    selection = masked_set(tokenizer, texts, seed=settings.seed, rounds=MASK_ROUNDS)
    closest, zero_shot = closest_adapter(model, selection, originals)
    print(f"{len(data)} training paragraphs; {len(texts)} selection paragraphs ({selection.masked} masked tokens)")
    print(f"original adapters on {language} selection text: {zero_shot}; closest {closest}", flush=True)

    began = time.perf_counter()
    trained = []
    with (run / "log.jsonl").open("w", encoding="utf-8") as log:
        for candidate in candidates_for(settings, originals, closest):
            trained.append(train_candidate(model, candidate, data, selection, tokenizer, settings, log))
    best = max(trained, key=lambda c: (c.final["accuracy"], -c.final["perplexity"]))
    seconds = time.perf_counter() - began
    model.load_state_dict(best.state, strict=False)

    rounded = {name: tensor.half() for name, tensor in best.state.items()}
    float16 = _float16_check(model, selection, language, rounded)
    record = {
        "language": language,
        "added_to": originals,
        "corpus": _manifest_entry(settings.corpus, language),
        "settings": asdict(settings),
        "environment": environment,
        "trainable_parameters": sum(t.numel() for t in best.state.values()),
        "selection_text": {
            "what": f"held-out {language} paragraphs outside the evaluation sample (first {settings.eval_sample})",
            "paragraphs": len(texts),
            "masked_tokens": selection.masked,
        },
        "original_adapters_on_selection_text": zero_shot,
        "candidates": {c.name: c.to_dict() for c in trained},
        "chosen": best.name,
        "seconds": round(seconds, 1),
        "float16_check": float16,
    }
    (run / "result.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    write_extended_model(source, target, language, rounded, record, original_hashes)
    print(json.dumps({k: record[k] for k in ("chosen", "seconds", "float16_check")}, indent=2))
    return record


def _float16_check(
    model: XmodForMaskedLM, selection: MaskedSet, language: str, rounded: dict[str, torch.Tensor]
) -> dict:
    """Selection accuracy of the new adapter in float32 and with its weights rounded to float16 (as stored)."""
    lang_id = model.config.languages.index(language)
    float32 = _selection_point(model, selection, lang_id, 0)["accuracy"]
    model.load_state_dict({name: tensor.float() for name, tensor in rounded.items()}, strict=False)
    float16 = _selection_point(model, selection, lang_id, 0)["accuracy"]
    return {"accuracy_float32": float32, "accuracy_float16_weights": float16}


def _manifest_entry(corpus: str | Path, language: str) -> dict:
    """The corpus manifest's record of one language (sources, paragraph counts), or {}."""
    path = Path(corpus, "manifest.json")
    manifest = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    return manifest.get("languages", {}).get(language, {})


def _original_hashes(model_dir: Path) -> dict:
    """The model folder's recorded original tensors; recorded now if the model has had no addition yet."""
    path = model_dir / ORIGINAL_HASHES
    if not path.exists():
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        if config.get("post_hoc_languages"):
            raise ValueError(f"{model_dir} has languages added post hoc but no {ORIGINAL_HASHES} to check against")
        record_original_tensors(model_dir)
    return json.loads(path.read_text(encoding="utf-8"))


def write_extended_model(
    source: Path, target: Path, language: str, adapter: dict[str, torch.Tensor], record: dict, original_hashes: dict
) -> None:
    """Write target: the source's tensors byte for byte plus the new adapter, its config, post_hoc.json.

    The source's tensors are copied from its file, not from the trained model, so nothing the
    training did to them (it should have done nothing) can reach the written file; the hashes are
    checked again on the written file.
    """
    tensors = load_file(str(source / WEIGHTS))
    dtype = next(iter(tensors.values())).dtype
    tensors.update({name: tensor.to(dtype).contiguous() for name, tensor in adapter.items()})
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    config["languages"] = [*config["languages"], language]
    config["post_hoc_languages"] = [*config.get("post_hoc_languages", []), language]
    history = _read_json(source / POST_HOC_RECORD)
    history[language] = record
    target.mkdir(parents=True, exist_ok=True)
    if target.resolve() != source.resolve():
        for path in source.iterdir():
            if path.is_file() and path.name not in (WEIGHTS, "config.json", POST_HOC_RECORD):
                shutil.copy2(path, target / path.name)
    staging = target / f"{WEIGHTS}.tmp"
    save_file(tensors, str(staging), metadata={"format": "pt"})
    changed = changed_tensors(staging, original_hashes)
    if changed:
        staging.unlink()
        raise RuntimeError(f"writing the extended model changed original tensors: {changed[:3]}")
    shutil.copymode(source / WEIGHTS, staging)  # safetensors writes the file owner-only
    staging.replace(target / WEIGHTS)
    (target / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (target / POST_HOC_RECORD).write_text(json.dumps(history, indent=2) + "\n", encoding="utf-8")


def _read_json(path: Path) -> dict:
    """A JSON file's content, or {} when it is missing."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
