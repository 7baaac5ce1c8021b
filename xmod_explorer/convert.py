"""Convert a native X-MOD checkpoint (all adapters inside) to the adapters library's format.

Layout written: ``OUT/`` holds the shared model and its heads (an XmodAdapterModel with no
language adapter), ``OUT/adapters/<code>/`` one language adapter each, ``OUT/heads/<name>/`` a
classification head on its own (converted classifiers only), and ``OUT/xmod_explorer.json`` the
language list and the verification record. Adapters and heads are written under both file names
the adapters library reads: ``pytorch_adapter.bin`` / ``pytorch_model_head.bin``, which its plain
``model.load_adapter(folder)`` / ``model.load_head(folder)`` look for, and ``adapter.safetensors``
/ ``model_head.safetensors``, which this project reads (``use_safetensors=True``).

The shared model also holds a pooler that X-MOD's checkpoints do not have: XmodAdapterModel always
builds one. It is initialised at random (seeded, so conversions are reproducible), no converted
head uses it, and the record says so. The result is written only after every language gives the
same outputs as the source.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from xmod_explorer.adapter_format import (
    ADAPTERS_DIR,
    CLASSIFICATION_HEAD,
    HEADS_DIR,
    MARKER,
    POOLER,
    adapter_model_from_native,
)
from xmod_explorer.errors import ExplorerError

log = logging.getLogger(__name__)


@dataclass
class ConversionReport:
    """What the converter checked: largest output difference per language against the source."""

    source: str
    output: str
    languages: list[str]
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    tolerance: float = 1e-4

    def to_dict(self) -> dict:
        return asdict(self)


def _probe_inputs(vocab_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two random token rows (with a padded tail) to compare source and converted outputs on."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size - 1, (2, 12), generator=generator)
    ids[:, 0], ids[:, -1] = 0, 2
    ids[1, 9:] = 1
    ids[1, 8] = 2
    mask = (ids != 1).long()
    return ids, mask


@torch.no_grad()
def compare_outputs(native: nn.Module, converted, languages: list[str]) -> dict[str, float]:
    """Max |difference| of last hidden states and head logits (MLM or classifier) per language, native vs converted."""
    from xmod_explorer.backends import NativeBackend

    reference = NativeBackend(native, native.config.languages)
    ids, mask = _probe_inputs(native.config.vocab_size)
    ids, mask = ids.to(reference.device), mask.to(reference.device)
    diffs = {}
    for code in languages:
        rows = [code] * ids.shape[0]
        expected = reference.encode_rows(ids, mask, rows).last
        actual = converted.encode_rows(ids, mask, rows).last
        diff = (expected - actual).abs().max().item()
        if hasattr(native, "lm_head"):
            diff = max(diff, (reference.mlm_logits(expected) - converted.mlm_logits(actual)).abs().max().item())
        if hasattr(native, "classifier"):
            diff = max(
                diff, (reference.classifier_logits(expected) - converted.classifier_logits(actual)).abs().max().item()
            )
        diffs[code] = diff
    return diffs


def record(report: ConversionReport) -> str:
    """The marker file's text: the format, what was checked, and what the pooler is."""
    return json.dumps({"format": "adapters", **report.to_dict(), "pooler": POOLER}, indent=2)


def convert(source: str, output: str | Path, *, tolerance: float = 1e-4, overwrite: bool = False) -> ConversionReport:
    """Convert source (a native X-MOD folder or hub id) into the adapters format at output."""
    from xmod_explorer.loading import load_backend

    output = Path(output)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise ExplorerError(f"{output} exists and is not empty; choose a new folder or pass --overwrite.")
    native_loaded = load_backend(source, backend="transformers", device="cpu", dtype="float32")
    native = native_loaded.backend.model
    languages = list(native.config.languages)
    model = adapter_model_from_native(native, languages)

    staging = output.with_name(output.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    (staging / ADAPTERS_DIR).mkdir(parents=True)
    try:
        for code in languages:
            for safetensors in (True, False):  # the same weights under both names the library reads
                model.save_adapter(
                    str(staging / ADAPTERS_DIR / code), code, with_head=False, use_safetensors=safetensors
                )
        if CLASSIFICATION_HEAD in model.heads:
            (staging / HEADS_DIR).mkdir()
            for safetensors in (True, False):
                model.save_head(str(staging / HEADS_DIR / CLASSIFICATION_HEAD), CLASSIFICATION_HEAD, safetensors)
        for code in languages:
            model.delete_adapter(code)
        model.save_pretrained(str(staging), safe_serialization=True)
        native_loaded.tokenizer.save_pretrained(str(staging))
        report = ConversionReport(source=source, output=str(output), languages=languages, tolerance=tolerance)
        (staging / MARKER).write_text(record(report))
        # Check the files as written, loaded back through the normal adapters path.
        converted = load_backend(str(staging), backend="adapters", device="cpu", dtype="float32")
        converted.backend.ensure_languages(languages)
        report.max_abs_diff = compare_outputs(native, converted.backend, languages)
        bad = {code: diff for code, diff in report.max_abs_diff.items() if not diff <= tolerance}
        if bad:
            raise ExplorerError(
                f"The converted model differs from {source} beyond {tolerance}: {bad}. Nothing was written."
            )
        (staging / MARKER).write_text(record(report))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if output.exists():
        shutil.rmtree(output)
    staging.rename(output)
    return report
