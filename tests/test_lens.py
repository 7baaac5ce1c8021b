"""The logit lens and the mixing of two adapters equal plain transformers, one language at a time, in both backends."""

from __future__ import annotations

import copy
import functools
import json

import pytest
import torch
from helpers import LANGUAGES
from torch import nn
from transformers import AutoTokenizer, XmodForMaskedLM

from xmod_explorer import Explorer, ExplorerError
from xmod_explorer.lens import mixing_weights

TWO_MASKS = "Der <mask> jeder Sprache sitzt in jeder <mask>."
BACKENDS = ["transformers", pytest.param("adapters", marks=pytest.mark.adapters_backend)]


@functools.lru_cache(maxsize=4)
def plain(folder) -> tuple[XmodForMaskedLM, object]:
    """transformers' own model and tokenizer from the folder, loaded once per test session."""
    return XmodForMaskedLM.from_pretrained(str(folder)).eval(), AutoTokenizer.from_pretrained(str(folder))


def reference_lens(folder, text: str, code: str, top_k: int) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """[layer][mask] -> (top-k probabilities, ids) and the full distribution, the documented way: one language
    via set_default_language, output_hidden_states, the model's lm_head on each layer's state at the mask.
    Pre-norm checkpoints: every layer but the last through the encoder's closing LayerNorm (the last has it)."""
    model, tokenizer = plain(folder)
    model.set_default_language(code)
    encoded = tokenizer(text, return_tensors="pt")
    positions = (encoded.input_ids[0] == tokenizer.mask_token_id).nonzero().flatten().tolist()
    with torch.no_grad():
        states = model.roberta(**encoded, output_hidden_states=True).hidden_states
        out = []
        for layer, state in enumerate(states):
            at = state[0, positions]
            if model.config.pre_norm and layer < len(states) - 1:
                at = model.roberta.encoder.LayerNorm(at)
            probabilities = model.lm_head(at).softmax(-1)
            out.append([(probabilities[m].topk(top_k), probabilities[m]) for m in range(len(positions))])
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_logit_lens_equals_reference_at_every_layer(model_dir, backend):
    explorer = Explorer.from_pretrained(str(model_dir), backend=backend)
    lens = explorer.logit_lens(TWO_MASKS, LANGUAGES, top_k=4)
    assert lens.layers == [0, 1, 2] and len(lens.masks) == 2
    for code in LANGUAGES:
        expected = reference_lens(model_dir, TWO_MASKS, code, 4)
        for m, mask in enumerate(lens.masks):
            final_id = expected[-1][m][0].indices[0]
            assert mask.final[code].token_id == final_id
            for layer, by_layer in enumerate(expected):
                (top, distribution) = by_layer[m]
                guesses = mask.layers[layer][code]
                assert [g.token_id for g in guesses] == top.indices.tolist(), (code, m, layer)
                got = torch.tensor([g.probability for g in guesses])
                torch.testing.assert_close(got, top.values, atol=1e-5, rtol=0)
                assert mask.final_probability[code][layer] == pytest.approx(float(distribution[final_id]), abs=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_logit_lens_last_layer_is_predict_masks(model_dir, backend):
    explorer = Explorer.from_pretrained(str(model_dir), backend=backend)
    lens = explorer.logit_lens(TWO_MASKS, LANGUAGES, top_k=5)
    prediction = explorer.predict_masks(TWO_MASKS, LANGUAGES, top_k=5)
    for mask, slot in zip(lens.masks, prediction.masks):
        assert mask.position == slot.position
        for code in LANGUAGES:
            last = mask.layers[-1][code]
            assert [g.token_id for g in last] == [g.token_id for g in slot.predictions[code]]
            for a, b in zip(last, slot.predictions[code]):
                assert a.probability == pytest.approx(b.probability, abs=1e-5)
            assert mask.final_probability[code][-1] == pytest.approx(slot.predictions[code][0].probability, abs=1e-5)


def test_logit_lens_layer_zero_is_shared_and_the_readout_is_named(model_dir):
    explorer = Explorer.from_pretrained(str(model_dir))
    lens = explorer.logit_lens(TWO_MASKS, LANGUAGES, top_k=3)
    for mask in lens.masks:
        zero = {code: [g.token_id for g in guesses] for code, guesses in mask.layers[0].items()}
        assert len({tuple(ids) for ids in zero.values()}) == 1  # before any adapter, every adapter agrees
        assert mask.divergence_layer() != 0
        assert all(0 <= layer <= 2 for layer in mask.settled_layer().values())
        assert all(mask.agrees_with_final(2).values())
    pre_norm = json.loads((model_dir / "config.json").read_text())["pre_norm"]
    assert ("closing LayerNorm" in lens.readout) == pre_norm
    data = json.loads(json.dumps(lens.to_dict()))
    assert data["layers"] == [0, 1, 2] and data["languages"] == LANGUAGES
    assert set(data["masks"][0]) >= {"position", "divergence_layer", "settled_layer", "final", "final_probability"}
    frame = lens.to_frame()
    assert len(frame) == 2 * 3 * len(LANGUAGES) * 3
    assert frame.loc[frame.layer == 2, "is_final_answer"].groupby(frame["rank"]).all()[1]


def test_adapters_really_diverge_in_the_lens(base_dir):
    """Guards the tests above: if the adapters agreed at every layer, equality would prove little."""
    lens = Explorer.from_pretrained(str(base_dir)).logit_lens(TWO_MASKS, LANGUAGES, top_k=1)
    assert any(mask.divergence_layer() is not None for mask in lens.masks)


# ----- mixing two adapters -------------------------------------------------------------------------------


class Mixed(nn.Module):
    """Stands in for adapter a in a plain model: (1 - alpha) * a(x) + alpha * b(x)."""

    def __init__(self, a: nn.Module, b: nn.Module, alpha: float):
        super().__init__()
        self.a, self.b, self.alpha = a, b, alpha

    def forward(self, x):
        return (1 - self.alpha) * self.a(x) + self.alpha * self.b(x)


def reference_mix(folder, text: str, a: str, b: str, alpha: float, top_k: int) -> list:
    """Plain XmodForMaskedLM with every layer's adapter module a replaced by the mix, run as language a."""
    model, tokenizer = plain(folder)
    model = copy.deepcopy(model)
    for layer in model.roberta.encoder.layer:
        modules = layer.output.adapter_modules
        modules[a] = Mixed(modules[a], modules[b], alpha)
    model.set_default_language(a)
    encoded = tokenizer(text, return_tensors="pt")
    positions = (encoded.input_ids[0] == tokenizer.mask_token_id).nonzero().flatten().tolist()
    with torch.no_grad():
        probabilities = model(**encoded).logits[0].softmax(-1)
    return [probabilities[p].topk(top_k) for p in positions]


@pytest.mark.parametrize("backend", BACKENDS)
def test_interpolate_equals_reference_at_every_alpha(model_dir, backend):
    explorer = Explorer.from_pretrained(str(model_dir), backend=backend)
    mix = explorer.interpolate(TWO_MASKS, "en_XX", "ja_XX", steps=5, top_k=4)
    assert mix.alphas == [0.0, 0.25, 0.5, 0.75, 1.0]
    for i, alpha in enumerate(mix.alphas):
        expected = reference_mix(model_dir, TWO_MASKS, "en_XX", "ja_XX", alpha, 4)
        for m, mask in enumerate(mix.masks):
            guesses = mask.predictions[i]
            assert [g.token_id for g in guesses] == expected[m].indices.tolist(), (alpha, m)
            got = torch.tensor([g.probability for g in guesses])
            torch.testing.assert_close(got, expected[m].values, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_interpolation_ends_are_the_pure_adapters(model_dir, backend):
    explorer = Explorer.from_pretrained(str(model_dir), backend=backend)
    mix = explorer.interpolate(TWO_MASKS, "de_DE", "ru_RU", steps=3, top_k=5)
    pure = explorer.predict_masks(TWO_MASKS, ["de_DE", "ru_RU"], top_k=5)
    for mask, slot in zip(mix.masks, pure.masks):
        for index, code in ((0, "de_DE"), (-1, "ru_RU")):
            ends = mask.predictions[index]
            assert [g.token_id for g in ends] == [g.token_id for g in slot.predictions[code]]
            for a, b in zip(ends, slot.predictions[code]):
                assert a.probability == pytest.approx(b.probability, abs=1e-5)


@pytest.mark.adapters_backend
def test_both_backends_mix_alike(model_dir):
    """Two implementations: transformers' layers with the bottleneck mixed, and the adapters library's Average."""
    native, library = (
        Explorer.from_pretrained(str(model_dir), backend=backend).interpolate(TWO_MASKS, "fr_XX", "en_XX", 7)
        for backend in ("transformers", "adapters")
    )
    assert native.alphas == library.alphas == mixing_weights(7)
    for a, b in zip(native.masks, library.masks):
        for row_a, row_b in zip(a.predictions, b.predictions):
            assert [g.token_id for g in row_a] == [g.token_id for g in row_b]
            for ga, gb in zip(row_a, row_b):
                assert ga.probability == pytest.approx(gb.probability, abs=1e-5)
        assert [t.token_id for t in a.tracked] == [t.token_id for t in b.tracked]
        for ta, tb in zip(a.tracked, b.tracked):
            assert ta.probabilities == pytest.approx(tb.probabilities, abs=1e-5)


def test_tracked_tokens_follow_every_top_token_across_alpha(base_dir):
    mix = Explorer.from_pretrained(str(base_dir)).interpolate(TWO_MASKS, "en_XX", "ja_XX", steps=6, top_k=3)
    for mask in mix.masks:
        tops = [guesses[0].token_id for guesses in mask.predictions]
        assert [t.token_id for t in mask.tracked] == list(dict.fromkeys(tops))
        for i, guesses in enumerate(mask.predictions):
            tracked = next(t for t in mask.tracked if t.token_id == guesses[0].token_id)
            assert tracked.probabilities[i] == pytest.approx(guesses[0].probability, abs=1e-6)
    data = json.loads(json.dumps(mix.to_dict()))
    assert data["language_a"] == "en_XX" and data["language_b"] == "ja_XX" and "bottleneck" in data["mixed"]
    assert len(mix.to_frame()) == 2 * 6 * 3 and set(mix.to_frame(alpha=0.42).alpha) == {0.4}
    assert mix.nearest(1.0) == 5 and mix.nearest(-3) == 0


def test_the_adapters_differ_under_mixing(base_dir):
    """Guards the tests above: the two ends must give different predictions for equality to mean something."""
    mix = Explorer.from_pretrained(str(base_dir)).interpolate(TWO_MASKS, "en_XX", "ja_XX", steps=2, top_k=3)
    assert any(
        [g.token_id for g in mask.predictions[0]] != [g.token_id for g in mask.predictions[1]] for mask in mix.masks
    )


@pytest.mark.adapters_backend
def test_adapters_backend_in_half_precision_explains_what_to_do(base_dir):
    explorer = Explorer.from_pretrained(str(base_dir), backend="adapters", dtype="bfloat16")
    with pytest.raises(ExplorerError, match="float32"):
        explorer.interpolate(TWO_MASKS, "en_XX", "ja_XX", steps=3)


@pytest.fixture(scope="module")
def explorer(base_dir):
    return Explorer.from_pretrained(str(base_dir))


@pytest.mark.parametrize(
    "args, message",
    [
        ((TWO_MASKS, "en_XX", "en_XX", 5), "two different adapters"),
        ((TWO_MASKS, "en_XX", "xx_YY", 5), "Unknown language"),
        ((TWO_MASKS, "en_XX", "de_DE", 1), "steps"),
        ((TWO_MASKS, "en_XX", "de_DE", 1000), "steps"),
        ((TWO_MASKS, "en_XX", "de_DE", 2.5), "steps"),
        (("No mask here.", "en_XX", "de_DE", 5), "<mask>"),
    ],
)
def test_interpolate_bad_input(explorer, args, message):
    with pytest.raises(ExplorerError, match=message):
        explorer.interpolate(*args)


@pytest.mark.parametrize(
    "args, message",
    [
        (("No mask.", ["en_XX"], 3), "<mask>"),
        ((TWO_MASKS, [], 3), "at least one"),
        ((TWO_MASKS, ["en_XX"], 0), "top_k"),
    ],
)
def test_logit_lens_bad_input(explorer, args, message):
    with pytest.raises(ExplorerError, match=message):
        explorer.logit_lens(*args)


@pytest.fixture(scope="module")
def prenorm_scaled_dir(prenorm_dir, tmp_path_factory):
    """The pre-norm model with every LayerNorm's weight and bias random: a freshly built one has weight 1 and bias 0,
    where applying the closing LayerNorm twice changes nothing, so it cannot tell the readout rules apart."""
    model = XmodForMaskedLM.from_pretrained(str(prenorm_dir))
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) * 2 + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.5)
    folder = tmp_path_factory.mktemp("prenorm-scaled")
    model.save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(prenorm_dir)).save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize("backend", BACKENDS)
def test_pre_norm_readout_with_a_non_trivial_closing_layer_norm(prenorm_scaled_dir, backend):
    explorer = Explorer.from_pretrained(str(prenorm_scaled_dir), backend=backend)
    lens = explorer.logit_lens(TWO_MASKS, LANGUAGES, top_k=4)
    prediction = explorer.predict_masks(TWO_MASKS, LANGUAGES, top_k=4)
    for code in LANGUAGES:
        expected = reference_lens(prenorm_scaled_dir, TWO_MASKS, code, 4)
        for m, mask in enumerate(lens.masks):
            for layer, by_layer in enumerate(expected):
                got = torch.tensor([g.probability for g in mask.layers[layer][code]])
                assert [g.token_id for g in mask.layers[layer][code]] == by_layer[m][0].indices.tolist(), (code, layer)
                torch.testing.assert_close(got, by_layer[m][0].values, atol=1e-5, rtol=0)
            last = [(g.token_id, g.probability) for g in mask.layers[-1][code]]
            pure = [(g.token_id, g.probability) for g in prediction.masks[m].predictions[code]]
            assert [t for t, _ in last] == [t for t, _ in pure]
            assert [p for _, p in last] == pytest.approx([p for _, p in pure], abs=1e-5)
