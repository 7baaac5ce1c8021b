"""Export a training run as a plain Hugging Face folder: safetensors weights plus tokenizer.

With dtype "auto" the weights are stored in float16 when that costs at most half a point of
held-out masked accuracy (matching adapters) against float32; the check is saved in export.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, XmodForMaskedLM

from xmod_explorer.mini.evaluate import adapter_matrix, heldout_texts
from xmod_explorer.mini.train import TRAINING_RECORD, training_record

FLOAT16_TOLERANCE = 0.5  # accuracy points
CHECK_PER_LANGUAGE = 300


def _matching_accuracy(model: XmodForMaskedLM, tokenizer, texts: dict[str, list[str]]) -> float:
    """Mean over languages of masked accuracy under the language's own adapter."""
    matrix = adapter_matrix(model, tokenizer, texts, diagonal_only=True)
    return float(np.mean([row[matrix.adapters.index(lang)] for lang, row in zip(matrix.languages, matrix.accuracy)]))


def float16_check(model: XmodForMaskedLM, tokenizer, corpus: str | Path) -> dict:
    """Matching-adapter accuracy in float32 and with the weights rounded to float16.

    from_pretrained loads float16 files as float32 unless told otherwise, so the rounding of the
    weights is what a user of the stored model gets (float16 arithmetic on CPU is also very slow).
    """
    texts = heldout_texts(corpus, model.config.languages, CHECK_PER_LANGUAGE)
    float32 = _matching_accuracy(model, tokenizer, texts)
    rounded = XmodForMaskedLM(model.config)
    rounded.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    float16_weights = _matching_accuracy(rounded, tokenizer, texts)
    return {
        "heldout_per_language": CHECK_PER_LANGUAGE,
        "accuracy_float32": round(float32, 2),
        "accuracy_float16_weights": round(float16_weights, 2),
    }


def export_model(run: str | Path, target: str | Path, *, corpus: str | Path | None = None, dtype: str = "auto") -> dict:
    """Save run/checkpoint + run/tokenizer to target (safetensors); returns what was decided."""
    run, target = Path(run), Path(target)
    model = XmodForMaskedLM.from_pretrained(str(run / "checkpoint"), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(run / "tokenizer"))
    tokenizer.model_max_length = 512
    info: dict = {"dtype": dtype}
    if dtype == "auto":
        if corpus is None:
            raise ValueError("dtype='auto' needs the corpus for the float16 accuracy check")
        info.update(float16_check(model, tokenizer, corpus))
        loss = info["accuracy_float32"] - info["accuracy_float16_weights"]
        info["dtype"] = "float16" if loss <= FLOAT16_TOLERANCE else "float32"
    model.config.default_language = None
    target.mkdir(parents=True, exist_ok=True)
    model.to(getattr(torch, info["dtype"])).save_pretrained(str(target), safe_serialization=True)
    tokenizer.save_pretrained(str(target))
    # The card needs the run's settings and final log; the run folder is not shipped, so keep them here.
    record = training_record(run)
    (target / TRAINING_RECORD).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    info["files_bytes"] = {p.name: p.stat().st_size for p in sorted(target.iterdir()) if p.is_file()}
    (target / "export.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(info, indent=2))
    return info
