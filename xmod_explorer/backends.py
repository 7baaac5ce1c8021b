"""Run text through chosen language adapters, for either library that implements X-MOD.

Both backends implement the ``Backend`` protocol, so the engine never asks which one it has:
``encode_rows`` (each row through its own adapter), ``encode_adapters`` (one text through
several adapters), ``encode_texts`` (several texts, each through several adapters: requests batched
together), ``mlm_logits`` / ``classifier_logits`` (heads on selected states only),
``ensure_languages`` (adapters ready in memory) and, for the transfer lab, a private trainable copy.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from xmod_explorer import compat
from xmod_explorer.errors import ExplorerError


@dataclass
class Encoded:
    """Encoder output: last layer, and all layers (embedding output first) when asked for."""

    last: torch.Tensor
    layers: tuple[torch.Tensor, ...] | None = None


class Backend(Protocol):
    """What the engine needs from a library that runs X-MOD."""

    name: str
    model: nn.Module
    languages: list[str]  # every code the backend can run, in the model's order (lang id = index)
    has_mlm: bool

    @property
    def device(self) -> torch.device: ...

    @property
    def loaded(self) -> list[str]:
        """Codes whose adapters are in memory now."""
        ...

    def ensure_languages(self, languages: Sequence[str]) -> None: ...

    def encode_rows(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, row_languages: Sequence[str], *, all_layers=False
    ) -> Encoded: ...

    def encode_adapters(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        languages: Sequence[str],
        *,
        all_layers: bool = False,
        positions: Sequence[int] | None = None,
    ) -> Encoded: ...

    def encode_texts(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        row_texts: Sequence[int],
        row_languages: Sequence[str],
        positions: torch.Tensor,
    ) -> torch.Tensor:
        """Several texts, each through several adapters, in one pass: row r is text row_texts[r] under
        row_languages[r]; returns the last layer's states at positions[r] (rows, positions, hidden)."""
        ...

    def mlm_logits(self, states: torch.Tensor) -> torch.Tensor: ...

    def final_norm(self, states: torch.Tensor) -> torch.Tensor:
        """The encoder's closing LayerNorm (pre-norm models) applied to states; post-norm: states unchanged."""
        ...

    def encode_mixed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        language_a: str,
        language_b: str,
        alphas: Sequence[float],
        *,
        positions: Sequence[int],
    ) -> Encoded:
        """One text (a single row) with every layer's language adapter output mixed, one output row per
        alpha: (1 - alpha) * adapter a + alpha * adapter b. ``last`` holds only the token positions given."""
        ...

    def classifier_labels(self) -> list[str] | None: ...

    def classifier_logits(self, states: torch.Tensor) -> torch.Tensor: ...

    def private_copy(self) -> Backend:
        """A float32 deep copy that training may change without touching this backend's model."""
        ...

    def start_finetuning(self, task_adapter: str) -> list[nn.Parameter]:
        """Make the paper's fine-tuning recipe's parameters trainable (all else frozen); returns them."""
        ...


