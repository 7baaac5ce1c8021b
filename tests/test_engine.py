"""The engine's numbers equal plain transformers, one language at a time, in every backend."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import (
    LANGUAGES,
    assert_matches_reference,
    assert_same_predictions,
    reference_hidden_states,
    reference_predictions,
)
from transformers import AutoTokenizer, XmodForMaskedLM

from xmod_explorer import Explorer, ExplorerError, compat

ONE_MASK = "Choose two <mask> and compare their predictions."
TWO_MASKS = "Der <mask> jeder Sprache sitzt in jeder <mask>."


@pytest.mark.parametrize("text", [ONE_MASK, TWO_MASKS])
def test_predict_masks_equals_per_language_reference(model_dir, text):
    explorer = Explorer.from_pretrained(str(model_dir))
    prediction = explorer.predict_masks(text, LANGUAGES, top_k=5)
    assert prediction.languages == LANGUAGES
    assert len(prediction.masks) == text.count("<mask>")
    assert_matches_reference(prediction, reference_predictions(model_dir, text, 5))


def test_languages_really_differ(base_dir):
    """Guards the other tests: if all adapters gave the same output, equality would prove nothing."""
    prediction = Explorer.from_pretrained(str(base_dir)).predict_masks(ONE_MASK, LANGUAGES, top_k=5)
    tops = {code: tuple(g.token_id for g in guesses) for code, guesses in prediction.masks[0].predictions.items()}
    assert len(set(tops.values())) > 1


def test_result_dict_shape(base_dir):
    prediction = Explorer.from_pretrained(str(base_dir)).predict_masks(TWO_MASKS, ["de_DE", "en_XX"], top_k=3)
    data = json.loads(json.dumps(prediction.to_dict()))
    assert data["model"] == str(base_dir) and data["text"] == TWO_MASKS
    assert data["languages"] == ["de_DE", "en_XX"]
    assert [len(m["predictions"]["de_DE"]) for m in data["masks"]] == [3, 3]
    first = data["masks"][0]["predictions"]["en_XX"][0]
    assert set(first) == {"token", "token_id", "probability"} and 0 < first["probability"] <= 1
    frame = prediction.to_frame()
    assert len(frame) == 2 * 2 * 3
    assert list(prediction.to_wide_frame().columns) == ["mask", "rank", "de_DE", "en_XX"]


def test_position_is_index_of_mask_token(base_dir):
    explorer = Explorer.from_pretrained(str(base_dir))
    prediction = explorer.predict_masks(TWO_MASKS, ["en_XX"], top_k=1)
    assert [prediction.tokens[slot.position] for slot in prediction.masks] == ["<mask>", "<mask>"]


@pytest.mark.adapters_backend
@pytest.mark.parametrize("backend", ["adapters-converted", "adapters-in-memory"])
def test_adapters_backend_equals_native(base_dir, converted_dir, backend):
    folder = converted_dir if backend == "adapters-converted" else base_dir
    explorer = Explorer.from_pretrained(str(folder), backend="auto" if backend == "adapters-converted" else "adapters")
    assert explorer.info().backend == "adapters"
    for text in (ONE_MASK, TWO_MASKS):
        prediction = explorer.predict_masks(text, LANGUAGES, top_k=5)
        assert_matches_reference(prediction, reference_predictions(base_dir, text, 5))


@pytest.mark.adapters_backend
def test_adapters_backend_loads_adapters_on_demand(converted_dir):
    explorer = Explorer.from_pretrained(str(converted_dir))
    assert explorer.info().loaded_languages == []
    explorer.predict_masks(ONE_MASK, ["ja_XX", "fr_XX"], top_k=1)
    assert explorer.info().loaded_languages == ["ja_XX", "fr_XX"]
    assert explorer.info().languages == LANGUAGES


@pytest.mark.parametrize("backend", ["transformers", pytest.param("adapters", marks=pytest.mark.adapters_backend)])
def test_language_subset_equals_full_model(base_dir, backend):
    full = Explorer.from_pretrained(str(base_dir), backend=backend)
    subset = Explorer.from_pretrained(str(base_dir), backend=backend, languages=["de_DE", "ru_RU"])
    assert subset.languages == ["ru_RU", "de_DE"]  # checkpoint order, not request order
    assert subset.info().memory_bytes < full.info().memory_bytes
    a = full.predict_masks(TWO_MASKS, ["de_DE", "ru_RU"], top_k=5).to_dict()
    b = subset.predict_masks(TWO_MASKS, ["de_DE", "ru_RU"], top_k=5).to_dict()
    assert_same_predictions(a, b)
    with pytest.raises(ExplorerError, match="en_XX"):
        subset.predict_masks(ONE_MASK, ["en_XX"])


@pytest.mark.parametrize("backend", ["transformers", pytest.param("adapters", marks=pytest.mark.adapters_backend)])
def test_compare_adapters_equals_reference(model_dir, backend):
    text = "Chaque langue a son propre adaptateur."
    codes = ["fr_XX", "en_XX", "ja_XX"]
    comparison = Explorer.from_pretrained(str(model_dir), backend=backend).compare_adapters(
        text, codes, reference="en_XX"
    )
    states = {code: reference_hidden_states(model_dir, text, code)[0] for code in codes}  # (L+1, t, h)
    for layer in comparison.layers:
        for i, a in enumerate(codes):
            for j, b in enumerate(codes):
                pa, pb = states[a][layer].mean(0), states[b][layer].mean(0)
                expected = torch.nn.functional.cosine_similarity(pa, pb, dim=0).item()
                assert comparison.pooled_cosine[layer, i, j].item() == pytest.approx(expected, abs=1e-5)
            per_token = torch.nn.functional.cosine_similarity(states[a][layer], states["en_XX"][layer], dim=-1)
            assert torch.allclose(comparison.token_cosine[layer, i].float(), per_token, atol=1e-5)
    assert len(comparison.tokens) == states["en_XX"].shape[1]


def test_layer_zero_is_identical_for_every_adapter(model_dir):
    comparison = Explorer.from_pretrained(str(model_dir)).compare_adapters(
        ONE_MASK.replace("<mask>", "words"), LANGUAGES
    )
    assert torch.allclose(comparison.pooled_cosine[0], torch.ones(5, 5, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(comparison.centred_cosine[0], torch.ones(5, 5, dtype=torch.float64), atol=1e-6)
    last = comparison.pooled_cosine[-1]
    assert (last < 1 - 1e-4).any()  # adapters do move the states
    assert torch.allclose(last, last.T) and torch.allclose(last.diagonal(), torch.ones(5, dtype=torch.float64))
    assert comparison.to_dict()["layers"] == list(range(3))


def test_last_layer_at_mask_positions_equals_the_library_forward(model_dir):
    """The engine computes the last layer only where it is read; every other output must not change."""
    explorer = Explorer.from_pretrained(str(model_dir))
    model = XmodForMaskedLM.from_pretrained(str(model_dir)).eval()
    ids = explorer.tokenizer(TWO_MASKS, return_tensors="pt")
    positions = [0, 3, ids.input_ids.shape[1] - 1]
    with torch.no_grad():
        partial = explorer.backend.encode_adapters(ids.input_ids, ids.attention_mask, LANGUAGES, positions=positions)
        lang_ids = torch.tensor([model.config.languages.index(code) for code in LANGUAGES])
        full = model.roberta(input_ids=ids.input_ids.expand(len(LANGUAGES), -1), lang_ids=lang_ids).last_hidden_state
    assert partial.last.shape == (len(LANGUAGES), len(positions), full.shape[-1])
    torch.testing.assert_close(partial.last, full[:, positions], atol=1e-5, rtol=0)


PARALLEL = [
    ("en_XX", "Choose two languages and compare."),
    ("en_XX", "The model shares all other weights."),
    ("en_XX", "Each language has its own adapter."),
    ("en_XX", "Every layer holds an adapter."),
    ("de_DE", "Wähle zwei Sprachen und vergleiche."),
    ("de_DE", "Das Modell teilt alle anderen Gewichte."),
    ("de_DE", "Jede Sprache hat ihren eigenen Adapter."),
    ("de_DE", "Jede Schicht hat einen Adapter."),
]


@pytest.mark.parametrize("backend", ["transformers", pytest.param("adapters", marks=pytest.mark.adapters_backend)])
def test_compare_sentences_equals_unbatched_reference(base_dir, backend):
    explorer = Explorer.from_pretrained(str(base_dir), backend=backend)
    shuffled = [PARALLEL[i] for i in (4, 0, 5, 1, 6, 2, 7, 3)]  # interleaved languages exercise the row sorting
    result = explorer.compare_sentences(shuffled)
    pooled = torch.stack([reference_hidden_states(base_dir, text, code)[0].mean(1) for code, text in shuffled], 1)
    for layer in result.layers:
        expected = torch.nn.functional.normalize(pooled[layer].double(), dim=-1)
        assert torch.allclose(result.pooled_cosine[layer], expected @ expected.T, atol=1e-5)
    assert result.parallel_size == 4
    frame = result.to_frame()
    assert set(frame.language_a) == {"de_DE"} and set(frame.language_b) == {"en_XX"}
    assert len(frame) == len(result.layers)
    assert frame.cka.between(-1, 1.0001).all()


def test_compare_sentences_without_parallel_structure_explains_cka(base_dir):
    result = Explorer.from_pretrained(str(base_dir)).compare_sentences(PARALLEL[:3] + PARALLEL[4:5])
    assert result.parallel_size == 0 and result.scores == []
    assert any("parallel" in note for note in result.notes)


def test_compare_sentences_reports_permutation_tests(base_dir):
    explorer = Explorer.from_pretrained(str(base_dir))
    result = explorer.compare_sentences(PARALLEL)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["permutations"] == 24 and data["exact_test"] is True  # 4 sentences per language: all 4! pairings
    fields = {"cka_p_value", "cka_null_low", "cka_null_high", "cosine_p_value", "cosine_null_low", "cosine_null_high"}
    assert all(fields <= set(score) for score in data["scores"])
    assert fields <= set(result.to_frame().columns)
    for score in result.scores:
        assert 1 / 24 <= score.cka_p_value <= 1 and 1 / 24 <= score.cosine_p_value <= 1
        assert score.cka_null_low <= score.shuffled_cka <= score.cka_null_high
        assert score.cosine_null_low <= score.shuffled_cosine <= score.cosine_null_high
    assert any("4 sentences per language" in note and "0.042" in note for note in result.notes)
    assert result.to_dict() == explorer.compare_sentences(PARALLEL).to_dict()  # seeded: the same every time
    with pytest.raises(ExplorerError, match="permutations must be a whole number from 1,000"):
        explorer.compare_sentences(PARALLEL, permutations=20)
    with pytest.raises(ExplorerError, match="seed must be a whole number"):
        explorer.compare_sentences(PARALLEL, seed="one")


@pytest.mark.parametrize("backend", ["transformers", pytest.param("adapters", marks=pytest.mark.adapters_backend)])
def test_centred_values_do_not_depend_on_what_else_is_selected(base_dir, backend):
    """A pair's centred cosine is a property of the pair and the model, not of the other adapters or sentences."""
    explorer = Explorer.from_pretrained(str(base_dir), backend=backend)
    text = "Every layer holds an adapter."
    two = explorer.compare_adapters(text, ["en_XX", "de_DE"], reference="en_XX")
    many = explorer.compare_adapters(text, ["ja_XX", "en_XX", "ru_RU", "de_DE", "fr_XX"], reference="en_XX")
    i, j = many.languages.index("en_XX"), many.languages.index("de_DE")
    torch.testing.assert_close(two.centred_cosine[:, 0, 1], many.centred_cosine[:, i, j], atol=1e-6, rtol=0)
    torch.testing.assert_close(two.token_cosine_centred[:, 1], many.token_cosine_centred[:, j], atol=1e-6, rtol=0)
    pair = explorer.compare_sentences([PARALLEL[0], PARALLEL[4]])
    everything = explorer.compare_sentences(PARALLEL)
    torch.testing.assert_close(pair.centred_cosine[:, 0, 1], everything.centred_cosine[:, 0, 4], atol=1e-6, rtol=0)
    assert many.to_dict()["centring"]["sentences"] == explorer.centring().sentences


