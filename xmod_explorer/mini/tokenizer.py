"""Train a sentencepiece-style Unigram tokenizer that loads as an XLM-R tokenizer.

Ids match XLM-R's specials: <s>=0, <pad>=1, </s>=2, <unk>=3, and <mask> is the last id,
so everything downstream treats it exactly like xmod-base's tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import XLMRobertaTokenizerFast

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]


def train_tokenizer(
    sentences: Iterable[str],
    vocab_size: int,
    *,
    model_max_length: int = 512,
    show_progress: bool = False,
) -> XLMRobertaTokenizerFast:
    """Train a Unigram tokenizer on sentences; returns it wrapped as XLMRobertaTokenizerFast."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size - 1,  # <mask> is added after training as the last id
        special_tokens=SPECIAL_TOKENS,
        unk_token="<unk>",
        show_progress=show_progress,
        max_piece_length=16,
    )
    tok.train_from_iterator(sentences, trainer=trainer)
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


def save_tokenizer(tokenizer: XLMRobertaTokenizerFast, directory: str | Path) -> None:
    """Save in the Hugging Face layout (tokenizer.json plus configs) so AutoTokenizer loads it."""
    tokenizer.save_pretrained(str(directory))
