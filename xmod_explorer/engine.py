"""Explorer: the one object that notebooks, the command line and the web app call.

Every entry point validates its input once, here, and raises ExplorerError with a message a
user can act on. Language choice travels per row (``lang_ids`` or an adapter composition),
never through ``set_default_language``, so concurrent requests cannot disturb each other.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import pandas as pd
import torch

from xmod_explorer import defaults, lab
from xmod_explorer.classify import Classification, ProbeHead, ProbeTraining, TransferResult
from xmod_explorer.errors import ExplorerError
from xmod_explorer.languages import display_name, resolve_language, resolve_languages
from xmod_explorer.limits import Limits
from xmod_explorer.loading import Loaded, load_backend
from xmod_explorer.masks import MaskPrediction, MaskSlot, TokenGuess, readable_token, top_k_with_entropy
from xmod_explorer.similarity import (
    AdapterComparison,
    LanguagePairScore,
    SentenceComparison,
    centred_token_cosine,
    cosine_matrix,
    linear_cka,
    mean_pool,
    shuffled_cka,
    token_cosine,
)

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
    post_hoc_languages: list[str] = field(default_factory=list)  # adapters added after pre-training

    def to_dict(self) -> dict:
        return asdict(self)

    def to_frame(self) -> pd.DataFrame:
        """One row per language: lang id, code, readable name, whether its adapter is in memory and added post hoc."""
        return pd.DataFrame(
            [
                {
                    "lang_id": i,
                    "code": code,
                    "name": display_name(code),
                    "in_memory": code in self.loaded_languages,
                    "added_post_hoc": code in self.post_hoc_languages,
                }
                for i, code in enumerate(self.languages)
            ]
        )


def _blank(value: object) -> bool:
    """An empty table cell: None, NaN or whitespace (editable tables leave such rows behind)."""
    return (
        value is None
        or (isinstance(value, str) and not value.strip())
        or (isinstance(value, float) and math.isnan(value))
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

    def info(self) -> ModelInfo:
        model = self.backend.model
        config = model.config
        tensors = list(model.parameters()) + list(model.buffers())
        loaded = self.backend.loaded if hasattr(self.backend, "loaded") else self.languages
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
            can_fill_masks=bool(getattr(self.backend, "has_mlm", False)),
            random_weights=self.random_weights,
            labels=list(self.backend.classifier_labels() or []),
            post_hoc_languages=[code for code in self.loaded.post_hoc_languages if code in self.languages],
        )

    # ----- input checks ---------------------------------------------------------------------

    def _languages(self, languages) -> list[str]:
        codes = resolve_languages(languages, self.languages, max_count=self.limits.max_languages)
        self.backend.ensure_languages(codes)
        return codes

    def _tokenize(self, text: object, *, what: str = "text") -> list[int]:
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

    def _tensor(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(row) for row in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids.to(self.loaded.device), mask.to(self.loaded.device)

    # ----- features ---------------------------------------------------------------------------

    @_guard_device_memory
    def predict_masks(self, text: str, languages: Sequence[str] | str, top_k: int = 5) -> MaskPrediction:
        """Fill every <mask> in text under each language's adapter, all languages in one forward pass."""
        if not getattr(self.backend, "has_mlm", False):
            raise ExplorerError(
                "This checkpoint has no masked-LM head, so it cannot fill masks. Load an X-MOD masked-LM."
            )
        codes = self._languages(languages)
        k = self._top_k(top_k, int(self.backend.model.config.vocab_size))
        ids = self._tokenize(text)
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
        input_ids, attention = self._tensor([ids])
        with torch.inference_mode():
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
        codes = self._languages(languages)
        reference = codes[0] if reference in (None, "") else resolve_language(reference, self.languages)
        if reference not in codes:
            raise ExplorerError(f"The reference language {reference} must be one of the chosen languages {codes}.")
        ids = self._tokenize(text)
        content = self._content_positions(ids)
        input_ids, attention = self._tensor([ids])
        with torch.inference_mode():
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

    @staticmethod
    def _pairs(pairs: object) -> list[tuple[object, object]]:
        if isinstance(pairs, pd.DataFrame):
            pairs = pairs.values.tolist()
        if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Iterable):
            raise ExplorerError("Give sentences as a list of (language, sentence) pairs.")
        rows = []
        for number, item in enumerate(pairs, start=1):
            if isinstance(item, dict):
                item = (item.get("language"), item.get("text", item.get("sentence")))
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise ExplorerError(f"Row {number} must be a (language, sentence) pair; got {item!r}.")
            rows.append((item[0], item[1]))
        return rows

    @_guard_device_memory
    def compare_sentences(self, pairs: Sequence[tuple[str, str]], *, permutations: int = 20) -> SentenceComparison:
        """Each sentence through its own language's adapter; cosine per layer, and for parallel sets
        (same count per language, i-th sentences translations of each other) CKA with shuffled baselines."""
        rows = [(code, text) for code, text in self._pairs(pairs) if not (_blank(code) and _blank(text))]
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
                token_rows.append(self._tokenize(text, what=f"sentence in row {number}"))
            except ExplorerError as exc:
                raise ExplorerError(f"Row {number}: {exc}") from None
        self.backend.ensure_languages(sorted(set(codes), key=self.languages.index))
        input_ids, attention = self._tensor(token_rows)
        keep = attention.bool() & ~torch.isin(
            input_ids, torch.tensor(sorted(self._special_ids), device=input_ids.device)
        )
        with torch.inference_mode():
            encoded = self.backend.encode_rows(input_ids, attention, codes, all_layers=True)
            pooled = torch.stack([mean_pool(layer.float(), keep) for layer in encoded.layers]).cpu()  # (L+1, n, h)
        cosine = torch.stack([cosine_matrix(layer) for layer in pooled])
        centred = torch.stack([cosine_matrix(layer - layer.mean(0, keepdim=True)) for layer in pooled])
        notes = []
        if len(rows) < 3:
            notes.append("With two sentences the centred cosine is always -1; add more rows for it to mean anything.")
        groups: dict[str, list[int]] = {}
        for index, code in enumerate(codes):
            groups.setdefault(code, []).append(index)
        sizes = {len(members) for members in groups.values()}
        parallel = len(groups) >= 2 and len(sizes) == 1 and sizes.pop() >= 2
        scores = []
        if parallel:
            size = len(next(iter(groups.values())))
            if size < 3:
                notes.append("CKA needs at least 3 sentences per language (with 2 it is always 1); it is left out.")
            elif size < 4:
                notes.append(
                    f"CKA from {size} sentences per language uses the biased estimator; 4 or more give the debiased "
                    "one."
                )
            order = list(groups)
            for layer, vectors in enumerate(pooled):
                for i, a in enumerate(order):
                    for b in order[i + 1 :]:
                        x, y = vectors[groups[a]], vectors[groups[b]]
                        between = (
                            torch.nn.functional.normalize(x.double(), dim=-1)
                            @ torch.nn.functional.normalize(y.double(), dim=-1).T
                        )
                        off = ~torch.eye(size, dtype=torch.bool)
                        scores.append(
                            LanguagePairScore(
                                layer=layer,
                                language_a=a,
                                language_b=b,
                                matched_cosine=float(between.diagonal().mean()),
                                shuffled_cosine=float(between[off].mean()),
                                cka=linear_cka(x, y) if size >= 3 else math.nan,
                                shuffled_cka=shuffled_cka(x, y, permutations=permutations) if size >= 3 else math.nan,
                            )
                        )
        else:
            size = 0
            notes.append(
                "CKA needs a parallel set: two or more languages with the same number of sentences, "
                "the i-th sentence of each language a translation of the others."
            )
        return SentenceComparison(
            model=self.name,
            pairs=[(code, str(text)) for code, (_, text) in zip(codes, rows)],
            pooled_cosine=cosine,
            centred_cosine=centred,
            parallel_size=size,
            scores=scores,
            notes=notes,
        )

    # ----- classification and the transfer lab (the work is in lab.py) ------------------------

    @_guard_device_memory
    def classify(self, text: str, languages: Sequence[str] | str, *, head: ProbeHead | None = None) -> Classification:
        """Label probabilities under each language's adapter in one batched pass: the checkpoint's
        classification head, or a probe head from train_probe / ProbeHead.load."""
        return lab.classify(self, text, languages, head)

    @_guard_device_memory
    def train_probe(
        self,
        examples,
        source_language: str,
        *,
        max_steps: int = 100,
        weight_decay: float = 1e-2,
        batch_size: int = 32,
        progress=None,
        seed: int = 0,
    ) -> ProbeTraining:
        """Train a linear head on frozen pooled features under the source language's adapter.

        examples: (text, label) rows, Example objects, dicts or a DataFrame. progress: called as
        progress(fraction, desc=...). Capped by limits.max_train_examples and max_train_seconds.
        """
        return lab.train_probe(
            self,
            examples,
            source_language,
            max_steps=max_steps,
            weight_decay=weight_decay,
            batch_size=batch_size,
            progress=progress,
            seed=seed,
        )

    @_guard_device_memory
    def evaluate_transfer(
        self,
        head: ProbeHead,
        examples,
        target_languages: Sequence[str] | None = None,
        *,
        batch_size: int = 32,
        progress=None,
    ) -> TransferResult:
        """Accuracy per target language with the target's adapter (X-MOD's way) and the source's (the baseline).

        examples: rows with a language, or a dict {language: rows}; target_languages: default all given.
        """
        return lab.evaluate_transfer(self, head, examples, target_languages, batch_size=batch_size, progress=progress)

    @_guard_device_memory
    def finetune(
        self,
        examples,
        source_language: str,
        *,
        steps: int = 30,
        batch_size: int = 16,
        learning_rate: float | None = None,
        progress=None,
        seed: int = 0,
    ) -> ProbeTraining:
        """Fine-tune a private copy (task adapter, or the shared layers natively) with a head; the result's
        ``explorer`` is that copy, and this Explorer's model is left unchanged."""
        return lab.finetune(
            self,
            examples,
            source_language,
            steps=steps,
            batch_size=batch_size,
            learning_rate=learning_rate,
            progress=progress,
            seed=seed,
        )
