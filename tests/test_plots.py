"""Figures are built from result objects and show the numbers in them."""

from __future__ import annotations

import pytest

from xmod_explorer import Explorer, plots


@pytest.fixture(scope="module")
def explorer(base_dir):
    return Explorer.from_pretrained(str(base_dir))


def test_mask_bars_show_each_language(explorer):
    prediction = explorer.predict_masks("One <mask> here and <mask>.", ["en_XX", "de_DE", "ja_XX"], 3)
    figure = plots.mask_probabilities(prediction, 2)
    assert [trace.name for trace in figure.data] == ["en_XX", "de_DE", "ja_XX"]
    assert list(figure.data[1].x) == [g.probability for g in prediction.masks[1].predictions["de_DE"]]


def test_many_languages_become_a_heatmap(explorer, monkeypatch):
    monkeypatch.setattr(plots, "MAX_BAR_PANELS", 2)
    prediction = explorer.predict_masks("One <mask> here.", ["en_XX", "de_DE", "ja_XX"], 3)
    figure = plots.mask_probabilities(prediction)
    assert figure.data[0].type == "heatmap" and list(figure.data[0].x) == ["en_XX", "de_DE", "ja_XX"]


def test_comparison_figures(explorer):
    comparison = explorer.compare_adapters("Every layer holds an adapter.", ["en_XX", "de_DE", "ja_XX"], "de_DE")
    heat = plots.adapter_heatmap(comparison, 2)
    assert heat.data[0].z[0][1] == pytest.approx(float(comparison.pooled_cosine[2, 0, 1]))
    lines = plots.reference_lines(comparison)
    assert [trace.name for trace in lines.data] == ["en_XX", "ja_XX"]
    shift = plots.token_shift_heatmap(comparison, "ja_XX", centred=True)
    assert len(shift.data[0].y) == len(comparison.tokens)
    assert shift.data[0].z[0][0] == pytest.approx(0.0, abs=1e-6)  # layer 0: no adapter has acted yet


def test_sentence_figures(explorer):
    pairs = [("en_XX", "Choose two languages."), ("en_XX", "Each layer has an adapter."), ("en_XX", "The model shares weights."),
             ("de_DE", "Wähle zwei Sprachen."), ("de_DE", "Jede Schicht hat einen Adapter."), ("de_DE", "Das Modell teilt Gewichte.")]
    result = explorer.compare_sentences(pairs)
    figure = plots.sentence_heatmap(result, 1)
    assert list(figure.data[0].x) == result.labels
    cka = plots.cka_lines(result)
    assert len(cka.data) == 4
