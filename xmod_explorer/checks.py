"""What a checkpoint's JSON files may ask for, checked before anything is downloaded or built.

transformers reads ``config.json`` as instructions: ``auto_map`` names code to import, keys such as
``_attn_implementation_internal`` can make transformers 4.57 fetch and run a kernel from the hub
(CVE-2026-4372), and the sizes decide how much memory the model takes before a single weight is
read. So the project reads the JSON itself, here, refuses anything that is not a plain X-MOD
config, and hands transformers only a config built from the checked values. The loading layer
calls ``read_config``/``check_config`` for every checkpoint; the hub layer calls it on a freshly
downloaded ``config.json`` before it fetches any weights.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from xmod_explorer.errors import ExplorerError
from xmod_explorer.machine import available_memory_bytes

# Generous upper bounds: xmod-large-prenorm has 24 layers of 1024 with 250,002 words and 514 positions.
BOUNDS: dict[str, int] = {
    "num_hidden_layers": 128,
    "hidden_size": 16_384,
    "num_attention_heads": 256,
    "intermediate_size": 131_072,
    "vocab_size": 2_000_000,
    "max_position_embeddings": 65_536,
    "type_vocab_size": 64,
}
# Sizes every X-MOD config.json states; the others are checked where present.
REQUIRED_SIZES = set(BOUNDS) - {"type_vocab_size"}
MAX_LANGUAGES = 1_024
MAX_LABELS = 100_000
ARCHITECTURES = {
    "XmodModel",
    "XmodForMaskedLM",
    "XmodForSequenceClassification",
    "XmodForTokenClassification",
    "XmodForQuestionAnswering",
    "XmodForMultipleChoice",
    "XmodForCausalLM",
    "XmodAdapterModel",
}
# Keys that ask transformers to import or fetch code, or to change how it builds the model.
CODE_KEYS = {
    "auto_map": "names Python code to import (remote code)",
    "trust_remote_code": "asks for remote code",
    "custom_pipelines": "names Python code to import (remote code)",
    "quantization_config": "asks for a quantizer, which X-MOD checkpoints never use",
}
BYTES_PER_ELEMENT = {"float32": 4, "float16": 2, "bfloat16": 2}


def _refuse(reference: str, file: str, key: str, value: object, why: str, fix: str) -> ExplorerError:
    shown = json.dumps(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return ExplorerError(f"{reference}: {file} has {key} = {shown}, which {why}; it was refused. {fix}")


def check_no_code(data: Mapping, reference: str, file: str) -> None:
    """Refuse any JSON file handed to transformers that asks for code or for another attention implementation."""
    for key, value in data.items():
        if key in CODE_KEYS:
            raise _refuse(
                reference, file, key, value, CODE_KEYS[key], "X-MOD Explorer never runs code from a checkpoint."
            )
        if key.startswith("_attn_implementation"):
            raise _refuse(
                reference,
                file,
                key,
                value,
                "can make transformers fetch and run code (CVE-2026-4372)",
                "Remove the key from the file, or use a checkpoint saved without it.",
            )
        if key == "attn_implementation" and value not in (None, "eager"):
            raise _refuse(
                reference,
                file,
                key,
                value,
                "is not the eager attention X-MOD supports",
                'Remove the key or set it to "eager".',
            )


def _positive_int(config: Mapping, key: str, reference: str, bound: int) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _refuse(
            reference,
            "config.json",
            key,
            value,
            "is not a positive whole number",
            "The file is damaged or not an X-MOD config.",
        )
    if value > bound:
        raise _refuse(
            reference,
            "config.json",
            key,
            value,
            f"is beyond the largest this app accepts ({bound:,})",
            "X-MOD checkpoints are far smaller; this config is damaged or crafted.",
        )
    return value


def bottleneck_size(config: Mapping) -> int:
    """Width of each language adapter's bottleneck: hidden_size / adapter_reduction_factor, as transformers does."""
    return int(config["hidden_size"] // config.get("adapter_reduction_factor", 2))


def estimate_parameters(config: Mapping, languages: Sequence[str] | None = None) -> int:
    """Parameters of the model config describes, with the adapters of languages only (default: all).

    Counts exactly what transformers builds for XmodForMaskedLM (the output layer shares the word
    embeddings); a sequence classifier swaps the masked-LM head for its own. Tests compare it with
    real models of both X-MOD layouts.
    """
    h = int(config["hidden_size"])
    inner = int(config["intermediate_size"])
    vocab = int(config["vocab_size"])
    layers = int(config["num_hidden_layers"])
    count = len(config["languages"]) if languages is None else len(languages)
    b = bottleneck_size(config)
    linear = lambda n_in, n_out: n_in * n_out + n_out  # noqa: E731 - weight and bias
    norm = 2 * h
    embeddings = (vocab + int(config["max_position_embeddings"]) + int(config.get("type_vocab_size", 2))) * h + norm
    shared_layer = 4 * linear(h, h) + norm + linear(h, inner) + linear(inner, h) + norm
    if config.get("adapter_layer_norm"):
        shared_layer += norm
    adapter = linear(h, b) + linear(b, h)
    encoder = layers * (shared_layer + count * adapter) + (norm if config.get("pre_norm") else 0)
    if "XmodForSequenceClassification" in (config.get("architectures") or []):
        labels = len(config.get("id2label") or {}) or int(config.get("num_labels", 2))
        head = linear(h, h) + linear(h, labels)
    else:
        head = linear(h, h) + norm + vocab
    return embeddings + encoder + head


def check_config(
    config: Mapping,
    reference: str,
    *,
    languages: Sequence[str] | None = None,
    dtype: str = "float32",
    memory: int | None = None,
) -> None:
    """Refuse, naming the key and value, anything in config.json that is not a plain X-MOD config.

    languages: the adapters that will be loaded (default: all); dtype: the precision they will be
    held in; memory: bytes available (default: measured now). Allocates nothing.
    """
    check_no_code(config, reference, "config.json")
    if config.get("model_type") != "xmod":
        kind = config.get("model_type")
        raise ExplorerError(
            f"{reference} is a {kind or 'non-X-MOD'} model, not X-MOD (config.json model_type must be 'xmod'). "
            "Choose an X-MOD checkpoint such as facebook/xmod-base."
        )
    codes = config.get("languages")
    if not codes:
        raise ExplorerError(
            f"{reference}: config.json lists no languages; an X-MOD checkpoint names its adapters there."
        )
    if not isinstance(codes, list) or not all(isinstance(code, str) and 0 < len(code) <= 32 for code in codes):
        raise _refuse(
            reference, "config.json", "languages", codes, "is not a list of language codes", "The file is damaged."
        )
    if len(codes) > MAX_LANGUAGES:
        raise _refuse(
            reference,
            "config.json",
            "languages",
            f"{len(codes):,} codes",
            f"is more than the {MAX_LANGUAGES:,} adapters this app accepts",
            "X-MOD checkpoints have at most 81; this config is damaged or crafted.",
        )
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list) or any(name not in ARCHITECTURES for name in architectures):
        raise _refuse(
            reference,
            "config.json",
            "architectures",
            architectures,
            "names no X-MOD model class",
            f"Use a checkpoint of one of {', '.join(sorted(ARCHITECTURES))}.",
        )
    sizes = {
        key: _positive_int(config, key, reference, bound)
        for key, bound in BOUNDS.items()
        if key in REQUIRED_SIZES or key in config
    }
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise _refuse(
            reference,
            "config.json",
            "position_embedding_type",
            config["position_embedding_type"],
            "is not X-MOD's absolute position embedding",
            "Use an X-MOD checkpoint.",
        )
    if sizes["hidden_size"] % sizes["num_attention_heads"]:
        raise _refuse(
            reference,
            "config.json",
            "num_attention_heads",
            sizes["num_attention_heads"],
            f"does not divide hidden_size {sizes['hidden_size']}",
            "The file is damaged or not an X-MOD config.",
        )
    factor = config.get("adapter_reduction_factor", 2)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0.25 <= factor <= sizes["hidden_size"]:
        raise _refuse(
            reference,
            "config.json",
            "adapter_reduction_factor",
            factor,
            f"is outside 0.25 to hidden_size ({sizes['hidden_size']})",
            "X-MOD uses 2 (base) or 4 (large).",
        )
    labels = config.get("id2label") or {}
    if isinstance(labels, Mapping) and len(labels) > MAX_LABELS:
        raise _refuse(
            reference,
            "config.json",
            "id2label",
            f"{len(labels):,} labels",
            f"is more than the {MAX_LABELS:,} labels this app accepts",
            "The file is damaged or crafted.",
        )
    memory = available_memory_bytes() if memory is None else memory
    if memory is not None:
        parameters = estimate_parameters(config, languages)
        needed = parameters * BYTES_PER_ELEMENT.get(dtype, 4)
        if needed > memory:
            raise ExplorerError(
                f"{reference}: its weights would need about {needed / 2**30:.1f} GiB ({parameters:,} parameters in "
                f"{dtype}), but only {memory / 2**30:.1f} GiB of memory is available, so it was not loaded. Load "
                "fewer language adapters (--languages en_XX,de_DE), or use a machine with more memory."
            )


def read_json(path: Path, reference: str) -> dict:
    """A JSON object from path, or an ExplorerError saying the download may be incomplete."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExplorerError(
            f"{reference}: {path.name} is not valid JSON ({exc}). The download may be incomplete: download it again."
        ) from exc
    if not isinstance(data, dict):
        raise ExplorerError(f"{reference}: {path.name} is not a JSON object. The download may be incomplete.")
    return data


def read_config(folder: Path, reference: str, **limits) -> dict:
    """config.json of an X-MOD checkpoint, checked (see check_config for limits), or an error saying why not."""
    path = Path(folder) / "config.json"
    if not path.exists():
        raise ExplorerError(
            f"{reference} has no config.json, so it is not a model folder. Point to an X-MOD checkpoint."
        )
    config = read_json(path, reference)
    check_config(config, reference, **limits)
    return config


def check_tokenizer_files(folder: Path, reference: str) -> None:
    """Refuse tokenizer JSON files (read by transformers) that ask for code."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = Path(folder) / name
        if path.is_file():
            check_no_code(read_json(path, reference), reference, name)
