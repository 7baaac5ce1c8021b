"""Pick the committed example sentences from the held-out split, with one word masked.

``mini_heldout.tsv``: a few sentences per language whose masked word the matching adapter gets
right (chosen only by that and a fixed hash order, not by how other adapters do).
``mini_examples.tsv``: for the app, one sentence per language (shown with its own adapter and
one other), plus a few where two related languages' adapters fill the mask differently.
"""

from __future__ import annotations

import csv
import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, XmodForMaskedLM

from xmod_explorer.mini.corpus import UNSPACED, long_enough, read_split

MASK = "<mask>"
MARKUP = set("<>{}[]=|\\⌘⌥⇧←→↑↓$%#@*_~^")
MAX_SENTENCE_TOKENS = 40
# Names are the same in every language, so filling them in says nothing about an adapter.
PRODUCT_NAMES = {"LibreOffice", "OpenOffice", "Calc", "Writer", "Impress", "Draw", "Base", "Math", "Basic", "Microsoft"}
# Pairs of related languages whose adapters are most likely to fill a mask differently.
CONTRAST_PAIRS = [("es_XX", "it_IT"), ("fr_XX", "es_XX"), ("de_DE", "en_XX"), ("ja_XX", "zh_CN"), ("nl_XX", "de_DE")]


@dataclass
class MaskedExample:
    """A sentence with exactly one <mask> and the word it replaced."""

    language: str
    text: str
    answer: str


def answer_token(tokenizer: PreTrainedTokenizerBase, example: MaskedExample) -> int:
    """Vocabulary id of the answer: "▁word" where the mask starts a word, else the bare piece."""
    before = example.text.split(MASK, 1)[0]
    piece = "▁" + example.answer if before == "" or before.endswith(" ") else example.answer
    return tokenizer.convert_tokens_to_ids(piece)


def mask_candidates(tokenizer: PreTrainedTokenizerBase, text: str, language: str) -> list[MaskedExample]:
    """Every whole word (or, in ja/zh, every multi-character piece) of text as a one-mask example."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    pieces = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    if len(pieces) > MAX_SENTENCE_TOKENS or not long_enough(text, language):
        return []
    examples = []
    for i, (piece, (_, end)) in enumerate(zip(pieces, encoded["offset_mapping"])):
        word = piece.lstrip("▁")
        if not is_word(word) or word in PRODUCT_NAMES:
            continue
        if language in UNSPACED:
            if len(word) < 2:
                continue
        else:
            following = pieces[i + 1] if i + 1 < len(pieces) else "▁"
            # A whole word: starts with ▁ and is not continued by the next piece.
            if not piece.startswith("▁") or len(word) < 4 or (is_word(following[:1]) and not following.startswith("▁")):
                continue
        start = end - len(word)
        if text[start:end] != word:
            continue
        example = MaskedExample(language, text[:start] + MASK + text[end:], word)
        expected = [*encoded["input_ids"][:i], tokenizer.mask_token_id, *encoded["input_ids"][i + 1 :]]
        if tokenizer(example.text, add_special_tokens=False)["input_ids"] == expected:
            examples.append(example)
    return examples


def is_word(text: str) -> bool:
    """Letters, with any combining marks after them (Devanagari vowel signs are marks, not letters)."""
    return (
        bool(text) and all(unicodedata.category(ch)[0] in "LM" for ch in text) and unicodedata.category(text[0]) != "Mn"
    )


def readable(text: str, language: str) -> bool:
    """Prose a reader can follow: mostly letters, no markup or key symbols, a sentence's length."""
    if any(ch in MARKUP for ch in text):
        return False
    # Letters with their combining marks (Devanagari vowel signs are marks, not letters) and spaces.
    letters = sum(unicodedata.category(ch)[0] in "LMZ" for ch in text)
    if letters < 0.85 * len(text):
        return False
    return language in UNSPACED or 6 <= len(text.split()) <= 30