class ReadWriteLock:
    """Many forwards at once, or one adapter load alone (loading mutates the module tree)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False

    @contextmanager
    def reading(self):
        with self._cond:
            while self._writing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def writing(self):
        with self._cond:
            while self._writing or self._readers:
                self._cond.wait()
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


def _group_rows(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, keys: list[int]
) -> tuple[torch.Tensor, torch.Tensor, list[int], list[int] | None]:
    """Reorder rows so equal keys (languages) are adjacent, stably: one adapter call per language and
    layer instead of one per run. Returns the rows, their keys, and the inverse order (None if unchanged)."""
    order = sorted(range(len(keys)), key=lambda i: keys[i])
    if order == list(range(len(keys))):
        return input_ids, attention_mask, keys, None
    inverse = [0] * len(order)
    for position, row in enumerate(order):
        inverse[row] = position
    index = torch.tensor(order, device=input_ids.device)
    return input_ids.index_select(0, index), attention_mask.index_select(0, index), [keys[i] for i in order], inverse


def _apply_order(encoded: Encoded, inverse: list[int] | None) -> Encoded:
    if inverse is None:
        return encoded
    index = torch.tensor(inverse, device=encoded.last.device)
    layers = tuple(h.index_select(0, index) for h in encoded.layers) if encoded.layers is not None else None
    return Encoded(encoded.last.index_select(0, index), layers)


@dataclass(frozen=True)
class _Packing:
    """Where the real tokens of padded (rows, tokens) rows lie once packed into one (real tokens, hidden) run:
    index[i] is packed token i's place in the flattened rows."""

    index: torch.Tensor
    rows: int
    tokens: int

    @classmethod
    def of(cls, attention_mask: torch.Tensor) -> _Packing:
        return cls(attention_mask.reshape(-1).nonzero().squeeze(1), *attention_mask.shape)

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        return padded.reshape(self.rows * self.tokens, -1).index_select(0, self.index)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """Back to (rows, tokens, hidden), zeros at the padding (which attention masks out)."""
        padded = packed.new_zeros(self.rows * self.tokens, packed.shape[-1])
        return padded.index_copy_(0, self.index, packed).view(self.rows, self.tokens, -1)


def _attention(
    attention: nn.Module,
    queries: torch.Tensor,
    context: torch.Tensor,
    mask: torch.Tensor,
    packing: _Packing | None = None,
) -> torch.Tensor:
    """XmodAttention's output at the positions of queries, with keys and values from every token of context.

    The same steps as transformers' eager self-attention (which X-MOD is limited to), written out so
    that queries can be fewer than the tokens: with queries equal to context it is the library's own
    forward. Pre-norm normalises both inputs first, as the library normalises its one input. With packing,
    queries and context are the same packed (tokens, hidden) run: every linear step works on the real tokens
    only, and the token-by-token products on the rows (their padding masked out, as in the library).
    """
    heads = attention.self.num_attention_heads
    size = attention.self.attention_head_size
    residual = queries
    if attention.pre_norm:
        queries, context = attention.output.LayerNorm(queries), attention.output.LayerNorm(context)

    def split(states: torch.Tensor) -> torch.Tensor:  # (batch, tokens, hidden) -> (batch, heads, tokens, size)
        if packing is not None:
            states = packing.unpack(states)
        return states.view(*states.shape[:-1], heads, size).transpose(1, 2)

    query = split(attention.self.query(queries))
    key, value = split(attention.self.key(context)), split(attention.self.value(context))
    scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(size) + mask
    weights = attention.self.dropout(scores.softmax(dim=-1))
    mixed = torch.matmul(weights, value).transpose(1, 2)
    mixed = packing.pack(mixed) if packing is not None else mixed.reshape(*residual.shape[:-1], heads * size)
    output = attention.output(mixed, residual)  # dense, dropout, + residual
    return output if attention.pre_norm else attention.output.LayerNorm(output)


