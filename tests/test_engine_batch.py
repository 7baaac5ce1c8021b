"""Many texts at once: predict_masks_batch, compare_adapters_batch and pooled_layers give what the one-text
methods give, text by text, whatever the passes they are grouped into; a bad text fails alone."""

from __future__ import annotations

import pytest
import torch
from helpers import LANGUAGES, assert_same_predictions, reference_hidden_states

from xmod_explorer import Explorer, ExplorerError

TEXTS = [
    "Choose two <mask> and compare their predictions.",
    "Der <mask> jeder Sprache sitzt in jeder <mask>.",
    "No mask in this one.",
    "Le <mask> partage tous les autres poids.",
    "",
    "Каждый <mask> выбирает свой адаптер.",
    "The <mask> shows what each language adapter changes in every single layer of the model.",
]
LANGUAGE_ROWS = [
    ["en_XX", "de_DE"],
    "de_DE,ja_XX,fr_XX",
    ["en_XX"],
    ["fr_XX", "zz_ZZ"],
    ["en_XX"],
    "ru_RU",
    LANGUAGES,
]
BAD = {2: "no <mask>", 3: "zz_ZZ", 4: "empty"}


@pytest.fixture(scope="module")
def explorers(base_dir, prenorm_dir):
    return {"base": Explorer.from_pretrained(str(base_dir)), "prenorm": Explorer.from_pretrained(str(prenorm_dir))}


@pytest.mark.parametrize("style", ["base", "prenorm"])
@pytest.mark.parametrize("tokens_per_pass", [24, 4096])  # one row per pass, and everything in one pass
def test_predict_masks_batch_equals_one_text_at_a_time(explorers, style, tokens_per_pass):
    explorer = explorers[style]
    results = explorer.predict_masks_batch(TEXTS, LANGUAGE_ROWS, top_k=4, tokens_per_pass=tokens_per_pass)
    assert len(results) == len(TEXTS)
    for i, (text, languages, result) in enumerate(zip(TEXTS, LANGUAGE_ROWS, results)):
        if i in BAD:
            assert isinstance(result, ExplorerError)
            with pytest.raises(ExplorerError) as alone:
                explorer.predict_masks(text, languages, 4)
            assert str(result) == str(alone.value)
            continue
        expected = explorer.predict_masks(text, languages, 4).to_dict()
        assert result.to_dict()["tokens"] == expected["tokens"]
        assert result.languages == expected["languages"] and result.auto_language == expected.get("auto_language")
        assert_same_predictions(result.to_dict(), expected, atol=1e-5)
        for slot, expected_slot in zip(result.masks, expected["masks"]):
            for code, bits in slot.entropy_bits.items():
                assert bits == pytest.approx(expected_slot["entropy_bits"][code], abs=1e-4)


def test_auto_in_a_batch_stands_for_the_same_adapter_as_alone(explorers):
    """ "auto" (the adapter that fits the text best) is resolved per text, as predict_masks resolves it."""
    explorer = explorers["base"]
    texts = ["Der <mask> wählt seinen eigenen Adapter.", "Le <mask> partage tous les autres poids."]
    rows = [["auto", "en_XX"], "auto"]
    for text, languages, result in zip(texts, rows, explorer.predict_masks_batch(texts, rows, top_k=3)):
        expected = explorer.predict_masks(text, languages, 3)
        assert result.auto_language == expected.auto_language is not None
        assert result.languages == expected.languages
        assert_same_predictions(result.to_dict(), expected.to_dict(), atol=1e-5)


@pytest.mark.parametrize("style", ["base", "prenorm"])
def test_compare_adapters_batch_equals_one_text_at_a_time(explorers, style):
    explorer = explorers[style]
    texts = [text.replace("<mask>", "adapter") for text in TEXTS]
    references = [None, "ja_XX", None, None, None, None, "de_DE"]
    results = explorer.compare_adapters_batch(texts, LANGUAGE_ROWS, references, tokens_per_pass=40)
    for i, (text, languages, reference, result) in enumerate(zip(texts, LANGUAGE_ROWS, references, results)):
        if i in (3, 4):
            assert isinstance(result, ExplorerError)
            continue
        expected = explorer.compare_adapters(text, languages, reference)
        assert (result.languages, result.reference, result.tokens) == (
            expected.languages,
            expected.reference,
            expected.tokens,
        )
        for name in ("pooled_cosine", "centred_cosine", "token_cosine", "token_cosine_centred"):
            torch.testing.assert_close(getattr(result, name), getattr(expected, name), atol=1e-5, rtol=0)


def test_pooled_layers_equal_plain_transformers(base_dir, explorers):
    explorer = explorers["base"]
    rows = [("en_XX", "Choose two languages."), ("de_DE", "Der Adapter jeder Sprache."), ("ja_XX", "各言語は各層で")]
    pooled = explorer.pooled_layers([explorer.tokenize(text) for _, text in rows], [c for c, _ in rows])
    assert pooled.shape == (3, 3, 32)  # (layers + 1, rows, hidden) of the tiny model
    for n, (code, text) in enumerate(rows):
        states, _ = reference_hidden_states(base_dir, text, code)
        torch.testing.assert_close(pooled[:, n], states.mean(1), atol=1e-5, rtol=0)
    last = explorer.pooled_batch([explorer.tokenize(text) for _, text in rows], [c for c, _ in rows]).cpu()
    torch.testing.assert_close(pooled[-1], last, atol=1e-6, rtol=0)


def test_batch_methods_check_their_arguments(explorers):
    explorer = explorers["base"]
    with pytest.raises(ExplorerError, match="one languages entry per text"):
        explorer.predict_masks_batch(["a <mask>"], [])
    with pytest.raises(ExplorerError, match="top_k"):
        explorer.predict_masks_batch(["a <mask>"], ["en_XX"], top_k=0)
    assert explorer.predict_masks_batch([], []) == []


@pytest.mark.adapters_backend
def test_adapters_backend_batch_equals_native(base_dir, converted_dir):
    native = Explorer.from_pretrained(str(base_dir))
    adapters = Explorer.from_pretrained(str(converted_dir))
    texts, languages = TEXTS[:2] + TEXTS[5:], LANGUAGE_ROWS[:2] + LANGUAGE_ROWS[5:]
    for got, expected in zip(
        adapters.predict_masks_batch(texts, languages, 3), native.predict_masks_batch(texts, languages, 3)
    ):
        assert_same_predictions(got.to_dict(), expected.to_dict(), atol=1e-5)
