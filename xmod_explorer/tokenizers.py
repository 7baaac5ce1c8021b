"""Which tokenizer a checkpoint runs with, and where it came from.

A checkpoint's own tokenizer always wins (SwissBERT has its own vocabulary). The facebook X-MOD
checkpoints ship none: their model card says X-MOD reuses XLM-R's, so that one is used, from
the Hugging Face cache under its canonical id or its old alias, else downloaded when allowed.
Either way it must fit the model: a vocabulary the embedding matrix can index and a <mask>
inside it (XLM-R's must match the vocabulary size exactly, or it is another vocabulary).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from xmod_explorer import hub
from xmod_explorer.checks import check_tokenizer_files
from xmod_explorer.errors import ExplorerError

log = logging.getLogger(__name__)

XLMR = "FacebookAI/xlm-roberta-base"
XLMR_ALIASES = (XLMR, "xlm-roberta-base")  # the old id still redirects on the hub and names old caches
XLMR_FILES = ["tokenizer.json", "sentencepiece.bpe.model", "tokenizer_config.json", "config.json"]


@dataclass(frozen=True)
class TokenizerChoice:
    """A loaded tokenizer, its name, and a sentence saying where it came from."""

    tokenizer: object
    name: str
    source: str
    folder: Path


def has_tokenizer(folder: Path) -> bool:
    """Whether folder holds a tokenizer of its own (a tokenizer.json or a sentencepiece model)."""
    return (folder / "tokenizer.json").is_file() or (folder / "sentencepiece.bpe.model").is_file()


def load_tokenizer(folder: Path, reference: str):
    """The XLM-R-style tokenizer in folder (tokenizer.json, or sentencepiece.bpe.model converted); checked first."""
    from transformers import XLMRobertaTokenizerFast

    check_tokenizer_files(folder, reference)
    try:
        tokenizer = XLMRobertaTokenizerFast.from_pretrained(str(folder))
    except Exception as exc:
        raise ExplorerError(
            f"{reference}: the tokenizer in {folder} could not be read ({type(exc).__name__}: {str(exc)[:200]}). "
            "A folder with only sentencepiece.bpe.model needs the sentencepiece and protobuf packages "
            "(pip install -r requirements.txt); otherwise the files may be incomplete: download them again."
        ) from exc
    return tokenizer


def check_fit(tokenizer, vocab_size: int, reference: str, tokenizer_name: str, *, exact: bool) -> None:
    """Refuse a tokenizer whose ids the model cannot embed, or that has no usable <mask>."""
    size = len(tokenizer)
    mask = tokenizer.mask_token_id
    if mask is None:
        raise ExplorerError(f"{reference}: the tokenizer ({tokenizer_name}) has no mask token; X-MOD uses <mask>.")
    if (exact and size != vocab_size) or size > vocab_size:
        raise ExplorerError(
            f"{reference}: the tokenizer ({tokenizer_name}) has {size:,} entries but the model's vocabulary has "
            f"{vocab_size:,} (config.json vocab_size), so they do not belong together. Put the tokenizer the model "
            "was trained with beside its weights."
        )
    if not 0 <= mask < vocab_size:
        raise ExplorerError(
            f"{reference}: the tokenizer's <mask> has id {mask}, outside the model's vocabulary of {vocab_size:,}."
        )


def _xlmr_from_cache() -> tuple[hub.LocalCopy, str] | None:
    for alias in XLMR_ALIASES:
        try:
            return hub.fetch_cached(alias, kind="tokenizer"), alias
        except ExplorerError:
            continue
    return None


def missing_tokenizer_message(reference: str, why: str) -> str:
    return (
        f"{reference} ships no tokenizer; X-MOD reuses XLM-R's ({XLMR}), which is not in the Hugging Face cache "
        f"and {why}. Download it once with `{hub.download_command(XLMR, XLMR_FILES)}` (needs a connection), or "
        "put a tokenizer beside the weights."
    )


def resolve_tokenizer(
    folder: Path, reference: str, vocab_size: int, *, progress: hub.ProgressCallback | None = None
) -> TokenizerChoice:
    """The checkpoint's own tokenizer, else XLM-R's from the cache, else XLM-R's downloaded; checked to fit."""
    if has_tokenizer(folder):
        tokenizer = load_tokenizer(folder, reference)
        check_fit(tokenizer, vocab_size, reference, "its own", exact=False)
        return TokenizerChoice(tokenizer, "the checkpoint's own", f"the checkpoint's own tokenizer ({folder})", folder)
    found = _xlmr_from_cache()
    if found is not None:
        copy, alias = found
        source = f"XLM-R's tokenizer ({alias}) from the Hugging Face cache"
    else:
        if hub.hub_offline():
            raise ExplorerError(missing_tokenizer_message(reference, "HF_HUB_OFFLINE is set"))
        if not hub.hub_reachable():
            raise ExplorerError(missing_tokenizer_message(reference, f"the hub ({hub.endpoint()}) cannot be reached"))
        alias = XLMR
        copy = hub.fetch(XLMR, kind="tokenizer", progress=progress)
        source = f"XLM-R's tokenizer ({XLMR}) downloaded from the hub"
    tokenizer = load_tokenizer(copy.path, alias)
    check_fit(tokenizer, vocab_size, reference, alias, exact=True)
    log.info("%s: tokenizer: %s", reference, source)
    return TokenizerChoice(tokenizer, alias, source, copy.path)
