"""Sentencepiece-style Unigram tokenizers that load as XLM-R tokenizers.

Ids match XLM-R's specials: <s>=0, <pad>=1, </s>=2, <unk>=3, and <mask> is the last id,
so everything downstream treats them exactly like xmod-base's tokenizer.

``train_tokenizer`` runs the tokenizers library's Unigram trainer (EM over a large sample: the
embedded model's tokenizer); its result can differ between runs, because the trainer breaks ties
in hash order. ``counted_tokenizer`` builds a vocabulary from piece counts alone and is the same
on every run: tests and tiny random models use it, so their numbers never move.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import XLMRobertaTokenizerFast

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]
SPACE = "▁"
MAX_PIECE = 16


def _pipeline(tok: Tokenizer) -> Tokenizer:
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="first")
    return tok


def _as_xlmr(tok: Tokenizer, model_max_length: int) -> XLMRobertaTokenizerFast:
    """Add <mask> as the last id and XLM-R's <s> ... </s> template, and check the special ids."""
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True, normalized=False)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    wrapped = XLMRobertaTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length)
    expected = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": len(wrapped) - 1}
    actual = {token: wrapped.convert_tokens_to_ids(token) for token in expected}
    if actual != expected:
        raise RuntimeError(f"tokenizer specials are {actual}, expected XLM-R's {expected}")
    return wrapped


def train_tokenizer(
    sentences: Iterable[str],
    vocab_size: int,
    *,
    model_max_length: int = 512,
    show_progress: bool = False,
) -> XLMRobertaTokenizerFast:
    """Train a Unigram tokenizer on sentences; returns it wrapped as XLMRobertaTokenizerFast."""
    tok = _pipeline(Tokenizer(models.Unigram()))
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size - 1,  # <mask> is added after training as the last id
        special_tokens=SPECIAL_TOKENS,
        unk_token="<unk>",
        show_progress=show_progress,
        max_piece_length=MAX_PIECE,
    )
    tok.train_from_iterator(sentences, trainer=trainer)
    return _as_xlmr(tok, model_max_length)


def counted_tokenizer(
    sentences: Iterable[str], vocab_size: int, *, model_max_length: int = 512
) -> XLMRobertaTokenizerFast:
    """A Unigram tokenizer whose vocabulary is chosen from piece counts, deterministically.

    Every character seen gets a piece (most frequent first, if the vocabulary is too small for all);
    the remaining places go to the substrings of words (a word starts with '▁') that cover the most
    text, count x length, ties broken by the piece itself. Scores are log relative counts.
    """
    words: Counter[str] = Counter()
    for sentence in sentences:
        text = " ".join(unicodedata.normalize("NFKC", sentence).split())
        for word in text.split(" "):
            if word:
                words[SPACE + word] += 1
    pieces: Counter[str] = Counter()
    characters: Counter[str] = Counter()
    for word, count in words.items():
        for character in word:
            characters[character] += count
        for start in range(len(word)):
            for end in range(start + 2, min(len(word), start + MAX_PIECE) + 1):
                pieces[word[start:end]] += count
    budget = vocab_size - len(SPECIAL_TOKENS) - 1  # <mask> comes last
    chosen = [c for c, _ in sorted(characters.items(), key=lambda item: (-item[1], item[0]))][:budget]
    longer = sorted(pieces.items(), key=lambda item: (-item[1] * len(item[0]), item[0]))
    chosen += [piece for piece, _ in longer[: max(0, budget - len(chosen))]]
    counts = {**pieces, **characters}
    total = sum(counts[piece] for piece in chosen)
    vocab = [(token, 0.0) for token in SPECIAL_TOKENS] + [(p, math.log(counts[p] / total)) for p in chosen]
    tok = _pipeline(Tokenizer(models.Unigram(vocab, unk_id=SPECIAL_TOKENS.index("<unk>"), byte_fallback=False)))
    tok.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS])
    return _as_xlmr(tok, model_max_length)


def save_tokenizer(tokenizer: XLMRobertaTokenizerFast, directory: str | Path) -> None:
    """Save in the Hugging Face layout (tokenizer.json plus configs) so AutoTokenizer loads it."""
    tokenizer.save_pretrained(str(directory))
