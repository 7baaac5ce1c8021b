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
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import pandas as pd
import torch

from xmod_explorer import defaults, jobs, quantization
from xmod_explorer.budget import Cost, ModelShape, forward_cost
from xmod_explorer.classify import Classification, ProbeHead
from xmod_explorer.datasets import as_pairs, reference_sentences
from xmod_explorer.detect import detect
from xmod_explorer.errors import ExplorerError
from xmod_explorer.hub import DownloadProgress
from xmod_explorer.languages import display_name, resolve_language, resolve_languages
from xmod_explorer.lens import (
    READOUT_POST_NORM,
    READOUT_PRE_NORM,
    AdapterMix,
    LensMask,
    LogitLens,
    MixMask,
    TrackedToken,
    first_appearances,
    mixing_weights,
    vocabulary_readout,
)
from xmod_explorer.limits import Limits
from xmod_explorer.loading import Loaded, load_backend
from xmod_explorer.masks import MaskPrediction, MaskSlot, TokenGuess, readable_token, top_k_with_entropy
from xmod_explorer.projection import METHODS, Projection, project_layers, umap_available
from xmod_explorer.scoring import (
    LanguageScores,
    ScoringCost,
    masked_copies,
    rank_scores,
    rows_per_pass,
    token_log_probs,
)
from xmod_explorer.similarity import (
    AdapterComparison,
    Centring,
    SentenceComparison,
    cosine_matrix,
    language_pair_scores,
    mean_pool,
    token_cosine,
)
from xmod_explorer.stats import PERMUTATIONS
from xmod_explorer.tokens import content_mask, length_batches, pad_rows

log = logging.getLogger(__name__)

# The most pairings one Across-languages request may test (memory and time grow with it).
MAX_PERMUTATIONS = 100_000
# Users write the mask in several ways; all mean the tokenizer's own mask token.
MASK_SPELLINGS = re.compile(r"<\s*mask\s*>|\[\s*mask\s*\]", re.IGNORECASE)
# Token positions (rows x padded length) per forward pass when many texts share passes: bounds activation memory.
TOKENS_PER_PASS = 4096
# In predict_masks' languages, this word stands for the adapter that fits the text best (score_languages).
AUTO = "auto"
# Mixing weights between two adapters: at least both ends, at most one per hundredth.
MAX_MIX_STEPS = 101


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
    tokenizer: str = ""  # "the checkpoint's own", or the hub id of the tokenizer used instead
    tokenizer_source: str = ""  # where it came from, in words
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