def _attention_and_feed_forward(
    layer: nn.Module,
    queries: torch.Tensor,
    mask: torch.Tensor,
    context: torch.Tensor | None = None,
    packing: _Packing | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """XmodLayer.forward's attention and feed-forward steps: (intermediate output, residual).

    With context, the queries are only some positions while keys and values come from every token
    of context (the layer input); with packing, queries are packed tokens (see _attention). Tests compare
    the results with the library's own forward for both X-MOD layouts (post-norm and pre-norm), on
    transformers 4.57 and 5.
    """
    attention_output = _attention(layer.attention, queries, queries if context is None else context, mask, packing)
    residual = attention_output
    if layer.pre_norm:
        attention_output = layer.output.LayerNorm(attention_output)
    return layer.feed_forward_chunk(attention_output), residual


def _shared_prefix_of_first_layer(layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """XmodLayer.forward up to (not including) its language adapter: attention, feed-forward, residual."""
    return _before_adapter(layer, hidden, mask)


def _before_adapter(
    layer: nn.Module,
    hidden: torch.Tensor,
    mask: torch.Tensor,
    positions: Sequence[int] | None = None,
    packing: _Packing | None = None,
) -> torch.Tensor:
    """XmodLayer.forward up to its language adapter (XmodOutput.forward before lang_adapter), for every
    position or, with positions, at those only (every token still feeds keys and values); with packing,
    on packed tokens."""
    if positions is None:
        intermediate, residual = _attention_and_feed_forward(layer, hidden, mask, packing=packing)
    else:
        intermediate, residual = _attention_and_feed_forward(layer, hidden[:, list(positions)], mask, context=hidden)
    output = layer.output
    return output.dropout(output.dense(intermediate)) + residual


def _mixed_language_adapter(
    layer: nn.Module, hidden: torch.Tensor, language_a: str, language_b: str, alphas: torch.Tensor
) -> torch.Tensor:
    """XmodOutput.lang_adapter, then the layer's closing LayerNorm, with the adapter module's output mixed per row.

    What is mixed is the bottleneck's output, A(x) = dense2(act(dense1(x))): it becomes (1 - alpha) * A_a(x) +
    alpha * A_b(x). Its input x (after the shared LayerNorm, where the checkpoint puts one before the adapter),
    the residual added to it and every LayerNorm stay as the library computes them. Mirrors transformers 4.57
    step for step, so alpha 0 and 1 give the pure adapters exactly.
    """
    output = layer.output
    if output.adapter_layer_norm is not None:
        normed = output.adapter_layer_norm(hidden)
    elif output.adapter_reuse_layer_norm:
        normed = output.LayerNorm(hidden)
    else:
        normed = hidden
    residual = normed if output.ln_before_adapter else hidden
    weight = alphas.to(hidden.dtype).view(-1, 1, 1)
    adapters = output.adapter_modules
    mixed = (1 - weight) * adapters[language_a](normed) + weight * adapters[language_b](normed)
    out = output.dropout(mixed) + residual
    return out if layer.pre_norm else output.LayerNorm(out)


def _final_norm(encoder: nn.Module, states: torch.Tensor) -> torch.Tensor:
    """XmodEncoder's closing LayerNorm, which pre-norm checkpoints apply after their last layer."""
    return encoder.encoder.LayerNorm(states) if encoder.encoder.is_pre_norm else states


def _layer_at_positions(
    layer: nn.Module,
    hidden: torch.Tensor,
    lang_ids: torch.Tensor,
    mask: torch.Tensor,
    positions: Sequence[int] | torch.Tensor,
) -> torch.Tensor:
    """XmodLayer.forward for the outputs at positions only (every token still feeds keys and values).

    positions: the same positions for every row, or a (rows, n) tensor with each row's own."""
    if isinstance(positions, torch.Tensor):
        queries = hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    else:
        queries = hidden[:, list(positions)]
    intermediate, residual = _attention_and_feed_forward(layer, queries, mask, context=hidden)
    out = layer.output(intermediate, residual, lang_ids)
    return out if layer.pre_norm else layer.output.LayerNorm(out)


def _adapter_and_norm(layer: nn.Module, hidden: torch.Tensor, lang_ids: torch.Tensor) -> torch.Tensor:
    """The rest of XmodLayer.forward after _before_adapter: the language adapter, then the closing LayerNorm
    (post-norm). lang_ids: one per entry of hidden's first dimension, grouped (the library splits by them
    there): rows, or packed tokens."""
    out = layer.output.lang_adapter(lang_ids, hidden)
    return out if layer.pre_norm else layer.output.LayerNorm(out)


def _encode_packed(
    layers: Sequence[nn.Module],
    embedded: torch.Tensor,
    attention_mask: torch.Tensor,
    mask: torch.Tensor,
    rows_mask: torch.Tensor,
    texts: torch.Tensor,
    lang_ids: torch.Tensor,
) -> torch.Tensor:
    """encode_texts up to the last layer's input, on packed tokens (mask: the texts' additive attention mask,
    rows_mask: the rows'): rows of texts of different lengths share the
    pass without computing their padding. Layer 0's part before the adapter runs once per text, the rest once per
    row (texts[r] under lang_ids[r]). Every step but attention's token-by-token products works token by token,
    so packing changes no result beyond rounding (tests: <= 1e-5 against plain transformers). Returns the rows
    padded again (zeros at the padding, which attention masks out), for the last layer."""
    by_text = _Packing.of(attention_mask)
    packed_texts = _before_adapter(layers[0], by_text.pack(embedded), mask, packing=by_text)
    by_row = _Packing.of(attention_mask.index_select(0, texts))
    packed = by_row.pack(by_text.unpack(packed_texts).index_select(0, texts))  # each row: its text's tokens
    row_lengths = attention_mask.sum(1).index_select(0, texts)
    token_lang_ids = lang_ids.repeat_interleave(row_lengths)
    packed = _adapter_and_norm(layers[0], packed, token_lang_ids)
    for layer in layers[1:-1]:
        packed = _adapter_and_norm(layer, _before_adapter(layer, packed, rows_mask, packing=by_row), token_lang_ids)
    return by_row.unpack(packed)


class NativeBackend:
    """transformers' XmodModel: all adapters in one checkpoint, chosen per row with lang_ids."""

    name = "transformers"
    has_mlm = False
    # encode_texts packs rows of different lengths (skips their padding); False: the padded rows, as before
    # (kept for the benchmark's before-and-after).
    pack_rows = True

    def __init__(self, model: nn.Module, languages: Sequence[str]):
        self.model = model
        self.encoder = model.roberta
        self.languages = list(languages)
        self._ids = {code: index for index, code in enumerate(self.languages)}

    @property
    def device(self) -> torch.device:
        return self.encoder.embeddings.word_embeddings.weight.device

    @property
    def loaded(self) -> list[str]:
        return list(self.languages)

    def private_copy(self) -> NativeBackend:
        runner = NativeBackend(copy.deepcopy(self.model).to(dtype=torch.float32), self.languages)
        runner.has_mlm = self.has_mlm
        return runner

    def start_finetuning(self, task_adapter: str) -> list[nn.Parameter]:
        """The shared transformer layers train; embeddings, language adapters, heads and pooler stay frozen."""
        for parameter in self.model.parameters():
            parameter.requires_grad_(True)
        self.model.freeze_embeddings_and_language_adapters()
        for name, parameter in self.model.named_parameters():
            if not name.startswith("roberta.encoder."):
                parameter.requires_grad_(False)  # heads and pooler: not part of this objective
        return [p for p in self.model.parameters() if p.requires_grad]

    def ensure_languages(self, languages: Sequence[str]) -> None:
        """All adapters are in memory already; nothing to load."""

    def lang_ids(self, languages: Sequence[str]) -> torch.Tensor:
        """The lang ids of codes, as indices into this model's own language list."""
        return torch.tensor([self._ids[code] for code in languages], dtype=torch.long, device=self.device)

    def encode_rows(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        row_languages: Sequence[str],
        *,
        all_layers: bool = False,
    ) -> Encoded:
        """Each row through its own language's adapter, in one forward pass."""
        input_ids, attention_mask, keys, inverse = _group_rows(
            input_ids, attention_mask, [self._ids[c] for c in row_languages]
        )
        out = self.encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            lang_ids=torch.tensor(keys, dtype=torch.long, device=input_ids.device),
            output_hidden_states=all_layers,
            return_dict=True,
        )
        return _apply_order(Encoded(out.last_hidden_state, out.hidden_states if all_layers else None), inverse)

    def encode_adapters(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        languages: Sequence[str],
        *,
        all_layers: bool = False,
        positions: Sequence[int] | None = None,
    ) -> Encoded:
        """One text (a single row) through each adapter in languages: one output row per language.

        Until the first adapter every row would be the same, so the embeddings and layer 0's attention
        and feed-forward block run once, and the K copies start at layer 0's adapter (the adapters
        library's Parallel composition does the same). The rest is the library's own layers.

        With positions (and not all_layers), ``last`` holds only those token positions, and the last
        layer computes its outputs only there: filling masks needs nothing else from it.
        """
        count = len(languages)
        if (count == 1 and positions is None) or self.model.training or len(self.encoder.encoder.layer) < 2:
            encoded = self.encode_rows(
                input_ids.expand(count, -1), attention_mask.expand(count, -1), languages, all_layers=all_layers
            )
            return encoded if positions is None else Encoded(encoded.last[:, list(positions)], encoded.layers)
        lang_ids = self.lang_ids(languages)
        mask = compat.additive_attention_mask(attention_mask, self.encoder.embeddings.word_embeddings.weight.dtype)
        layers = self.encoder.encoder.layer
        embedded = self.encoder.embeddings(input_ids=input_ids)
        hidden = _shared_prefix_of_first_layer(layers[0], embedded, mask).expand(count, -1, -1)
        hidden = _adapter_and_norm(layers[0], hidden, lang_ids)
        states = [embedded.expand(count, -1, -1), hidden] if all_layers else None
        partial = positions is not None and not all_layers
        for layer in layers[1:-1] if partial else layers[1:]:
            hidden = compat.layer_output(layer(hidden, lang_ids, mask))
            if all_layers:
                states.append(hidden)
        if partial:
            hidden = _layer_at_positions(layers[-1], hidden, lang_ids, mask, positions)
        elif positions is not None:
            hidden = hidden[:, list(positions)]
        if self.encoder.encoder.is_pre_norm:
            hidden = self.encoder.encoder.LayerNorm(hidden)
            if all_layers:
                states[-1] = hidden
        return Encoded(hidden, tuple(states) if all_layers else None)

    def encode_texts(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        row_texts: Sequence[int],
        row_languages: Sequence[str],
        positions: torch.Tensor,
    ) -> torch.Tensor:
        """Several texts (padded rows of input_ids), each through several adapters, in one pass.

        Row r is text row_texts[r] under row_languages[r]; the result holds the last layer's states at
        positions[r] only, (rows, positions, hidden). As in encode_adapters, each text's embeddings and
        layer 0's attention and feed-forward block run once, the copies start at layer 0's adapter, and
        the last layer computes only the positions asked for. Rows run sorted by language (one adapter
        call per language and layer), and come back in the order given. Texts of different lengths run
        packed up to the last layer (_encode_packed), without computing their padding.
        """
        layers = self.encoder.encoder.layer
        keys = [self._ids[code] for code in row_languages]
        order = sorted(range(len(keys)), key=lambda i: keys[i])
        device = input_ids.device
        texts = torch.tensor([row_texts[i] for i in order], dtype=torch.long, device=device)
        lang_ids = torch.tensor([keys[i] for i in order], dtype=torch.long, device=device)
        sorted_positions = positions.to(device).index_select(0, torch.tensor(order, device=device))
        if self.model.training or len(layers) < 2:
            encoded = self.encode_rows(
                input_ids.index_select(0, texts),
                attention_mask.index_select(0, texts),
                [self.languages[key] for key in lang_ids.tolist()],
            )
            states = encoded.last.gather(1, sorted_positions.unsqueeze(-1).expand(-1, -1, encoded.last.shape[-1]))
        else:
            mask = compat.additive_attention_mask(attention_mask, self.encoder.embeddings.word_embeddings.weight.dtype)
            rows_mask = mask.index_select(0, texts)
            embedded = self.encoder.embeddings(input_ids=input_ids)
            if self.pack_rows and not bool(attention_mask.all()):
                # Texts of different lengths (a workshop's shared pass: some 14 % of its tokens are padding).
                hidden = _encode_packed(layers, embedded, attention_mask, mask, rows_mask, texts, lang_ids)
            else:
                hidden = _shared_prefix_of_first_layer(layers[0], embedded, mask).index_select(0, texts)
                hidden = _adapter_and_norm(layers[0], hidden, lang_ids)
                for layer in layers[1:-1]:
                    hidden = compat.layer_output(layer(hidden, lang_ids, rows_mask))
            states = _layer_at_positions(layers[-1], hidden, lang_ids, rows_mask, sorted_positions)
            states = _final_norm(self.encoder, states)
        inverse = [0] * len(order)
        for place, row in enumerate(order):
            inverse[row] = place
        return states.index_select(0, torch.tensor(inverse, device=device))

    def encode_mixed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        language_a: str,
        language_b: str,
        alphas: Sequence[float],
        *,
        positions: Sequence[int],
    ) -> Encoded:
        """One text through every layer with its adapter output mixed (one row per alpha), in one pass.

        As in encode_adapters, the embeddings and layer 0 before its adapter run once, and the last layer
        only at positions. Each layer is transformers' own modules, with lang_adapter's bottleneck mixed."""
        count = len(alphas)
        weights = torch.tensor(list(alphas), dtype=torch.float32, device=input_ids.device)
        mask = self.encoder.get_extended_attention_mask(attention_mask, input_ids.shape)
        layers = self.encoder.encoder.layer
        embedded = self.encoder.embeddings(input_ids=input_ids)
        first_only = positions if len(layers) == 1 else None
        hidden = _before_adapter(layers[0], embedded, mask, first_only).expand(count, -1, -1)
        hidden = _mixed_language_adapter(layers[0], hidden, language_a, language_b, weights)
        for index, layer in enumerate(layers[1:], start=1):
            at = positions if index == len(layers) - 1 else None
            hidden = _mixed_language_adapter(
                layer, _before_adapter(layer, hidden, mask, at), language_a, language_b, weights
            )
        return Encoded(_final_norm(self.encoder, hidden))

    def final_norm(self, states: torch.Tensor) -> torch.Tensor:
        """The encoder's closing LayerNorm (pre-norm models) applied to states; post-norm: states unchanged."""
        return _final_norm(self.encoder, states)

    def mlm_logits(self, states: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits for hidden states of shape (n, hidden)."""
        head = getattr(self.model, "lm_head", None)
        if head is None:
            raise ExplorerError(
                "This checkpoint has no masked-LM head, so it cannot fill masks. Load an XmodForMaskedLM checkpoint."
            )
        return head(states)

    def classifier_labels(self) -> list[str] | None:
        """Label names of the checkpoint's sequence-classification head (by id), or None without one."""
        if getattr(self.model, "classifier", None) is None:
            return None
        id2label = self.model.config.id2label
        return [str(id2label[i]) for i in range(int(self.model.config.num_labels))]

    def classifier_logits(self, states: torch.Tensor) -> torch.Tensor:
        """Label logits from the classification head, for last hidden states of shape (n, tokens, hidden)."""
        head = getattr(self.model, "classifier", None)
        if head is None:
            raise ExplorerError(
                "This checkpoint has no sequence-classification head. Load an XmodForSequenceClassification checkpoint."
            )
        return head(states)


class AdapterBackend:
    """The adapters library's XmodAdapterModel: a shared base plus one adapter per language.

    Adapters not in memory are loaded on first use from ``adapter_source(code)``.
    """

    name = "adapters"
    has_mlm = False
    classifier_head: str | None = None  # name of a classification head in model.heads
    task_adapter: str | None = None  # stacked on every language adapter: Stack(language, task)

    def __init__(
        self,
        model: nn.Module,
        languages: Sequence[str],
        adapter_source: Callable[[str], Path],
        *,
        dtype: torch.dtype,
        mlm_head: str | None,
    ):
        self.model = model
        self.encoder = model.roberta
        self.languages = list(languages)
        self.adapter_source = adapter_source
        self.dtype = dtype
        self.mlm_head_name = mlm_head
        self.lock = ReadWriteLock()

    @property
    def device(self) -> torch.device:
        return self.encoder.embeddings.word_embeddings.weight.device

    @property
    def loaded(self) -> list[str]:
        return [code for code in self.languages if code in self.model.adapters_config.adapters]

    def private_copy(self) -> AdapterBackend:
        with self.lock.reading():
            model = copy.deepcopy(self.model).to(dtype=torch.float32)
        runner = AdapterBackend(
            model, self.languages, self.adapter_source, dtype=torch.float32, mlm_head=self.mlm_head_name
        )
        runner.has_mlm = self.has_mlm
        runner.classifier_head = self.classifier_head
        runner.task_adapter = self.task_adapter
        return runner

    def start_finetuning(self, task_adapter: str) -> list[nn.Parameter]:
        """A new task adapter, stacked on every language adapter, is the only thing that trains."""
        from adapters import SeqBnConfig

        if self.task_adapter is not None:
            raise ExplorerError(
                "This checkpoint already stacks a task adapter; the lab fine-tunes plain X-MOD checkpoints only."
            )
        reduction = max(1, int(self.model.config.hidden_size) // 48)
        self.model.add_adapter(task_adapter, config=SeqBnConfig(reduction_factor=reduction))
        self.model.to(device=self.device, dtype=torch.float32)
        self.task_adapter = task_adapter
        marker = f".adapters.{task_adapter}."
        trainable = []
        for name, parameter in self.model.named_parameters():
            parameter.requires_grad_(marker in name)
            if marker in name:
                trainable.append(parameter)
        return trainable

    def ensure_languages(self, languages: Sequence[str]) -> None:
        """Load the adapters of any of languages that are not in memory yet."""
        missing = [code for code in languages if code not in self.model.adapters_config.adapters]
        if not missing:
            return
        with self.lock.writing():
            for code in missing:
                if code in self.model.adapters_config.adapters:
                    continue
                folder = self.adapter_source(code)
                self.model.load_adapter(str(folder), load_as=code, set_active=False, use_safetensors=True)
            self.model.to(device=self.device, dtype=self.dtype)
            self.model.eval()

    def _run(self, setup, input_ids, attention_mask, all_layers):
        from adapters import AdapterSetup
        from adapters.composition import Stack

        if self.task_adapter is not None:
            # Stack(Parallel/BatchSplit(...), task), not Parallel(Stack(...), ...): the nested form gives
            # different outputs from one-language-at-a-time runs in adapters 1.3.0; this one matches them.
            setup = Stack(setup, self.task_adapter)

        with self.lock.reading(), AdapterSetup(setup):
            out = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=all_layers, return_dict=True
            )
        return out

    def encode_rows(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        row_languages: Sequence[str],
        *,
        all_layers: bool = False,
    ) -> Encoded:
        """Each row through its own language's adapter: rows grouped by language, one BatchSplit pass."""
        from adapters.composition import BatchSplit

        rank = {code: index for index, code in enumerate(self.languages)}
        input_ids, attention_mask, keys, inverse = _group_rows(
            input_ids, attention_mask, [rank[c] for c in row_languages]
        )
        rows = [self.languages[key] for key in keys]
        runs: list[str] = []
        sizes: list[int] = []
        for code in rows:
            if runs and runs[-1] == code:
                sizes[-1] += 1
            else:
                runs.append(code)
                sizes.append(1)
        setup = runs[0] if len(runs) == 1 else BatchSplit(*runs, batch_sizes=sizes)
        out = self._run(setup, input_ids, attention_mask, all_layers)
        return _apply_order(Encoded(out.last_hidden_state, out.hidden_states if all_layers else None), inverse)

    def encode_adapters(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        languages: Sequence[str],
        *,
        all_layers: bool = False,
        positions: Sequence[int] | None = None,
    ) -> Encoded:
        """One text through each adapter with Parallel: the batch is replicated at the first adapter.

        With positions, ``last`` holds only those token positions (computed in full, then selected)."""
        from adapters.composition import Parallel

        setup = languages[0] if len(languages) == 1 else Parallel(*languages)
        out = self._run(setup, input_ids, attention_mask, all_layers)
        count = len(languages)
        layers = None
        if all_layers:
            # States before the first adapter are computed once; show them once per language.
            layers = tuple(h.expand(count, -1, -1) if h.shape[0] == 1 else h for h in out.hidden_states)
        last = out.last_hidden_state if positions is None else out.last_hidden_state[:, list(positions)]
        return Encoded(last.expand(count, -1, -1) if last.shape[0] == 1 else last, layers)

    def encode_texts(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        row_texts: Sequence[int],
        row_languages: Sequence[str],
        positions: torch.Tensor,
    ) -> torch.Tensor:
        """Several texts, each through several adapters, in one BatchSplit pass (encode_rows on the rows
        the texts make); the last layer's states at each row's positions, (rows, positions, hidden)."""
        texts = torch.tensor(list(row_texts), dtype=torch.long, device=input_ids.device)
        encoded = self.encode_rows(
            input_ids.index_select(0, texts), attention_mask.index_select(0, texts), list(row_languages)
        )
        index = positions.to(input_ids.device).unsqueeze(-1).expand(-1, -1, encoded.last.shape[-1])
        return encoded.last.gather(1, index)

    def encode_mixed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        language_a: str,
        language_b: str,
        alphas: Sequence[float],
        *,
        positions: Sequence[int],
    ) -> Encoded:
        """The library's own Average block, one pass per alpha.

        Average returns the mean over its branches of weight x branch output, where a branch's output is the
        adapter's bottleneck output plus the shared residual. With weights that sum to 1 (its default) that
        halves the layer's output for two branches; weights 2(1 - alpha) and 2 alpha, not normalised, give
        (1 - alpha) * A_a(x) + alpha * A_b(x) + residual exactly. Nested in Parallel or BatchSplit (one pass
        for all alphas) it applies the first adapter's LayerNorm twice in adapters 1.3.0, hence the loop.
        """
        from adapters.composition import Average

        if self.dtype != torch.float32:
            raise ExplorerError(
                "Mixing adapters with the adapters backend needs float32: the library's Average block weighs "
                f"its branches in float32, which {str(self.dtype).replace('torch.', '')} layers refuse. Load the "
                "model with dtype='float32', or with backend='transformers'."
            )
        rows = []
        for alpha in alphas:
            setup = Average(language_a, language_b, weights=[2 * (1 - alpha), 2 * alpha], normalize_weights=False)
            rows.append(self._run(setup, input_ids, attention_mask, False).last_hidden_state[:, list(positions)])
        return Encoded(torch.cat(rows))

    def final_norm(self, states: torch.Tensor) -> torch.Tensor:
        """The encoder's closing LayerNorm (pre-norm models) applied to states; post-norm: states unchanged."""
        return _final_norm(self.encoder, states)

    def mlm_logits(self, states: torch.Tensor) -> torch.Tensor:
        """Apply the masked-LM prediction head's layers to hidden states of shape (n, hidden)."""
        if self.mlm_head_name is None:
            raise ExplorerError(
                "This checkpoint has no masked-LM head, so it cannot fill masks. Load one with a masked_lm head."
            )
        for layer in self.model.heads[self.mlm_head_name]:
            states = layer(states)
        return states

    def classifier_labels(self) -> list[str] | None:
        """Label names of the classification head (by id), or None without one."""
        if self.classifier_head is None:
            return None
        config = self.model.heads[self.classifier_head].config
        label2id = config.get("label2id")
        if label2id:
            return [label for label, _ in sorted(label2id.items(), key=lambda item: item[1])]
        return [f"LABEL_{i}" for i in range(int(config["num_labels"]))]

    def classifier_logits(self, states: torch.Tensor) -> torch.Tensor:
        """Label logits from the classification head, for last hidden states of shape (n, tokens, hidden)."""
        if self.classifier_head is None:
            raise ExplorerError(
                "This checkpoint has no classification head. Load one saved with add_classification_head."
            )
        head = self.model.heads[self.classifier_head]
        x = self.encoder.pooler(states) if head.config.get("use_pooler") else states[:, 0]
        for layer in head:
            x = layer(x)
        return x