def test_centring_is_the_reference_sentences_mean_in_plain_transformers(base_dir):
    """The centring vector and a centred cosine, recomputed with XmodForMaskedLM one sentence at a time."""
    from xmod_explorer.datasets import PARALLEL_SET, read_pairs

    model = XmodForMaskedLM.from_pretrained(str(base_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    special = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}

    def sentence_vectors(text: str, code: str) -> torch.Tensor:  # (layers + 1, hidden)
        model.set_default_language(code)
        encoded = tokenizer(text, return_tensors="pt")
        content = [i for i, t in enumerate(encoded.input_ids[0].tolist()) if t not in special]
        with torch.no_grad():
            states = model.roberta(**encoded, output_hidden_states=True).hidden_states
        return torch.stack([s[0, content].mean(0) for s in states]).double()

    rows = [(code, text) for code, text in read_pairs(PARALLEL_SET) if code in LANGUAGES]
    expected = torch.stack([sentence_vectors(text, code) for code, text in rows]).mean(0)
    explorer = Explorer.from_pretrained(str(base_dir))
    centring = explorer.centring()
    assert centring.sentences == len(rows) == 25 and set(centring.languages) == set(LANGUAGES)
    torch.testing.assert_close(centring.means, expected, atol=1e-5, rtol=0)
    text = "Chaque langue a son propre adaptateur."
    comparison = explorer.compare_adapters(text, ["fr_XX", "ja_XX"])
    a, b = sentence_vectors(text, "fr_XX") - expected, sentence_vectors(text, "ja_XX") - expected
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    torch.testing.assert_close(comparison.centred_cosine[:, 0, 1], cosine, atol=1e-5, rtol=0)


def test_centring_is_computed_once_however_many_threads_ask(base_dir):
    import threading

    explorer = Explorer.from_pretrained(str(base_dir))
    passes = [0]
    explorer.backend.encoder.embeddings.register_forward_hook(lambda *_: passes.__setitem__(0, passes[0] + 1))
    results = []
    threads = [threading.Thread(target=lambda: results.append(explorer.centring())) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert passes[0] == 1 and all(result is results[0] for result in results) and len(results) == 6


def test_centring_lowers_the_cosine_of_unrelated_sentences_on_the_mini_model():
    """Raw cosine is high even for unrelated inputs; after centring it is lower on every layer above 0."""
    import csv

    from xmod_explorer.defaults import ASSETS

    with open(ASSETS / "mini_heldout.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    first: dict[str, str] = {}
    for row in rows:  # one held-out help-page sentence per language: different texts, unrelated content
        first.setdefault(row["language"], row["text"].replace("<mask>", row["answer"]))
    result = Explorer.from_pretrained("mini").compare_sentences(list(first.items()))
    unrelated = ~torch.eye(len(first), dtype=torch.bool)
    for layer in result.layers[1:]:
        raw = result.pooled_cosine[layer][unrelated].mean()
        centred = result.centred_cosine[layer][unrelated].mean()
        assert raw > centred, (layer, raw, centred)


@pytest.fixture(scope="module")
def explorer(base_dir):
    return Explorer.from_pretrained(str(base_dir))


@pytest.mark.parametrize(
    "text, languages, top_k, message",
    [
        ("No mask in this sentence.", ["en_XX"], 5, "<mask>"),
        ("", ["en_XX"], 5, "empty"),
        ("   \n\t ", ["en_XX"], 5, "empty"),
        ("One <mask> here.", ["en_xx"], 5, "Did you mean 'en_XX'"),
        ("One <mask> here.", ["xx_YY"], 5, "Unknown language"),
        ("One <mask> here.", [], 5, "at least one language"),
        ("One <mask> here.", ["en_XX"], 0, "top_k"),
        ("One <mask> here.", ["en_XX"], 2.5, "top_k"),
        ("One <mask> here.", ["en_XX"], "5", "top_k"),
        ("One <mask> here.", ["en_XX"], 10**9, "top_k"),
        ("<s></s><pad>", ["en_XX"], 5, "only special tokens"),
        (None, ["en_XX"], 5, "must be a string"),
    ],
)
def test_bad_input_is_a_clear_error(explorer, text, languages, top_k, message):
    with pytest.raises(ExplorerError, match=message):
        explorer.predict_masks(text, languages, top_k)


def test_text_over_the_token_limit(explorer):
    long_text = "word " * 600 + "<mask>"
    with pytest.raises(ExplorerError, match=r"at most 512"):
        explorer.predict_masks(long_text, ["en_XX"])
    # The limit is a limit, not an off-by-one: 512 tokens exactly is fine.
    ids = explorer.tokenizer("x <mask>")["input_ids"]
    assert len(ids) <= 512
    assert explorer.max_tokens == 512


def test_mask_spellings_are_understood(explorer):
    a = explorer.predict_masks("One <mask> here.", ["en_XX"], 3).to_dict()
    b = explorer.predict_masks("One [MASK] here.", ["en_XX"], 3).to_dict()
    assert_same_predictions(a, b, atol=0)


def test_duplicate_languages_run_once(explorer):
    prediction = explorer.predict_masks(ONE_MASK, ["de_DE", "de_DE", "German (de_DE)"], 2)
    assert prediction.languages == ["de_DE"]


@pytest.mark.parametrize("make", ["missing", "empty", "bert", "broken-json", "no-weights", "truncated"])
def test_paths_that_are_not_xmod_models(tmp_path, base_dir, make):
    target = tmp_path / "model"
    if make != "missing":
        target.mkdir()
    if make == "bert":
        (target / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 10}))
    if make == "broken-json":
        (target / "config.json").write_text("{not json")
    if make in ("no-weights", "truncated"):  # a valid folder but for its weights
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (base_dir / name).exists():  # transformers 5 writes no special_tokens_map.json
                (target / name).write_bytes((base_dir / name).read_bytes())
    if make == "truncated":
        data = (base_dir / "model.safetensors").read_bytes()
        (target / "model.safetensors").write_bytes(data[: len(data) // 2])
    expected = {
        "missing": "No folder",
        "empty": "no config.json",
        "bert": "not X-MOD",
        "broken-json": "not valid JSON",
        "no-weights": "no weights file",
        "truncated": "could not be read",
    }[make]
    with pytest.raises(ExplorerError, match=expected):
        Explorer.from_pretrained(str(target))


@pytest.mark.adapters_backend
def test_adapters_format_refuses_transformers_backend(converted_dir):
    with pytest.raises(ExplorerError, match="backend='adapters'"):
        Explorer.from_pretrained(str(converted_dir), backend="transformers")


@pytest.mark.parametrize(
    "argument, value, message",
    [("backend", "onnx", "Unknown backend"), ("device", "tpu", "Unknown device"), ("dtype", "int4", "Unknown dtype")],
)
def test_bad_load_options(base_dir, argument, value, message):
    with pytest.raises(ExplorerError, match=message):
        Explorer.from_pretrained(str(base_dir), **{argument: value})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown on machines without CUDA")
def test_cuda_requested_without_gpu(base_dir):
    with pytest.raises(ExplorerError, match="no CUDA GPU"):
        Explorer.from_pretrained(str(base_dir), device="cuda")


def test_info_reports_model_order_and_size(base_dir):
    info = Explorer.from_pretrained(str(base_dir)).info()
    assert info.languages == LANGUAGES
    assert info.parameters == sum(p.numel() for p in XmodForMaskedLM.from_pretrained(str(base_dir)).parameters())
    assert info.device == "cpu" and info.dtype == "float32" and info.backend == "transformers"
    frame = info.to_frame()
    assert frame.loc[frame.code == "ja_XX", "lang_id"].item() == 2
    assert frame.loc[frame.code == "ja_XX", "name"].item() == "Japanese (ja_XX)"


@pytest.mark.skipif(compat.adapters_unavailable() is None, reason="the adapters backend is available here")
def test_adapters_backend_says_why_it_is_unavailable(base_dir):
    """Where the adapters library cannot run (transformers 5), asking for it names the reason and the way out."""
    with pytest.raises(ExplorerError, match=r"adapters.*Use backend='transformers'"):
        Explorer.from_pretrained(str(base_dir), backend="adapters")
