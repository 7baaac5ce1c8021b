"""The adapters library's layout of an X-MOD checkpoint: adapter config, weight names, head mapping.

X-MOD's native checkpoints keep every language adapter inside the model
(``...output.adapter_modules.<code>.dense1|dense2``); the adapters library keeps one named
bottleneck adapter per language (``...output.adapters.<code>.adapter_down.0|adapter_up``) and its
heads under ``heads.<name>``. The converter and the loader both use this one mapping.
"""

from __future__ import annotations

import torch
from torch import nn

from xmod_explorer.errors import ExplorerError

MARKER = "xmod_explorer.json"
ADAPTERS_DIR = "adapters"
HEADS_DIR = "heads"
MLM_HEAD = "default"
POOLER_SEED = 0
POOLER = (
    "random (seed 0) and unused: XmodAdapterModel always has a pooler, X-MOD checkpoints have none, and no "
    "converted head reads it (use_pooler=False)"
)


def language_adapter_config(config):
    """The sequential bottleneck config that reproduces X-MOD's own adapter placement."""
    from adapters import SeqBnConfig

    return SeqBnConfig(
        reduction_factor=config.adapter_reduction_factor,
        original_ln_before=bool(config.adapter_layer_norm or config.adapter_reuse_layer_norm),
        original_ln_after=False,
        residual_before_ln=False if config.ln_before_adapter else "post_add",
        non_linearity=config.hidden_act,
    )


def adapter_state_from_native(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename native keys to XmodAdapterModel keys (encoder part; heads are mapped separately)."""
    renamed = {}
    for key, tensor in state.items():
        if key.startswith("lm_head.") or key.startswith("classifier."):
            continue
        if ".adapter_modules." in key:
            prefix, rest = key.split(".adapter_modules.", 1)
            code, sub = rest.split(".", 1)
            sub = sub.replace("dense1.", "adapter_down.0.").replace("dense2.", "adapter_up.")
            key = f"{prefix}.adapters.{code}.{sub}"
        renamed[key] = tensor
    return renamed


CLASSIFICATION_HEAD = "classification"
# XmodClassificationHead (dropout, dense, tanh, dropout, out_proj) is the adapters library's 2-layer head.
CLASSIFIER_KEYS = {
    "classifier.dense.weight": "1.weight",
    "classifier.dense.bias": "1.bias",
    "classifier.out_proj.weight": "4.weight",
    "classifier.out_proj.bias": "4.bias",
}

MLM_HEAD_KEYS = {
    "lm_head.dense.weight": "0.weight",
    "lm_head.dense.bias": "0.bias",
    "lm_head.layer_norm.weight": "2.weight",
    "lm_head.layer_norm.bias": "2.bias",
    "lm_head.bias": "3.bias",
}


def adapter_model_from_native(native: nn.Module, languages: list[str]) -> nn.Module:
    """Build an XmodAdapterModel in memory holding native's weights, for the given languages."""
    from adapters import XmodAdapterModel

    config = native.config
    with torch.random.fork_rng(devices=[]):  # only the pooler keeps its initial values: seed it, leave the caller's RNG
        torch.manual_seed(POOLER_SEED)
        model = XmodAdapterModel(config)
    adapter_config = language_adapter_config(config)
    for code in languages:
        model.add_adapter(code, config=adapter_config)
    state = adapter_state_from_native(native.state_dict())
    state = {
        key: value
        for key, value in state.items()
        if ".adapters." not in key or key.split(".adapters.")[1].split(".")[0] in languages
    }
    if hasattr(native, "lm_head"):
        model.add_masked_lm_head(MLM_HEAD)
        native_state = native.state_dict()
        for native_key, head_key in MLM_HEAD_KEYS.items():
            state[f"heads.{MLM_HEAD}.{head_key}"] = native_state[native_key]
    if hasattr(native, "classifier"):
        model.add_classification_head(
            CLASSIFICATION_HEAD,
            num_labels=config.num_labels,
            layers=2,
            activation_function="tanh",
            id2label=config.id2label,
        )
        native_state = native.state_dict()
        for native_key, head_key in CLASSIFIER_KEYS.items():
            state[f"heads.{CLASSIFICATION_HEAD}.{head_key}"] = native_state[native_key]
    missing, unexpected = model.load_state_dict(state, strict=False)
    # The pooler and prompt-tuning buffers are unused by masked-LM; anything else missing is a bug.
    tied = f"heads.{MLM_HEAD}.3.weight"  # the decoder shares the word embeddings
    missing = [k for k in missing if "pooler" not in k and "prompt_tuning" not in k and k != tied]
    if missing or unexpected:
        raise ExplorerError(f"Conversion left weights unmapped: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    return model.to(dtype=next(native.parameters()).dtype).eval()
