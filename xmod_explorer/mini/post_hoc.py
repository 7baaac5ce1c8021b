"""Add a language to a trained X-MOD after pre-training: one new adapter, every other weight frozen.

This is X-MOD's post-hoc recipe. The embeddings, the shared layers, the LM head and every existing
adapter stay exactly as they are, so the model's behaviour for its original languages cannot change;
``original_tensors.sha256.json`` in the model folder records a hash of every tensor from before the
first addition, and :func:`changed_tensors` checks a weights file against it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open

WEIGHTS = "model.safetensors"
ORIGINAL_HASHES = "original_tensors.sha256.json"


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's raw bytes (its dtype's in-memory layout, row-major)."""
    raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    return hashlib.sha256(raw.numpy().tobytes()).hexdigest()


def tensor_hashes(weights: str | Path) -> dict[str, dict]:
    """Name -> {"dtype", "shape", "sha256"} for every tensor of a safetensors file."""
    hashes = {}
    with safe_open(str(weights), framework="pt") as handle:
        for name in sorted(handle.keys()):
            tensor = handle.get_tensor(name)
            hashes[name] = {
                "dtype": str(tensor.dtype).replace("torch.", ""),
                "shape": list(tensor.shape),
                "sha256": tensor_digest(tensor),
            }
    return hashes


def record_original_tensors(model_dir: str | Path) -> Path:
    """Write model_dir/original_tensors.sha256.json: the hash of every tensor as it is now."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    record = {
        "about": (
            "SHA-256 of the raw bytes of every tensor in model.safetensors before any language was added post "
            "hoc. Adding a language must leave each of these tensors bit-identical."
        ),
        "languages": list(config["languages"]),
        "model_safetensors_sha256": hashlib.sha256((model_dir / WEIGHTS).read_bytes()).hexdigest(),
        "tensors": tensor_hashes(model_dir / WEIGHTS),
    }
    path = model_dir / ORIGINAL_HASHES
    path.write_text(_one_tensor_a_line(record), encoding="utf-8")
    return path


def _one_tensor_a_line(record: dict) -> str:
    """JSON with one line per tensor, so a diff of the file names the tensor that changed."""
    head = {key: value for key, value in record.items() if key != "tensors"}
    lines = [json.dumps(head, indent=1)[:-2] + ",", ' "tensors": {']
    entries = [f"  {json.dumps(name)}: {json.dumps(entry)}" for name, entry in record["tensors"].items()]
    lines.append(",\n".join(entries))
    lines.append(" }\n}\n")
    return "\n".join(lines)


def changed_tensors(weights: str | Path, recorded: dict) -> list[str]:
    """Names of recorded tensors that are missing from the weights file or differ in dtype, shape or bytes."""
    current = tensor_hashes(weights)
    return sorted(name for name, entry in recorded["tensors"].items() if current.get(name) != entry)
