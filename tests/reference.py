"""Plain transformers, the documented way, as the reference every engine number is compared with."""

from __future__ import annotations

import torch
from transformers import AutoTokenizer, XmodForMaskedLM


def reference_predictions(folder, text: str, top_k: int, tokenizer_folder=None) -> dict:
    """The documented way: set_default_language, full-vocabulary forward, one language at a time.

    tokenizer_folder: where the tokenizer is, for checkpoints that ship none (default: folder)."""
    model = XmodForMaskedLM.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder or folder))
    encoded = tokenizer(text, return_tensors="pt")
    positions = (encoded.input_ids[0] == tokenizer.mask_token_id).nonzero().flatten().tolist()
    result = {}
    for code in model.config.languages:
        model.set_default_language(code)
        with torch.no_grad():
            probabilities = model(**encoded).logits[0].softmax(-1)
        result[code] = [probabilities[p].topk(top_k) for p in positions]
    return result


def assert_matches_reference(prediction, reference, tolerance=1e-5):
    for m, slot in enumerate(prediction.masks):
        for code, guesses in slot.predictions.items():
            expected = reference[code][m]
            assert [g.token_id for g in guesses] == expected.indices.tolist(), (code, m)
            got = torch.tensor([g.probability for g in guesses])
            assert torch.allclose(got, expected.values, atol=tolerance, rtol=0), (code, m, got, expected.values)


def reference_hidden_states(folder, text: str, code: str) -> tuple[torch.Tensor, list[int]]:
    model = XmodForMaskedLM.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model.set_default_language(code)
    encoded = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        states = model.roberta(**encoded, output_hidden_states=True).hidden_states
    special = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}  # <s>, </s>, padding
    content = [i for i, t in enumerate(encoded.input_ids[0].tolist()) if t not in special]
    return torch.stack([s[0, content] for s in states]), content
