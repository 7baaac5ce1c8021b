"""Explorer: the one object that notebooks, the command line and the web app call.

Every entry point validates its input once, here, and raises ExplorerError with a message a
user can act on. Language choice travels per row (``lang_ids`` or an adapter composition),
never through ``set_default_language``, so concurrent requests cannot disturb each other.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import pandas as pd
import torch

from xmod_explorer import defaults, jobs
from xmod_explorer.budget import Cost, ModelShape, forward_cost
from xmod_explorer.classify import Classification, ProbeHead
from xmod_explorer.datasets import as_pairs
from xmod_explorer.errors import ExplorerError
from xmod_explorer.languages import display_name, resolve_language, resolve_languages
from xmod_explorer.limits import Limits
from xmod_explorer.loading import Loaded, load_backend
from xmod_explorer.masks import MaskPrediction, MaskSlot, TokenGuess, readable_token, top_k_with_entropy
from xmod_explorer.similarity import (
    AdapterComparison,
    SentenceComparison,
    centred_token_cosine,
    cosine_matrix,
    language_pair_scores,
    mean_pool,
    token_cosine,
)
from xmod_explorer.tokens import content_mask, pad_rows

log = logging.getLogger(__name__)

# Users write the mask in several ways; all mean the tokenizer's own mask token.
MASK_SPELLINGS = re.compile(r"<\s*mask\s*>|\[\s*mask\s*\]", re.IGNORECASE)


@dataclass
class ModelInfo:
    """What is loaded: identity, placement, size and languages (codes in model order)."""

    model: str
    folder: str  # not "path": gradio_client would take a dict with a "path" key for a file
    reason: str
    backend: str
    checkpoint_format: str
    device: str
    dtype: str
    parameters: int
    memory_bytes: int
    layers: int
    hidden_size: int
    vocab_size: int
    max_tokens: int
    languages: list[str]
    loaded_languages: list[str]
    can_fill_masks: bool
    random_weights: bool = False
    labels: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_frame(self) -> pd.DataFrame:
        """One row per language: lang id, code, readable name, and whether its adapter is in memory."""
        return pd.DataFrame(
            [
                {"lang_id": i, "code": code, "name": display_name(code), "in_memory": code in self.loaded_languages}
                for i, code in enumerate(self.languages)
            ]
        )


def _guard_device_memory(method):
    """Turn a GPU out-of-memory error into an ExplorerError and free the cache so the next call works."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except torch.OutOfMemoryError as exc:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise ExplorerError(
                "The device ran out of memory for this request. Choose fewer languages or a shorter text, and retry."
            ) from exc

    return wrapper


