"""Build small randomly initialised X-MOD checkpoints on disk (tests, benchmarks, last-resort fallback).

The checkpoints are saved exactly like a hub model (config.json, model.safetensors, tokenizer
files), so everything that uses them goes through the real loading code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from xmod_explorer.mini.tokenizer import counted_tokenizer

# Sentences written for this project, only to give a throwaway tokenizer some pieces to learn.
SAMPLE_SENTENCES = [
    "The explorer shows what each language adapter changes.",
    "Choose two languages and compare their predictions.",
    "Der Adapter jeder Sprache sitzt in jeder Schicht.",
    "Wähle zwei Sprachen und vergleiche die Vorhersagen.",
    "Chaque langue a son propre adaptateur dans le modèle.",
    "Le modèle partage tous les autres poids entre les langues.",
    "Каждый язык выбирает свой адаптер в каждом слое.",
    "Модель делит остальные веса между всеми языками.",
    "各言語は各層で自分のアダプターを選びます。",
    "每种语言在每一层都有自己的适配器。",
    "हर भाषा का हर परत में अपना एडाप्टर है।",
    "Jokaisella kielellä on oma adapterinsa jokaisessa kerroksessa.",
]

STYLES = {
    # facebook/xmod-base: post-norm, the adapter reuses the output LayerNorm.
    "base": dict(pre_norm=False, adapter_layer_norm=False, adapter_reuse_layer_norm=True, ln_before_adapter=True),
    # facebook/xmod-large-prenorm: pre-norm, own adapter LayerNorm, LayerNorm after the residual.
    "prenorm": dict(pre_norm=True, adapter_layer_norm=True, adapter_reuse_layer_norm=False, ln_before_adapter=False),
}


@dataclass
class TinySpec:
    """Shape of a random X-MOD checkpoint."""

    languages: list[str] = field(default_factory=lambda: ["ru_RU", "en_XX", "ja_XX", "de_DE"])
    style: str = "base"
    hidden_size: int = 32
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 64
    adapter_reduction_factor: int = 2
    vocab_size: int | None = None  # None: the tokenizer's size
    tokenizer_vocab: int = 160
    max_position_embeddings: int = 514
    adapter_scale: float = 0.3  # extra noise on adapters so that languages really differ
    initializer_range: float = 0.2  # larger than a real model's 0.02: peaked, well-separated predictions
    seed: int = 0
    head: str = "masked_lm"  # or "classification"
    labels: list[str] = field(default_factory=lambda: ["negative", "positive"])


def xmod_config(
    *,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int,
    languages: list[str],
    style: str = "base",
    adapter_reduction_factor: int = 2,
    max_position_embeddings: int = 514,
    **extra,
):
    """An XmodConfig of the given shape in one of the published styles (STYLES), with no default language.

    extra: any other XmodConfig field (dropout, initializer_range, type_vocab_size, labels...)."""
    from transformers import XmodConfig

    return XmodConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        layer_norm_eps=1e-5,
        adapter_reduction_factor=adapter_reduction_factor,
        languages=list(languages),
        default_language=None,
        **STYLES[style],
        **extra,
    )


def build_config(spec: TinySpec, vocab_size: int):
    """XmodConfig for spec."""
    extra = {}
    if spec.head == "classification":
        extra = {
            "id2label": dict(enumerate(spec.labels)),
            "label2id": {label: i for i, label in enumerate(spec.labels)},
            "architectures": ["XmodForSequenceClassification"],
        }
    return xmod_config(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        num_layers=spec.num_layers,
        num_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size,
        languages=spec.languages,
        style=spec.style,
        adapter_reduction_factor=spec.adapter_reduction_factor,
        max_position_embeddings=spec.max_position_embeddings,
        initializer_range=spec.initializer_range,
        **extra,
    )


def build_random_checkpoint(folder: str | Path, spec: TinySpec | None = None, tokenizer=None) -> Path:
    """Create a random X-MOD of the given shape and save it with a tokenizer into folder."""
    from transformers import XmodForMaskedLM, XmodForSequenceClassification

    spec = spec or TinySpec()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer is None:
        tokenizer = counted_tokenizer(SAMPLE_SENTENCES * 3, spec.tokenizer_vocab)
    vocab_size = spec.vocab_size or len(tokenizer)
    torch.manual_seed(spec.seed)
    config = build_config(spec, vocab_size)
    cls = XmodForSequenceClassification if spec.head == "classification" else XmodForMaskedLM
    model = cls(config).eval()
    if spec.adapter_scale:
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if ".adapter_modules." in name:
                    parameter.add_(torch.randn_like(parameter) * spec.adapter_scale / parameter.shape[-1] ** 0.5)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    return folder