@dataclass(frozen=True)
class MaskRequest:
    """A fill-mask request after its checks: the text, language codes, top-k, token ids and mask positions,
    and the adapter that "auto" stood for, if any."""

    text: str
    languages: list[str]
    top_k: int
    ids: list[int]
    positions: list[int]
    auto_language: str | None = None


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
        self._centring: Centring | None = None
        self._centring_lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls,
        model: str | None = None,
        backend: str = "auto",
        device: str = "auto",
        dtype: str = "auto",
        languages: Sequence[str] | str | None = None,
        limits: Limits | None = None,
        progress: Callable[[DownloadProgress], None] | None = None,
    ) -> Explorer:
        """Load an X-MOD checkpoint (hub id, local folder, 'mini' or 'random'; None: the default).

        backend: 'transformers' (native XmodForMaskedLM), 'adapters' (XmodAdapterModel with one adapter
        per language, loaded on demand) or 'auto' (from the checkpoint). languages: load only these
        adapters. device: auto/cpu/cuda/mps. dtype: auto (float16 on GPU, float32 on CPU) or a name.
        An explicitly named model that cannot be had is an error, never silently replaced; the default
        (None) falls back to the embedded mini model whatever goes wrong with it, and says why.
        progress receives each file's download progress (bytes done of bytes total) while files come
        from the hub.
        """

        def load(reference: str) -> Loaded:
            return load_backend(
                reference, backend=backend, device=device, dtype=dtype, languages=languages, progress=progress
            )

        if model is None:
            loaded, choice = defaults.load_default(load)
            log.info("model: %s (%s)", choice.reference, choice.reason)
        else:
            if not isinstance(model, str) or not model.strip():
                raise ExplorerError("Name a model: a hub id such as facebook/xmod-base, a local folder, or 'mini'.")
            choice = defaults.resolve_alias(model) or defaults.ModelChoice(
                model.strip(), f"{model.strip()} asked for by name"
            )
            log.info("model: %s (%s)", choice.reference, choice.reason)
            loaded = load(choice.reference)
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
            dtype=quantization.DESCRIPTION
            if self.loaded.quantization == quantization.INT8
            else str(self.loaded.dtype).replace("torch.", ""),
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
            tokenizer=self.loaded.tokenizer_name,
            tokenizer_source=self.loaded.tokenizer_source,
            post_hoc_languages=[code for code in self.loaded.post_hoc_languages if code in self.languages],
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
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        jobs.feasible(self._batches_cost(token_rows, batches, what))
        for number, start in enumerate(range(0, len(order), batch_size)):
            jobs.checkpoint()
            if on_batch is not None:
                on_batch(number, total)
            chosen = order[start : start + batch_size]
            out[chosen] = self.pooled_batch([token_rows[i] for i in chosen], [row_languages[i] for i in chosen]).cpu()
        if on_batch is not None:
            on_batch(total, total)
        return out

    def _pooled_layers(self, token_rows: Sequence[Sequence[int]], row_languages: Sequence[str]) -> torch.Tensor:
        """One forward pass, each row under its own language's adapter: every layer's sentence vectors
        (mean over the text's tokens), (layers + 1, rows, hidden) float32 on the CPU."""
        input_ids, attention = self.pad(token_rows)
        keep = content_mask(input_ids, attention, self._special_ids)
        what = f"Reading the {len(token_rows)} reference sentences"
        with self.admitted(len(token_rows), input_ids.shape[1], layer_copies=1, what=what), torch.inference_mode():
            encoded = self.backend.encode_rows(input_ids, attention, list(row_languages), all_layers=True)
            return torch.stack([mean_pool(layer.float(), keep) for layer in encoded.layers]).cpu()

    def centring(self) -> Centring:
        """The mean sentence vector per layer that every centred cosine subtracts: computed once per loaded model
        (on first use, thread-safe) from the shipped parallel sentences in this model's languages, each through
        its own language's adapter, so centred values never depend on what a request selects."""
        if self._centring is None:
            with self._centring_lock:
                if self._centring is None:
                    pairs = reference_sentences(self.languages)
                    codes = [code for code, _ in pairs]
                    rows = [self.tokenize(text, what="reference sentence") for _, text in pairs]
                    self.backend.ensure_languages(sorted(set(codes), key=self.languages.index))
                    pooled = self._pooled_layers(rows, codes)
                    languages = sorted(set(codes), key=codes.index)
                    self._centring = Centring(pooled.double().mean(1), languages, len(rows))
        return self._centring

    def pooled_layers(
        self,
        token_rows: Sequence[Sequence[int]],
        row_languages: Sequence[str],
        *,
        tokens_per_pass: int = TOKENS_PER_PASS,
    ) -> torch.Tensor:
        """Sentence vectors at every layer, (layers + 1, rows, hidden) float32 on the CPU, embedding output first:
        the mean over each row's text tokens, each row under its own language's adapter (codes from
        check_languages, rows from tokenize), in passes of rows of similar length, so memory stays bounded and a
        stopped job stops between passes."""
        self.backend.ensure_languages(sorted(set(row_languages), key=self.languages.index))
        config = self.backend.model.config
        out = torch.empty(int(config.num_hidden_layers) + 1, len(token_rows), int(config.hidden_size))
        with torch.inference_mode():
            for chosen, input_ids, attention, encoded in self._passes(
                token_rows, row_languages, tokens_per_pass, all_layers=True, label="Sentences"
            ):
                keep = content_mask(input_ids, attention, self._special_ids)
                out[:, chosen] = torch.stack([mean_pool(layer.float(), keep) for layer in encoded.layers]).cpu()
        return out

    def _passes(
        self, token_rows, row_languages, tokens_per_pass: int, *, all_layers: bool = False, label: str = "Passes"
    ):
        """Forward passes over rows grouped by length (tokens.length_batches): yields (row indices, input_ids,
        attention_mask, Encoded) per pass, each admitted by the server's budget (a whole job that could never
        fit is refused first) and each a point where a stopped job stops. The caller holds inference mode."""
        batches = length_batches([len(row) for row in token_rows], tokens_per_pass)
        copies = 1 if all_layers else 0
        what = f"{label}: {len(token_rows)} rows of up to {max((len(row) for row in token_rows), default=0)} tokens"
        jobs.feasible(self._batches_cost(token_rows, batches, what, layer_copies=copies))
        for number, chosen in enumerate(batches):
            jobs.checkpoint(number, len(batches), f"{label}: batch {number + 1} of {len(batches)}")
            input_ids, attention = self.pad([token_rows[i] for i in chosen])
            codes = [row_languages[i] for i in chosen]
            with self.admitted(len(chosen), input_ids.shape[1], layer_copies=copies, what=what):
                encoded = self.backend.encode_rows(input_ids, attention, codes, all_layers=all_layers)
                yield chosen, input_ids, attention, encoded

    def _batches_cost(self, token_rows, batches: list[list[int]], what: str, **kwargs) -> Cost:
        """The whole job's work, and its largest pass's memory: for refusing work that could never run."""
        total = Cost(0, 0.0, what)
        for chosen in batches:
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
        if self.loaded.quantization:
            raise ExplorerError(
                f"This model runs in {self.loaded.quantization}, which cannot be trained. Load it in float32 to "
                "fine-tune it."
            )
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

    def _require_mlm(self) -> None:
        if not self.backend.has_mlm:
            raise ExplorerError(
                "This checkpoint has no masked-LM head, so it cannot fill masks. Load an X-MOD masked-LM."
            )

    def _mask_positions(self, ids: Sequence[int]) -> list[int]:
        """Where the <mask> tokens are in ids; at least one, at most the limit."""
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
        return positions

    # ----- features ---------------------------------------------------------------------------

    def check_mask_request(self, text: str, languages: Sequence[str] | str, top_k: int = 5) -> MaskRequest:
        """A fill-mask request checked against this model and the limits: language codes ("auto" resolved,
        adapters made ready), top-k, token ids and mask positions; ExplorerError with a message for anything
        wrong."""
        self._require_mlm()
        languages, auto_language = self._resolve_auto(text, languages)
        codes = self.check_languages(languages)
        k = self._top_k(top_k, int(self.backend.model.config.vocab_size))
        ids = self.tokenize(text)
        return MaskRequest(text, codes, k, ids, self._mask_positions(ids), auto_language)

    @_guard_device_memory
    def predict_masks(self, text: str, languages: Sequence[str] | str, top_k: int = 5) -> MaskPrediction:
        """Fill every <mask> in text under each language's adapter, all languages in one forward pass."""
        return self.run_mask_request(self.check_mask_request(text, languages, top_k))

    @_guard_device_memory
    def run_mask_request(self, request: MaskRequest) -> MaskPrediction:
        """predict_masks for a request already checked by check_mask_request."""
        codes, k, ids, positions, auto_language = (
            request.languages,
            request.top_k,
            request.ids,
            request.positions,
            request.auto_language,
        )
        input_ids, attention = self.pad([ids])
        what = f"Filling {len(positions)} mask(s) under {len(codes)} adapters"
        with self.admitted(len(codes), len(ids), output_positions=len(positions), what=what), torch.inference_mode():
            # The last layer and the vocabulary projection only at mask positions: on xmod-base the
            # projection over every token would cost more than the whole encoder.
            encoded = self.backend.encode_adapters(input_ids, attention, codes, positions=positions)
            states = encoded.last.reshape(len(codes) * len(positions), -1)
            probabilities, token_ids, entropy = top_k_with_entropy(states, self.backend.mlm_logits, k)
        shape = (len(codes), len(positions))
        return self._mask_prediction(
            request.text,
            codes,
            ids,
            positions,
            probabilities.view(*shape, k),
            token_ids.view(*shape, k),
            entropy.view(shape),
            auto_language=auto_language,
        )

    def _mask_prediction(
        self,
        text: str,
        codes: list[str],
        ids: list[int],
        positions: list[int],
        probabilities: torch.Tensor,
        token_ids: torch.Tensor,
        entropy: torch.Tensor,
        names: dict[int, str] | None = None,
        auto_language: str | None = None,
    ) -> MaskPrediction:
        """A MaskPrediction from top-k results of shape (languages, masks, k) and entropies (languages, masks);
        names caches readable tokens across calls; auto_language is the adapter "auto" stood for, if any."""
        names = {} if names is None else names
        probabilities, token_ids, entropy = probabilities.cpu(), token_ids.cpu(), entropy.cpu()

        def readable(token: int) -> str:
            if token not in names:
                names[token] = readable_token(self.tokenizer, token)
            return names[token]

        slots = []
        for m, position in enumerate(positions):
            predictions = {
                code: [
                    TokenGuess(readable(int(t)), int(t), float(p))
                    for t, p in zip(token_ids[row, m], probabilities[row, m])
                ]
                for row, code in enumerate(codes)
            }
            slots.append(
                MaskSlot(position, predictions, {code: float(entropy[row, m]) for row, code in enumerate(codes)})
            )
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        return MaskPrediction(
            model=self.name, text=text, languages=codes, tokens=tokens, masks=slots, auto_language=auto_language
        )

    @_guard_device_memory
    def predict_masks_together(self, requests: Sequence[MaskRequest]) -> list[MaskPrediction]:
        """Several checked fill-mask requests (from check_mask_request) in one forward pass: every (text,
        language) pair is a row, rows sorted by language, texts of different lengths packed into one run of
        real tokens (the native backend; the adapters backend pads them), the last layer and one vocabulary
        projection only at the masks; the results split back, one per request, in order.
        Each equals predict_masks on that request alone (to float rounding, about 1e-6)."""
        if not requests:
            return []
        texts: dict[tuple[int, ...], int] = {}  # identical texts run their shared first layer once
        rows_text, rows_language, rows_positions = [], [], []
        for request in requests:
            index = texts.setdefault(tuple(request.ids), len(texts))
            for code in request.languages:
                rows_text.append(index)
                rows_language.append(code)
                rows_positions.append(request.positions)
        input_ids, attention = self.pad([list(ids) for ids in texts])
        widest = max(len(p) for p in rows_positions)
        # Rows with fewer masks repeat their first one; those extra states are computed and left unused.
        positions = torch.tensor([p + [p[0]] * (widest - len(p)) for p in rows_positions], dtype=torch.long)
        k = max(request.top_k for request in requests)
        what = f"Filling masks for {len(requests)} requests ({len(rows_text)} adapter rows) together"
        cost = (len(rows_text), input_ids.shape[1])
        with self.admitted(*cost, output_positions=widest, what=what), torch.inference_mode():
            states = self.backend.encode_texts(input_ids, attention, rows_text, rows_language, positions)
            wanted = torch.cat([states[row, : len(p)] for row, p in enumerate(rows_positions)])
            probabilities, token_ids, entropy = (
                t.cpu() for t in top_k_with_entropy(wanted, self.backend.mlm_logits, k)
            )
        results, start, names = [], 0, {}
        for request in requests:
            count, masks, top = len(request.languages), len(request.positions), request.top_k
            stop = start + count * masks
            results.append(
                self._mask_prediction(
                    request.text,
                    request.languages,
                    request.ids,
                    request.positions,
                    probabilities[start:stop, :top].reshape(count, masks, top),
                    token_ids[start:stop, :top].reshape(count, masks, top),
                    entropy[start:stop].reshape(count, masks),
                    names,
                    request.auto_language,
                )
            )
            start = stop
        return results

    @_guard_device_memory
    def compare_adapters(
        self, text: str, languages: Sequence[str] | str, reference: str | None = None
    ) -> AdapterComparison:
        """Run one text through each adapter and compare the hidden states layer by layer."""
        codes, reference = self._languages_and_reference(languages, reference)
        ids = self.tokenize(text)
        content = self._content_positions(ids)
        input_ids, attention = self.pad([ids])
        what = f"Comparing {len(codes)} adapters on {len(ids)} tokens"
        with self.admitted(len(codes), len(ids), layer_copies=3, what=what), torch.inference_mode():
            encoded = self.backend.encode_adapters(input_ids, attention, codes, all_layers=True)
            layers = torch.stack([layer[:, content].float() for layer in encoded.layers]).cpu()  # (L+1, k, t, h)
        return self._adapter_comparison(text, codes, reference, ids, content, layers)

    def _languages_and_reference(self, languages: Sequence[str] | str, reference: str | None) -> tuple[list[str], str]:
        codes = self.check_languages(languages)
        reference = codes[0] if reference in (None, "") else resolve_language(reference, self.languages)
        if reference not in codes:
            raise ExplorerError(f"The reference language {reference} must be one of the chosen languages {codes}.")
        return codes, reference

    def _adapter_comparison(
        self, text: str, codes: list[str], reference: str, ids: list[int], content: list[int], layers: torch.Tensor
    ) -> AdapterComparison:
        """An AdapterComparison from the text's states at its content positions, (layers + 1, adapters, tokens,
        hidden) float32 on the CPU."""
        ref = codes.index(reference)
        centring = self.centring()
        vectors = layers.mean(2)  # (L+1, k, h) sentence vectors
        pooled = torch.stack([cosine_matrix(layer) for layer in vectors])
        centred = torch.stack([cosine_matrix(layer.double() - mean) for layer, mean in zip(vectors, centring.means)])
        per_token = torch.stack([token_cosine(layer, ref) for layer in layers])
        per_token_centred = torch.stack(
            [token_cosine(layer, ref, centre=mean) for layer, mean in zip(layers, centring.means)]
        )
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
            centring=centring,
        )

    @_guard_device_memory
    def compare_sentences(
        self, pairs: Sequence[tuple[str, str]], *, permutations: int = PERMUTATIONS, seed: int = 0
    ) -> SentenceComparison:
        """Each sentence through its own language's adapter; cosine per layer, and for parallel sets
        (same count per language, i-th sentences translations of each other) CKA and translation-pair
        cosine per layer and language pair, each with a permutation p-value and null band: every pairing
        when there are at most `permutations`, else that many random ones drawn with `seed`."""
        if (
            not isinstance(permutations, int)
            or isinstance(permutations, bool)
            or not PERMUTATIONS <= permutations <= MAX_PERMUTATIONS
        ):
            raise ExplorerError(
                f"permutations must be a whole number from {PERMUTATIONS:,} to {MAX_PERMUTATIONS:,}; "
                f"got {permutations!r}."
            )
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ExplorerError(f"seed must be a whole number of 0 or more; got {seed!r}.")
        rows = as_pairs(pairs)
        if len(rows) < 2:
            raise ExplorerError("Give at least two (language, sentence) rows to compare.")
        codes, _, pooled = self._pooled_sentences(rows)  # pooled: (L+1, n, h)
        centring = self.centring()
        cosine = torch.stack([cosine_matrix(layer) for layer in pooled])
        centred = torch.stack([cosine_matrix(layer.double() - mean) for layer, mean in zip(pooled, centring.means)])
        scores, size, notes, plan = language_pair_scores(pooled, codes, permutations=permutations, seed=seed)
        return SentenceComparison(
            model=self.name,
            pairs=[(code, str(text)) for code, (_, text) in zip(codes, rows)],
            pooled_cosine=cosine,
            centred_cosine=centred,
            parallel_size=size,
            scores=scores,
            notes=notes,
            centring=centring,
            permutations=plan.count if plan is not None else 0,
            exact_test=plan is not None and plan.exact,
        )

    # ----- many texts at once (batch mode): each text checked alone, forward passes shared ---------------

    @_guard_device_memory
    def predict_masks_batch(
        self,
        texts: Sequence[object],
        languages: Sequence[Sequence[str] | str],
        top_k: int = 5,
        *,
        tokens_per_pass: int = TOKENS_PER_PASS,
    ) -> list[MaskPrediction | ExplorerError]:
        """predict_masks(texts[i], languages[i], top_k) for every i, in input order: the same results, with the
        texts sharing forward passes (predict_masks_together, texts of similar length, at most tokens_per_pass
        padded tokens a pass unless one text needs more). A text that fails its checks gets its ExplorerError in
        its place, and the others run. int8 models run each text alone: their answers depend on the pass."""
        self._require_mlm()
        self._same_length(texts, languages)
        k = self._top_k(top_k, int(self.backend.model.config.vocab_size))
        results: list = [None] * len(texts)
        requests: dict[int, MaskRequest] = {}
        for i, (text, chosen) in enumerate(zip(texts, languages)):
            try:
                requests[i] = self.check_mask_request(text, chosen, k)
            except ExplorerError as exc:
                results[i] = exc
        groups: list[list[int]] = []
        rows = 0
        for i in sorted(requests, key=lambda i: (len(requests[i].ids), i)):
            width = len(requests[i].ids)  # the longest so far: sorted by length
            alone = bool(self.loaded.quantization)
            if groups and not alone and (rows + len(requests[i].languages)) * width <= tokens_per_pass:
                groups[-1].append(i)
                rows += len(requests[i].languages)
            else:
                groups.append([i])
                rows = len(requests[i].languages)
        for number, group in enumerate(groups):
            jobs.checkpoint(number, len(groups), f"Filling masks: pass {number + 1} of {len(groups)}")
            if len(group) == 1:  # predict_masks's own path, as the batcher takes for a lone request
                results[group[0]] = self.run_mask_request(requests[group[0]])
                continue
            for i, prediction in zip(group, self.predict_masks_together([requests[i] for i in group])):
                results[i] = prediction
        return results

    @_guard_device_memory
    def compare_adapters_batch(
        self,
        texts: Sequence[object],
        languages: Sequence[Sequence[str] | str],
        references: Sequence[str | None] | None = None,
        *,
        tokens_per_pass: int = TOKENS_PER_PASS,
    ) -> list[AdapterComparison | ExplorerError]:
        """compare_adapters(texts[i], languages[i], references[i]) for every i, in input order: the same results,
        with the (text, language) rows of all texts sharing forward passes. A text that fails its checks gets
        its ExplorerError in its place, and the others run."""
        self._same_length(texts, languages)
        references = [None] * len(texts) if references is None else references
        self._same_length(texts, references, "references")
        results: list = [None] * len(texts)
        prepared: dict[int, tuple[list[str], str, list[int], list[int]]] = {}
        for i, (text, chosen, reference) in enumerate(zip(texts, languages, references)):
            try:
                codes, reference = self._languages_and_reference(chosen, reference)
                ids = self.tokenize(text)
                prepared[i] = (codes, reference, ids, self._content_positions(ids))
            except ExplorerError as exc:
                results[i] = exc
        forward = [(i, code) for i, (codes, *_) in prepared.items() for code in codes]
        pending: dict[int, dict[str, torch.Tensor]] = {}
        with torch.inference_mode():
            for chosen, _, _, encoded in self._passes(
                [prepared[i][2] for i, _ in forward], [code for _, code in forward], tokens_per_pass, all_layers=True
            ):
                for r, j in enumerate(chosen):
                    i, code = forward[j]
                    content = prepared[i][3]
                    states = pending.setdefault(i, {})
                    states[code] = torch.stack([layer[r, content].float() for layer in encoded.layers]).cpu()
                    codes, reference, ids, _ = prepared[i]
                    if len(states) == len(codes):  # the text's last adapter is done: summarise, free its states
                        layers = torch.stack([states[c] for c in codes], dim=1)  # (L+1, k, t, h)
                        del pending[i]
                        results[i] = self._adapter_comparison(str(texts[i]), codes, reference, ids, content, layers)
        return results

    @staticmethod
    def _same_length(texts: Sequence[object], other: Sequence[object], what: str = "languages") -> None:
        if len(texts) != len(other):
            raise ExplorerError(f"Give one {what} entry per text: {len(texts)} texts, {len(other)} {what} entries.")

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

    # ----- beyond the anchors: logit lens, which adapter fits, mixing two adapters, a map ------------

    def _guesses(self, probabilities: torch.Tensor, token_ids: torch.Tensor, names: dict[int, str]) -> list[TokenGuess]:
        """TokenGuess objects for one row of top-k results; names caches readable tokens across rows."""
        guesses = []
        for token, p in zip(token_ids.tolist(), probabilities.tolist()):
            if token not in names:
                names[token] = readable_token(self.tokenizer, token)
            guesses.append(TokenGuess(names[token], token, float(p)))
        return guesses

    def _whole_number(self, value: object, what: str, low: int, high: int) -> int:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (isinstance(value, float) and not (math.isfinite(value) and value.is_integer()))
            or not low <= int(value) <= high
        ):
            raise ExplorerError(f"{what} must be a whole number between {low} and {high}; got {value!r}.")
        return int(value)

    @_guard_device_memory
    def logit_lens(self, text: str, languages: Sequence[str] | str, top_k: int = 5) -> LogitLens:
        """Every <mask> read through the model's own masked-LM head at every layer, under each adapter.

        Layer 0 is the embedding output (before any adapter, so the same for all); the last layer is exactly
        what predict_masks returns. Pre-norm checkpoints: every layer but the last goes through the encoder's
        closing LayerNorm first, as the last one does (`readout` in the result says which rule applied)."""
        self._require_mlm()
        codes = self.check_languages(languages)
        k = self._top_k(top_k, int(self.backend.model.config.vocab_size))
        ids = self.tokenize(text)
        positions = self._mask_positions(ids)
        input_ids, attention = self.pad([ids])
        readouts = len(positions) * (self.shape.layers + 1)  # every mask at every layer meets the vocabulary
        what = f"Reading {len(positions)} mask(s) at every layer under {len(codes)} adapters"
        with (
            self.admitted(len(codes), len(ids), layer_copies=2, output_positions=readouts, what=what),
            torch.inference_mode(),
        ):
            encoded = self.backend.encode_adapters(input_ids, attention, codes, all_layers=True)
            last = len(encoded.layers) - 1
            # (layers, adapters, masks, hidden); the last layer already carries the closing LayerNorm.
            states = torch.stack(
                [
                    layer[:, positions] if index == last else self.backend.final_norm(layer[:, positions])
                    for index, layer in enumerate(encoded.layers)
                ]
            )
            count, adapters, masks, hidden = states.shape
            _, final_ids, _ = vocabulary_readout(states[last].reshape(-1, hidden), self.backend.mlm_logits, 1)
            tracked = final_ids.reshape(1, adapters * masks, 1).expand(count, -1, -1).reshape(-1, 1)
            top_p, top_ids, final_p = vocabulary_readout(
                states.reshape(-1, hidden), self.backend.mlm_logits, k, tracked
            )
        top_p = top_p.view(count, adapters, masks, k).cpu()
        top_ids = top_ids.view(count, adapters, masks, k).cpu()
        final_p = final_p.view(count, adapters, masks).cpu()
        names: dict[int, str] = {}
        lens_masks = []
        for m, position in enumerate(positions):
            layers = [
                {code: self._guesses(top_p[layer, a, m], top_ids[layer, a, m], names) for a, code in enumerate(codes)}
                for layer in range(count)
            ]
            lens_masks.append(
                LensMask(
                    position=position,
                    layers=layers,
                    final={code: layers[last][code][0] for code in codes},
                    final_probability={code: [float(v) for v in final_p[:, a, m]] for a, code in enumerate(codes)},
                )
            )
        pre_norm = bool(self.backend.model.config.pre_norm)
        return LogitLens(
            model=self.name,
            text=text,
            languages=codes,
            tokens=self.tokenizer.convert_ids_to_tokens(ids),
            readout=READOUT_PRE_NORM if pre_norm else READOUT_POST_NORM,
            masks=lens_masks,
        )

    @_guard_device_memory
    def score_languages(self, text: str, languages: Sequence[str] | str | None = None) -> LanguageScores:
        """Rank adapters by the pseudo-log-likelihood of text under each (Salazar et al., 2020): each token
        masked in turn, log p of the original token summed. None: every language of the model.

        One forward row per (adapter, scored token), batched and chunked; <mask> tokens in the text stay masked
        and are not scored. Beside it, py3langid's guess among the same languages (None if not installed)."""
        self._require_mlm()
        if languages is None or (isinstance(languages, (str, list, tuple)) and not languages):
            codes = list(self.languages)
            self.backend.ensure_languages(codes)
        else:
            codes = self.check_languages(languages)
        ids = self.tokenize(text)
        scored = [i for i in self._content_positions(ids) if ids[i] != self.tokenizer.mask_token_id]
        if not scored:
            raise ExplorerError("The text has no words to score, only masks and special tokens. Type a sentence.")
        rows = len(codes) * len(scored)
        if rows > self.limits.max_score_rows:
            raise ExplorerError(
                f"Scoring this text costs {rows:,} forward rows ({len(scored)} tokens x {len(codes)} adapters); at "
                f"most {self.limits.max_score_rows:,} are accepted here. Choose fewer languages or a shorter text."
            )
        copies = masked_copies(ids, scored, self.tokenizer.mask_token_id)
        count = len(scored)
        per_pass = rows_per_pass(len(ids))
        log_probs = torch.empty(rows)
        passes = 0
        total = -(-rows // per_pass)
        what = f"Scoring {count} tokens under {len(codes)} adapters"
        jobs.feasible(Cost(0, total * self.cost(per_pass, len(ids), output_positions=1).flops, what))
        start = time.perf_counter()
        with torch.inference_mode():
            # Rows adapter by adapter, so that each pass holds few languages (one adapter call per language).
            for first in range(0, rows, per_pass):
                jobs.checkpoint(passes, total, f"Scoring: pass {passes + 1} of {total}")
                chosen = range(first, min(rows, first + per_pass))
                input_ids, attention = self.pad([copies[row % count] for row in chosen])
                with self.admitted(len(chosen), len(ids), output_positions=1, what=what):
                    encoded = self.backend.encode_rows(input_ids, attention, [codes[row // count] for row in chosen])
                    at = torch.tensor([scored[row % count] for row in chosen], device=encoded.last.device)
                    states = encoded.last[torch.arange(len(chosen), device=at.device), at]
                    targets = torch.tensor([ids[scored[row % count]] for row in chosen])
                    found = token_log_probs(states, self.backend.mlm_logits, targets)
                log_probs[first : first + len(chosen)] = found.cpu()
                passes += 1
        seconds = time.perf_counter() - start
        per_token = log_probs.view(len(codes), count)
        cost = ScoringCost(forward_rows=rows, forward_passes=passes, tokens_per_row=len(ids), seconds=seconds)
        return LanguageScores(
            model=self.name,
            text=text,
            tokens=[readable_token(self.tokenizer, ids[i]) for i in scored],
            scores=rank_scores({code: float(per_token[a].double().sum()) for a, code in enumerate(codes)}, count),
            token_log_probs={code: [float(v) for v in per_token[a]] for a, code in enumerate(codes)},
            cost=cost,
            detector=detect(MASK_SPELLINGS.sub(" ", text), codes),
        )

    def _resolve_auto(self, text: str, languages: object) -> tuple[object, str | None]:
        """languages with the word "auto" replaced by the adapter that fits text best (and that adapter)."""
        items = [part for part in languages.split(",") if part.strip()] if isinstance(languages, str) else languages
        if not isinstance(items, (list, tuple)) or not any(
            isinstance(item, str) and item.strip().lower() == AUTO for item in items
        ):
            return languages, None
        try:
            best = self.score_languages(text).best
        except ExplorerError as exc:
            raise ExplorerError(
                f'"{AUTO}" scores the text under every language of the model, and here that fails: {exc} Or choose '
                "the adapters yourself instead of auto."
            ) from None
        return [best if isinstance(item, str) and item.strip().lower() == AUTO else item for item in items], best

    @_guard_device_memory
    def interpolate(self, text: str, a: str, b: str, steps: int = 11, top_k: int = 5) -> AdapterMix:
        """Fill every <mask> with two adapters mixed in every layer, at steps weights alpha from 0 (a) to 1 (b):
        each language adapter's output becomes (1 - alpha) * adapter a + alpha * adapter b (see AdapterMix.mixed)."""
        self._require_mlm()
        code_a, code_b = (resolve_language(code, self.languages) for code in (a, b))
        if code_a == code_b:
            raise ExplorerError(f"Choose two different adapters to mix; both are {code_a}.")
        self.check_languages([code_a, code_b])
        count = self._whole_number(steps, "steps", 2, MAX_MIX_STEPS)
        k = self._top_k(top_k, int(self.backend.model.config.vocab_size))
        ids = self.tokenize(text)
        positions = self._mask_positions(ids)
        alphas = mixing_weights(count)
        input_ids, attention = self.pad([ids])
        masks = len(positions)
        what = f"Mixing two adapters at {count} weights"
        with self.admitted(count, len(ids), output_positions=2 * masks, what=what), torch.inference_mode():
            encoded = self.backend.encode_mixed(input_ids, attention, code_a, code_b, alphas, positions=positions)
            states = encoded.last.reshape(count * masks, -1)
            top_p, top_ids, _ = vocabulary_readout(states, self.backend.mlm_logits, k)
            top_p, top_ids = top_p.view(count, masks, k).cpu(), top_ids.view(count, masks, k).cpu()
            # Follow every token that is top-1 at some alpha, per mask, across all alphas.
            followed = [first_appearances([[int(top_ids[i, m, 0])] for i in range(count)]) for m in range(masks)]
            width = max(len(ids_) for ids_ in followed)
            padded = torch.tensor([ids_ + ids_[:1] * (width - len(ids_)) for ids_ in followed])  # (masks, width)
            _, _, kept = vocabulary_readout(
                states, self.backend.mlm_logits, 1, padded.repeat(count, 1).to(states.device)
            )
        kept = kept.view(count, masks, width).cpu()
        names: dict[int, str] = {}
        mix_masks = []
        for m, position in enumerate(positions):
            predictions = [self._guesses(top_p[i, m], top_ids[i, m], names) for i in range(count)]
            tracked = [
                TrackedToken(names[token], token, [float(kept[i, m, j]) for i in range(count)])
                for j, token in enumerate(followed[m])
            ]
            mix_masks.append(MixMask(position=position, predictions=predictions, tracked=tracked))
        return AdapterMix(
            model=self.name,
            text=text,
            language_a=code_a,
            language_b=code_b,
            alphas=alphas,
            tokens=self.tokenizer.convert_ids_to_tokens(ids),
            masks=mix_masks,
        )

    def _pooled_sentences(self, pairs: object) -> tuple[list[str], list[str], torch.Tensor]:
        """Rows of (language, sentence), each through its own adapter: codes, texts and the mean over text tokens
        at every layer (layers + 1, n, hidden), float32 on the CPU, in batches of sentences."""
        rows = as_pairs(pairs)
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
        return codes, [str(text) for _, text in rows], self.pooled_layers(token_rows, codes)

    @_guard_device_memory
    def project(
        self,
        pairs_or_text: object,
        layer: int | None = None,
        method: str = "pca",
        languages: Sequence[str] | str | None = None,
    ) -> Projection:
        """A 2-D map of mean-pooled states: (language, sentence) rows each through its own adapter, or one text
        through many adapters (languages; None: every language of the model). layer None: every layer.
        method: "pca" (deterministic) or "umap" (needs umap-learn)."""
        if method not in METHODS:
            raise ExplorerError(f"method must be one of {', '.join(METHODS)}; got {method!r}.")
        if method == "umap" and not umap_available():
            raise ExplorerError("UMAP needs the umap-learn package (pip install umap-learn); PCA works without it.")
        notes = []
        if isinstance(pairs_or_text, str):
            kind = "adapters"
            codes = self.check_languages(self.languages if languages in (None, "", []) else languages)
            ids = self.tokenize(pairs_or_text)
            content = self._content_positions(ids)
            input_ids, attention = self.pad([ids])
            what = f"Mapping one text under {len(codes)} adapters"
            with self.admitted(len(codes), len(ids), layer_copies=2, what=what), torch.inference_mode():
                encoded = self.backend.encode_adapters(input_ids, attention, codes, all_layers=True)
                pooled = torch.stack([state[:, content].float().mean(1) for state in encoded.layers]).cpu()
            texts = [pairs_or_text] * len(codes)
        else:
            kind = "sentences"
            codes, texts, pooled = self._pooled_sentences(pairs_or_text)
        least = 4 if method == "umap" else 3
        if len(codes) < least:
            raise ExplorerError(
                f"A 2-D map needs at least {least} points for {method.upper()}; there are {len(codes)}. "
                + ("Choose more languages." if kind == "adapters" else "Add sentences.")
            )
        last = pooled.shape[0] - 1
        if layer is None or layer == "":
            chosen = list(range(last + 1))
        else:
            chosen = [self._whole_number(layer, "layer", 0, last)]
        coordinates, explained = project_layers(pooled, chosen, method)
        if kind == "adapters" and 0 in chosen:
            notes.append("Layer 0 is the embedding output, before any adapter: every adapter's point is the same.")
        if method == "umap":
            notes.append("UMAP axes have no units and explain no share of variance; only neighbourhoods mean much.")
        return Projection(
            model=self.name,
            method=method,
            kind=kind,
            layers=chosen,
            languages=codes,
            texts=texts,
            coordinates=coordinates,
            explained_variance=explained,
            notes=notes,
        )