class Explorer:
    """A loaded X-MOD model and the ways to look inside it."""

    def __init__(
        self,
        loaded: Loaded,
        *,
        reason: str = "",
        random_weights: bool = False,
        limits: Limits | None = None,
        name: str | None = None,
    ):
        self.loaded = loaded
        self._name = name or loaded.reference
        self.limits = limits or Limits.local()
        self.backend = loaded.backend
        self.tokenizer = loaded.tokenizer
        self.reason = reason or f"{loaded.reference} asked for by name"
        self.random_weights = random_weights
        config = self.backend.model.config
        # Positions start after the padding index, so the usable length is shorter than the table.
        self.max_tokens = int(config.max_position_embeddings) - int(config.pad_token_id) - 1
        # Structural tokens are left out of pooling and token views; <unk> and <mask> stand for text and stay.
        structural = ("bos_token_id", "eos_token_id", "pad_token_id", "cls_token_id", "sep_token_id")
        self._special_ids = {getattr(self.tokenizer, name) for name in structural} - {None}

    @classmethod
    def from_pretrained(
        cls,
        model: str | None = None,
        backend: str = "auto",
        device: str = "auto",
        dtype: str = "auto",
        languages: Sequence[str] | str | None = None,
        limits: Limits | None = None,
    ) -> Explorer:
        """Load an X-MOD checkpoint (hub id, local folder, 'mini' or 'random'; None: the default).

        backend: 'transformers' (native XmodForMaskedLM), 'adapters' (XmodAdapterModel with one adapter
        per language, loaded on demand) or 'auto' (from the checkpoint). languages: load only these
        adapters. device: auto/cpu/cuda/mps. dtype: auto (float16 on GPU, float32 on CPU) or a name.
        An explicitly named model that cannot be had is an error, never silently replaced.
        """
        if model is None:
            choice = defaults.resolve_default()
        else:
            if not isinstance(model, str) or not model.strip():
                raise ExplorerError("Name a model: a hub id such as facebook/xmod-base, a local folder, or 'mini'.")
            choice = defaults.resolve_alias(model) or defaults.ModelChoice(
                model.strip(), f"{model.strip()} asked for by name"
            )
        log.info("model: %s (%s)", choice.reference, choice.reason)
        loaded = load_backend(choice.reference, backend=backend, device=device, dtype=dtype, languages=languages)
        return cls(loaded, reason=choice.reason, random_weights=choice.random_weights, limits=limits, name=choice.name)

    # ----- what is loaded -------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The model's id as users know it: hub id, folder, or the short name of a built-in model."""
        return self._name

    @property
    def languages(self) -> list[str]:
        """Codes this model can run, in the model's own order (lang id = index)."""
        return list(self.loaded.languages)

    @property
    def shape(self) -> ModelShape:
        """The model's sizes that decide what a forward pass costs (layers, widths, vocabulary, value size)."""
        return ModelShape.from_config(self.backend.model.config, torch.finfo(self.loaded.dtype).bits // 8)

    def cost(self, rows: int, tokens: int, **kwargs) -> Cost:
        """What one forward pass over rows x tokens costs on this model (budget.forward_cost's keywords)."""
        return forward_cost(self.shape, rows, tokens, **kwargs)

    def admitted(self, rows: int, tokens: int, **kwargs):
        """A context in which one forward pass over rows x tokens runs once the server's memory budget allows
        (at once outside a server job); refuses a pass that could never fit. Keywords as for cost()."""
        return jobs.admitted(self.cost(rows, tokens, **kwargs))

    def info(self) -> ModelInfo:
        model = self.backend.model
        config = model.config
        tensors = list(model.parameters()) + list(model.buffers())
        loaded = self.backend.loaded
        return ModelInfo(
            model=self.name,
            folder=str(self.loaded.path),
            reason=self.reason,
            backend=self.backend.name,
            checkpoint_format=self.loaded.checkpoint_format,
            device=str(self.loaded.device),
            dtype=str(self.loaded.dtype).replace("torch.", ""),
            parameters=sum(p.numel() for p in model.parameters()),
            memory_bytes=sum(t.numel() * t.element_size() for t in tensors),
            layers=int(config.num_hidden_layers),
            hidden_size=int(config.hidden_size),
            vocab_size=int(config.vocab_size),
            max_tokens=self.max_tokens,
            languages=self.languages,
            loaded_languages=list(loaded),
            can_fill_masks=bool(self.backend.has_mlm),
            random_weights=self.random_weights,
            labels=list(self.backend.classifier_labels() or []),
        )

    # ----- input checks and encoding: the building blocks the lab and the analyses share ------

    def check_languages(self, languages: Sequence[str] | str) -> list[str]:
        """Codes for languages (a list, or a comma-separated string), checked against this model and the
        limits, with their adapters made ready in memory; the order given is kept."""
        codes = resolve_languages(languages, self.languages, max_count=self.limits.max_languages)
        self.backend.ensure_languages(codes)
        return codes

    def tokenize(self, text: object, *, what: str = "text") -> list[int]:
        """Token ids of text with <s> and </s>, after checking it against the limits; `what` names it in errors."""
        if not isinstance(text, str):
            raise ExplorerError(f"The {what} must be a string; got {type(text).__name__}.")
        if not text.strip():
            raise ExplorerError(f"The {what} is empty. Type a sentence.")
        if len(text) > self.limits.max_text_chars:
            raise ExplorerError(
                f"The {what} is {len(text):,} characters long; at most {self.limits.max_text_chars:,} are accepted "
                "here. Shorten it."
            )
        text = MASK_SPELLINGS.sub(self.tokenizer.mask_token, text)
        # Count before building tensors: a 100,000-character paste must fail fast, not run.
        ids = self.tokenizer(text, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        if len(ids) > self.max_tokens:
            raise ExplorerError(
                f"The {what} is {len(ids)} tokens long; this model reads at most {self.max_tokens} "
                "(counting <s> and </s>). Shorten it."
            )
        if all(token in self._special_ids for token in ids):
            raise ExplorerError(f"The {what} has no words, only special tokens. Type a sentence.")
        return ids

    def _content_positions(self, ids: Sequence[int]) -> list[int]:
        return [i for i, token in enumerate(ids) if token not in self._special_ids]

    def pad(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token rows as (input_ids, attention_mask) on the model's device, right-padded."""
        ids, mask = pad_rows(rows, self.tokenizer.pad_token_id)
        return ids.to(self.loaded.device), mask.to(self.loaded.device)

    def pooled_batch(
        self, token_rows: Sequence[Sequence[int]], row_languages: Sequence[str], *, grad: bool = False
    ) -> torch.Tensor:
        """One forward pass: the mean of the last hidden state over each row's text tokens, each row under its
        own language's adapter; (rows, hidden) float32 on the device. grad=True keeps the graph (fine-tuning)."""
        input_ids, attention = self.pad(token_rows)
        keep = content_mask(input_ids, attention, self._special_ids)
        shape = (len(token_rows), input_ids.shape[1])
        what = f"Computing sentence vectors for {shape[0]} rows of up to {shape[1]} tokens"
        with self.admitted(*shape, grad=grad, what=what), torch.inference_mode(not grad), torch.set_grad_enabled(grad):
            encoded = self.backend.encode_rows(input_ids, attention, list(row_languages))
            return mean_pool(encoded.last.float(), keep)

    def pooled_features(
        self,
        token_rows: Sequence[Sequence[int]],
        row_languages: Sequence[str],
        *,
        batch_size: int = 32,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Sentence vectors (rows, hidden), float32 on the CPU: pooled_batch over batches of rows sorted by
        length (little padding). on_batch(done, total) is called before each batch and may raise to stop."""
        order = sorted(range(len(token_rows)), key=lambda i: len(token_rows[i]))
        out = torch.empty(len(token_rows), int(self.backend.model.config.hidden_size))
        total = math.ceil(len(order) / batch_size)
        what = f"Computing sentence vectors for {len(token_rows)} rows"
        jobs.feasible(self._batches_cost(token_rows, order, batch_size, what))
        for number, start in enumerate(range(0, len(order), batch_size)):
            jobs.checkpoint()
            if on_batch is not None:
                on_batch(number, total)
            chosen = order[start : start + batch_size]
            out[chosen] = self.pooled_batch([token_rows[i] for i in chosen], [row_languages[i] for i in chosen]).cpu()
        if on_batch is not None:
            on_batch(total, total)
        return out

    def pooled_layers(
        self, token_rows: Sequence[Sequence[int]], row_languages: Sequence[str], *, batch_tokens: int = 4096
    ) -> torch.Tensor:
        """Every layer's sentence vectors (layers + 1, rows, hidden), float32 on the CPU, each row under its own
        language's adapter: batches of rows sorted by length, at most batch_tokens padded tokens each, so
        memory stays bounded and a stopped job stops between batches."""
        order = sorted(range(len(token_rows)), key=lambda i: len(token_rows[i]))
        longest = max(len(row) for row in token_rows)
        batch_size = max(1, batch_tokens // longest)
        total = math.ceil(len(order) / batch_size)
        what = f"Comparing {len(token_rows)} sentences of up to {longest} tokens"
        jobs.feasible(self._batches_cost(token_rows, order, batch_size, what, layer_copies=1))
        out = torch.empty(int(self.backend.model.config.num_hidden_layers) + 1, len(token_rows), self.shape.hidden)
        for number, start in enumerate(range(0, len(order), batch_size)):
            jobs.checkpoint(number, total, f"Sentences: batch {number + 1} of {total}")
            chosen = order[start : start + batch_size]
            input_ids, attention = self.pad([token_rows[i] for i in chosen])
            keep = content_mask(input_ids, attention, self._special_ids)
            with self.admitted(len(chosen), input_ids.shape[1], layer_copies=1, what=what), torch.inference_mode():
                encoded = self.backend.encode_rows(
                    input_ids, attention, [row_languages[i] for i in chosen], all_layers=True
                )
                for layer, states in enumerate(encoded.layers):
                    out[layer, chosen] = mean_pool(states.float(), keep).cpu()
        return out

    def _batches_cost(self, token_rows, order, batch_size: int, what: str, **kwargs) -> Cost:
        """The whole job's work, and its largest batch's memory: for refusing work that could never run."""
        total = Cost(0, 0.0, what)
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            cost = self.cost(len(chosen), max(len(token_rows[i]) for i in chosen), what=what, **kwargs)
            total = Cost(max(total.bytes, cost.bytes), total.flops + cost.flops, what)
        return total

    def check_head(self, head: object) -> ProbeHead:
        """head, if it is a ProbeHead trained on features of this model; otherwise an ExplorerError."""
        if not isinstance(head, ProbeHead):
            raise ExplorerError(
                f"head must be a ProbeHead (from train_probe or ProbeHead.load); got {type(head).__name__}."
            )
        tensors = (head.weight, head.bias, head.mean, head.std)
        finite = all(isinstance(t, torch.Tensor) and bool(torch.isfinite(t).all()) for t in tensors)
        if not finite or bool((head.std <= 0).any()):
            raise ExplorerError(
                "This head holds numbers that are not finite (NaN or infinity) or a standard deviation that is not "
                "positive, so its probabilities would be meaningless. Train a new head here, or load an intact file."
            )
        hidden = int(self.backend.model.config.hidden_size)
        if head.hidden_size != hidden or head.model != self.name:
            raise ExplorerError(
                f"This head was trained on {head.model} (hidden size {head.hidden_size}); the loaded model is "
                f"{self.name} (hidden size {hidden}). Load that model again, or train a new head here."
            )
        return head

    def private_copy(self, name: str) -> Explorer:
        """A float32 deep copy of the model in a new Explorer, for training that must not touch this one."""
        loaded = dataclasses.replace(self.loaded, backend=self.backend.private_copy(), dtype=torch.float32)
        reason = f"a private copy of {self.name}"
        return Explorer(loaded, reason=reason, random_weights=self.random_weights, limits=self.limits, name=name)

    def _top_k(self, top_k: object, vocab_size: int) -> int:
        if (
            isinstance(top_k, bool)
            or not isinstance(top_k, (int, float))
            or (isinstance(top_k, float) and not (math.isfinite(top_k) and top_k.is_integer()))
        ):
            raise ExplorerError(f"top_k must be a whole number such as 5; got {top_k!r}.")
        k = int(top_k)
        highest = min(vocab_size, self.limits.max_top_k)
        if not 1 <= k <= highest:
            raise ExplorerError(f"top_k must be between 1 and {highest}; got {k}.")
        return k

    # ----- features ---------------------------------------------------------------------------

    @_guard_device_memory
    def predict_masks(self, text: str, languages: Sequence[str] | str, top_k: int = 5) -> MaskPrediction:
        """Fill every <mask> in text under each language's adapter, all languages in one forward pass."""
        if not self.backend.has_mlm:
            raise ExplorerError(
                "This checkpoint has no masked-LM head, so it cannot fill masks. Load an X-MOD masked-LM."
            )
        codes = self.check_languages(languages)
        k = self._top_k(top_k, int(self.backend.model.config.vocab_size))
        ids = self.tokenize(text)
        positions = [i for i, token in enumerate(ids) if token == self.tokenizer.mask_token_id]
        if not positions:
            raise ExplorerError(
                f"The text has no {self.tokenizer.mask_token}. Put {self.tokenizer.mask_token} where a word should be "
                "predicted."
            )
        if len(positions) > self.limits.max_masks:
            raise ExplorerError(
                f"The text has {len(positions)} masks; at most {self.limits.max_masks} are accepted here. Remove some."
            )
        input_ids, attention = self.pad([ids])
        what = f"Filling {len(positions)} mask(s) under {len(codes)} adapters"
        with self.admitted(len(codes), len(ids), output_positions=len(positions), what=what), torch.inference_mode():
            # The last layer and the vocabulary projection only at mask positions: on xmod-base the
            # projection over every token would cost more than the whole encoder.
            encoded = self.backend.encode_adapters(input_ids, attention, codes, positions=positions)
            states = encoded.last.reshape(len(codes) * len(positions), -1)
            probabilities, token_ids, entropy = top_k_with_entropy(states, self.backend.mlm_logits, k)
        probabilities = probabilities.view(len(codes), len(positions), k).cpu()
        token_ids = token_ids.view(len(codes), len(positions), k).cpu()
        entropy = entropy.view(len(codes), len(positions)).cpu()
        slots = []
        for m, position in enumerate(positions):
            predictions = {
                code: [
                    TokenGuess(readable_token(self.tokenizer, int(t)), int(t), float(p))
                    for t, p in zip(token_ids[row, m], probabilities[row, m])
                ]
                for row, code in enumerate(codes)
            }
            slots.append(
                MaskSlot(position, predictions, {code: float(entropy[row, m]) for row, code in enumerate(codes)})
            )
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        return MaskPrediction(model=self.name, text=text, languages=codes, tokens=tokens, masks=slots)

    @_guard_device_memory
    def compare_adapters(
        self, text: str, languages: Sequence[str] | str, reference: str | None = None
    ) -> AdapterComparison:
        """Run one text through each adapter and compare the hidden states layer by layer."""
        codes = self.check_languages(languages)
        reference = codes[0] if reference in (None, "") else resolve_language(reference, self.languages)
        if reference not in codes:
            raise ExplorerError(f"The reference language {reference} must be one of the chosen languages {codes}.")
        ids = self.tokenize(text)
        content = self._content_positions(ids)
        input_ids, attention = self.pad([ids])
        what = f"Comparing {len(codes)} adapters on {len(ids)} tokens"
        with self.admitted(len(codes), len(ids), layer_copies=3, what=what), torch.inference_mode():
            encoded = self.backend.encode_adapters(input_ids, attention, codes, all_layers=True)
            layers = torch.stack([layer[:, content].float() for layer in encoded.layers]).cpu()  # (L+1, k, t, h)
        ref = codes.index(reference)
        pooled = torch.stack([cosine_matrix(layer.mean(1)) for layer in layers])
        centred = torch.stack([centred_token_cosine(layer) for layer in layers])
        per_token = torch.stack([token_cosine(layer, ref) for layer in layers])
        per_token_centred = torch.stack([token_cosine(layer, ref, centred=True) for layer in layers])
        tokens = [readable_token(self.tokenizer, ids[i]) for i in content]
        return AdapterComparison(
            model=self.name,
            text=text,
            languages=codes,
            reference=reference,
            tokens=tokens,
            pooled_cosine=pooled,
            centred_cosine=centred,
            token_cosine=per_token,
            token_cosine_centred=per_token_centred,
        )

    @_guard_device_memory
    def compare_sentences(self, pairs: Sequence[tuple[str, str]], *, permutations: int = 20) -> SentenceComparison:
        """Each sentence through its own language's adapter; cosine per layer, and for parallel sets
        (same count per language, i-th sentences translations of each other) CKA with shuffled baselines."""
        rows = as_pairs(pairs)
        if len(rows) < 2:
            raise ExplorerError("Give at least two (language, sentence) rows to compare.")
        if len(rows) > self.limits.max_sentences:
            raise ExplorerError(
                f"At most {self.limits.max_sentences} sentences at once here; you gave {len(rows)}. Remove some rows."
            )
        codes, token_rows = [], []
        for number, (code, text) in enumerate(rows, start=1):
            try:
                codes.append(resolve_language(code, self.languages))
                token_rows.append(self.tokenize(text, what=f"sentence in row {number}"))
            except ExplorerError as exc:
                raise ExplorerError(f"Row {number}: {exc}") from None
        self.backend.ensure_languages(sorted(set(codes), key=self.languages.index))
        pooled = self.pooled_layers(token_rows, codes)  # (L+1, n, h)
        cosine = torch.stack([cosine_matrix(layer) for layer in pooled])
        centred = torch.stack([cosine_matrix(layer - layer.mean(0, keepdim=True)) for layer in pooled])
        notes = []
        if len(rows) < 3:
            notes.append("With two sentences the centred cosine is always -1; add more rows for it to mean anything.")
        scores, size, more = language_pair_scores(pooled, codes, permutations=permutations)
        return SentenceComparison(
            model=self.name,
            pairs=[(code, str(text)) for code, (_, text) in zip(codes, rows)],
            pooled_cosine=cosine,
            centred_cosine=centred,
            parallel_size=size,
            scores=scores,
            notes=notes + more,
        )

    # ----- classification -----------------------------------------------------------------------

    @_guard_device_memory
    def classify(self, text: str, languages: Sequence[str] | str, *, head: ProbeHead | None = None) -> Classification:
        """Label probabilities under each language's adapter in one batched pass: the checkpoint's
        classification head, or a probe head (from the transfer lab, or ProbeHead.load)."""
        if head is None and self.backend.classifier_labels() is None:
            raise ExplorerError(
                f"This checkpoint ({self.name}, loaded as {type(self.backend.model).__name__}) has no "
                "sequence-classification head, so it cannot classify by itself. Load an XmodForSequenceClassification "
                "checkpoint (config.json architectures), or an adapters-format model with a classification head; or "
                "train a probe in the transfer lab and classify with it."
            )
        if head is not None:
            head = self.check_head(head)
        codes = self.check_languages(languages)
        ids = self.tokenize(text)
        input_ids, attention = self.pad([ids])
        what = f"Classifying under {len(codes)} adapters"
        with self.admitted(len(codes), len(ids), what=what), torch.inference_mode():
            encoded = self.backend.encode_adapters(input_ids, attention, codes)
            if head is None:
                labels = self.backend.classifier_labels()
                probabilities = self.backend.classifier_logits(encoded.last).float().softmax(-1).cpu()
            else:
                labels = head.labels
                rows = len(codes)
                keep = content_mask(input_ids.expand(rows, -1), attention.expand(rows, -1), self._special_ids)
                probabilities = head.probabilities(mean_pool(encoded.last.float(), keep))
        return Classification(
            model=self.name,
            text=text,
            labels=list(labels),
            languages=codes,
            probabilities={
                code: {label: float(p) for label, p in zip(labels, row)} for code, row in zip(codes, probabilities)
            },
            head="checkpoint" if head is None else head.describe(),
        )