@torch.no_grad()
def fill_probabilities(
    model: XmodForMaskedLM, tokenizer: PreTrainedTokenizerBase, examples: Sequence[MaskedExample], adapter: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each example under one adapter: (probability of its answer, top-1 token id) at the mask."""
    batch = tokenizer([e.text for e in examples], return_tensors="pt", padding=True)
    lang_ids = torch.full((len(examples),), model.config.languages.index(adapter))
    logits = model(**batch, lang_ids=lang_ids).logits
    rows, cols = (batch["input_ids"] == tokenizer.mask_token_id).nonzero(as_tuple=True)
    probs = logits[rows, cols].softmax(-1)
    answers = torch.tensor([answer_token(tokenizer, e) for e in examples])
    return probs[torch.arange(len(examples)), answers], probs.argmax(-1)


def _hash_order(example: MaskedExample) -> str:
    """A fixed pseudo-random order that does not depend on the model."""
    return hashlib.sha1(f"{example.language}\t{example.text}".encode()).hexdigest()


def correct_examples(
    model: XmodForMaskedLM, tokenizer: PreTrainedTokenizerBase, language: str, texts: Sequence[str], wanted: int
) -> list[MaskedExample]:
    """Up to ``wanted`` examples (one per sentence) that the language's own adapter fills correctly."""
    candidates: list[MaskedExample] = []
    for text in (t for t in texts if readable(t, language)):
        options = sorted(mask_candidates(tokenizer, text, language), key=_hash_order)
        candidates.extend(options[:3])
    candidates.sort(key=_hash_order)
    chosen: list[MaskedExample] = []
    used: set[str] = set()
    for start in range(0, len(candidates), 64):
        part = candidates[start : start + 64]
        _, top = fill_probabilities(model, tokenizer, part, language)
        for example, predicted in zip(part, top.tolist()):
            sentence = example.text.replace(MASK, example.answer)
            if predicted == answer_token(tokenizer, example) and sentence not in used:
                chosen.append(example)
                used.add(sentence)
        if len(chosen) >= wanted:
            break
    return chosen[:wanted]


def contrast_examples(
    model: XmodForMaskedLM, tokenizer: PreTrainedTokenizerBase, corpus: str | Path, languages: Sequence[str]
) -> list[tuple[MaskedExample, str]]:
    """For each related pair: an example its own adapter fills correctly and the other adapter differently."""
    found = []
    for language, other in CONTRAST_PAIRS:
        if language not in languages or other not in languages:
            continue
        candidates = correct_examples(model, tokenizer, language, read_split(corpus, language, "heldout"), 40)
        if not candidates:
            continue
        _, own = fill_probabilities(model, tokenizer, candidates, language)
        _, theirs = fill_probabilities(model, tokenizer, candidates, other)
        for example, mine, alien in zip(candidates, own.tolist(), theirs.tolist()):
            word = tokenizer.convert_ids_to_tokens(alien).lstrip("▁")
            # The other adapter's choice must be a word of its own to make a point on a projector.
            if mine != alien and is_word(word) and (len(word) > 1 or language in UNSPACED):
                note = (
                    f"{language} adapter: {tokenizer.convert_ids_to_tokens(mine).lstrip('▁')}; {other} adapter: {word}"
                )
                found.append((example, note))
                break
    return found


def write_examples(
    model_dir: str | Path, corpus: str | Path, assets: str | Path = "assets", per_language: int = 4
) -> None:
    """Write assets/mini_heldout.tsv and assets/mini_examples.tsv from the held-out split."""
    model = XmodForMaskedLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    languages = list(model.config.languages)
    heldout_rows, example_rows = [], []
    for language in languages:
        texts = read_split(corpus, language, "heldout")
        chosen = correct_examples(model, tokenizer, language, texts, per_language + 1)
        heldout_rows.extend([e.language, e.text, e.answer] for e in chosen[:per_language])
        if chosen:
            # A language with few usable held-out sentences (Hindi) reuses its last one here.
            extra = chosen[min(per_language, len(chosen) - 1)]
            # Beside the text's own adapter, one other: English's, or German's for English text.
            other = "de_DE" if language == "en_XX" else "en_XX"
            note = f"{language} text; {language} adapter fills it correctly"
            example_rows.append([f"{language},{other}", extra.text, extra.answer, note])
    for example, note in contrast_examples(model, tokenizer, corpus, languages):
        other = next(b for a, b in CONTRAST_PAIRS if a == example.language)
        example_rows.append([f"{example.language},{other}", example.text, example.answer, note])
    assets = Path(assets)
    _write_tsv(assets / "mini_heldout.tsv", ["language", "text", "answer"], heldout_rows)
    _write_tsv(assets / "mini_examples.tsv", ["languages", "text", "answer", "note"], example_rows)
    print(f"{len(heldout_rows)} held-out rows, {len(example_rows)} example rows")


def read_examples(path: str | Path) -> list[MaskedExample]:
    """Rows of a mini_heldout.tsv-style file as MaskedExample objects."""
    with Path(path).open(encoding="utf-8", newline="") as handle:
        rows = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [MaskedExample(row["language"], row["text"], row["answer"]) for row in rows]


def _write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """Tab-separated, no quoting (the texts contain no tabs or newlines)."""
    lines = ["\t".join(header)] + ["\t".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
