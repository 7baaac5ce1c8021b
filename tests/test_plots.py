"""Figures are built from result objects and show the numbers in them."""

from __future__ import annotations

import math

import pytest

from xmod_explorer import Explorer, lab, plots


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
    pairs = [
        ("en_XX", "Choose two languages."),
        ("en_XX", "Each layer has an adapter."),
        ("en_XX", "The model shares weights."),
        ("de_DE", "Wähle zwei Sprachen."),
        ("de_DE", "Jede Schicht hat einen Adapter."),
        ("de_DE", "Das Modell teilt Gewichte."),
    ]
    result = explorer.compare_sentences(pairs)
    figure = plots.sentence_heatmap(result, 1)
    assert list(figure.data[0].x) == result.labels
    cka = plots.cka_heatmap(result)
    assert len(cka.data) == 2  # CKA and the translation-pair cosine gap, one row per language pair
    for score in result.scores:
        row = list(cka.data[0].y).index(f"{score.language_a}-{score.language_b}")
        column = list(cka.data[0].x).index(score.layer)
        shown = cka.data[0].z[row][column]
        assert math.isnan(shown) if math.isnan(score.cka) else shown == score.cka
        assert cka.data[0].customdata[row][column][0] == score.cka_p_value
        assert cka.data[0].text[row][column] == ("*" if score.cka_p_value < 0.05 else "")
        assert cka.data[1].z[row][column] == score.matched_cosine - score.shuffled_cosine
        assert cka.data[1].customdata[row][column][1:] == [score.cosine_null_low, score.cosine_null_high]


def test_classification_and_transfer_figures(explorer):
    from xmod_explorer.classify import Classification, TransferResult, TransferRow

    result = Classification(
        "m",
        "t",
        ["bad", "<b>good</b>"],
        ["ja_XX", "de_DE"],
        {"ja_XX": {"bad": 0.3, "<b>good</b>": 0.7}, "de_DE": {"bad": 0.9, "<b>good</b>": 0.1}},
    )
    bars = plots.classification_bars(result)
    assert [trace.name for trace in bars.data] == ["bad", "&lt;b&gt;good&lt;/b&gt;"]  # labels from uploads are escaped
    assert list(bars.data[0].x) == ["ja_XX", "de_DE"] and list(bars.data[0].y) == [0.3, 0.9]
    transfer = TransferResult(
        "m",
        "en_XX",
        ["bad", "good"],
        [TransferRow("de_DE", 10, 8, 6, 3, 1, 0.5), TransferRow("ja_XX", 12, 9, 6, 4, 1, 0.5)],
    )
    grouped = plots.transfer_bars(transfer)
    assert list(grouped.data[0].y) == [0.8, 0.75] and list(grouped.data[1].y) == [0.6, 0.5]
    assert list(grouped.data[2].y) == [0.5, 0.5] and "en_XX" in grouped.data[1].name
    low, high = transfer.rows[1].target_adapter_ci  # whiskers reach the Wilson interval
    assert grouped.data[0].error_y.array[1] == pytest.approx(high - 0.75)
    assert grouped.data[0].error_y.arrayminus[1] == pytest.approx(0.75 - low)
    assert f"de_DE p = {transfer.rows[0].gap_p_value:.2f}" in grouped.layout.title.text
    training = lab.train_probe(explorer, [("choose two", "a"), ("compare the model", "b")] * 3, "en_XX", max_steps=5)
    curve = plots.loss_curve(training)
    assert list(curve.data[0].y) == training.losses


def test_language_colours_are_stable_and_distinct():
    from xmod_explorer.languages import LANGUAGE_NAMES

    mini = ["en_XX", "ru_RU", "ja_XX", "fr_XX", "de_DE", "ko_KR", "es_XX", "fi_FI", "zh_CN", "el_GR", "it_IT", "hi_IN"]
    colours = plots.language_colours(mini)
    assert len(set(colours.values())) == len(mini)  # one chart, no two languages alike
    assert plots.language_colours(["de_DE", "en_XX"])["de_DE"] == plots.language_colours(["en_XX", "de_DE"])["de_DE"]
    assert plots.language_colours(["de_DE"])["de_DE"] == colours["de_DE"]
    assert set(plots.language_colours(list(LANGUAGE_NAMES)).values()) <= set(plots.PALETTE)


def test_lens_figures_show_each_layer_and_adapter(explorer):
    lens = explorer.logit_lens("One <mask> here.", ["en_XX", "de_DE", "ja_XX"], 2)
    grid = plots.lens_grid(lens, 1)
    mask = lens.masks[0]
    assert list(grid.data[0].x) == ["en_XX", "de_DE", "ja_XX"] and len(grid.data[0].y) == len(lens.layers)
    assert list(grid.data[0].z[-1]) == [1, 1, 1]  # the last layer is every adapter's final answer
    assert grid.data[0].z[0][1] == int(mask.agrees_with_final(0)["de_DE"])
    lines = plots.lens_final_probability(lens, 1)
    assert list(lines.data[1].y) == mask.final_probability["de_DE"]
    assert lines.data[1].line.color == plots.language_colours(lens.languages)["de_DE"]


def test_score_mix_and_map_figures(explorer):
    scores = explorer.score_languages("Choose two languages.", ["en_XX", "de_DE", "ja_XX"])
    bars = plots.language_score_bars(scores)
    assert list(bars.data[0].y) == scores.languages and list(bars.data[0].x) == [s.per_token for s in scores.scores]
    mix = explorer.interpolate("One <mask> here.", "en_XX", "ja_XX", steps=5, top_k=2)
    lines = plots.mix_lines(mix, 1, alpha=0.5)
    assert [trace.name for trace in lines.data] == [plots._plain(t.token) for t in mix.masks[0].tracked]
    assert list(lines.data[0].x) == mix.alphas
    pairs = [("en_XX", "<b>Choose</b> two."), ("de_DE", "Wähle zwei."), ("fr_XX", "Choisis deux."), ("en_XX", "Hi.")]
    projection = explorer.project(pairs, layer=2)
    scatter = plots.projection_scatter(projection, 2)
    assert [trace.name for trace in scatter.data] == ["en_XX", "de_DE", "fr_XX"]
    assert list(scatter.data[0].x) == [float(projection.coordinates[0, i, 0]) for i in (0, 3)]
    assert "&lt;b&gt;Choose" in scatter.data[0].hovertext[0]  # sentences are escaped in hover text
    assert "of the variance" in scatter.layout.xaxis.title.text


def test_many_languages_get_one_trace_per_chart_with_every_number_exact(explorer, monkeypatch):
    """Issue 16: at 81 adapters, a trace and a legend entry per language held the browser for half a second. Past
    MAX_LINES languages the lines become one languages x layers heatmap and the map one trace; the values stay
    exact (here with the bound lowered so that three languages are "many")."""
    monkeypatch.setattr(plots, "MAX_LINES", 1)
    codes = ["en_XX", "de_DE", "ja_XX"]
    comparison = explorer.compare_adapters("Every layer holds an adapter.", codes, "de_DE")
    lines = plots.reference_lines(comparison, centred=True)
    assert len(lines.data) == 1 and lines.data[0].type == "heatmap"
    assert list(lines.data[0].y) == ["en_XX", "ja_XX"] and list(lines.data[0].x) == comparison.layers
    curve = comparison.reference_curve(True)
    assert list(lines.data[0].z[1]) == [float(v) for v in curve[:, 2]]

    lens = explorer.logit_lens("One <mask> here.", codes, 2)
    final = plots.lens_final_probability(lens, 1)
    assert len(final.data) == 1 and final.data[0].type == "heatmap"
    assert list(final.data[0].z[1]) == list(lens.masks[0].final_probability["de_DE"])
    assert final.data[0].y[1].startswith("de_DE: ")

    pairs = [("en_XX", "Choose two."), ("de_DE", "Wähle zwei."), ("fr_XX", "Choisis deux."), ("en_XX", "Hi.")]
    projection = explorer.project(pairs, layer=2)
    scatter = plots.projection_scatter(projection, 2)
    assert len(scatter.data) == 1 and scatter.data[0].showlegend is False
    assert list(scatter.data[0].x) == [float(v) for v in projection.coordinates[projection.at(2)][:, 0]]
    colours = plots.language_colours(["en_XX", "de_DE", "fr_XX"])
    assert list(scatter.data[0].marker.color) == [colours[c] for c in projection.languages]

    sentences = explorer.compare_sentences(
        [(code, text) for code in codes for text in ("One sentence.", "Another one.")]
    )
    monkeypatch.setattr(plots, "MAX_LINES", 2)
    heat = plots.sentence_heatmap(sentences, 1)  # 6 rows: few, every row keeps its label
    assert heat.layout.xaxis.showticklabels is None
    many = plots.similarity_heatmap(
        [[1.0] * 30] * 30, [f"s{i}" for i in range(30)], "t", [str(i // 5) for i in range(30)]
    )
    assert many.layout.xaxis.showticklabels is False and many.layout.yaxis.showticklabels is False


def test_the_fill_mask_heatmap_keeps_the_most_probable_tokens(explorer, monkeypatch):
    """Past MAX_TOKEN_ROWS distinct tokens the heatmap keeps those with the highest total probability, each cell
    still that adapter's exact probability (blank where the token is not in its top-k)."""
    monkeypatch.setattr(plots, "MAX_BAR_PANELS", 1)
    monkeypatch.setattr(plots, "MAX_TOKEN_ROWS", 3)
    codes = ["en_XX", "de_DE", "ja_XX"]
    prediction = explorer.predict_masks("One <mask> here.", codes, 5)
    figure = plots.mask_probabilities(prediction)
    slot = prediction.masks[0]
    totals: dict[int, float] = {}
    for guesses in slot.predictions.values():
        for guess in guesses:
            totals[guess.token_id] = totals.get(guess.token_id, 0.0) + guess.probability
    assert len(totals) > 3
    kept = sorted(totals, key=lambda i: -totals[i])[:3]
    assert len(figure.data[0].y) == 3 and "highest total probability" in figure.layout.title.text
    for row, token_id in enumerate(kept):
        for column, code in enumerate(codes):
            found = [g.probability for g in slot.predictions[code] if g.token_id == token_id]
            assert figure.data[0].z[row][column] == (found[0] if found else None)


def test_adapter_frames_hold_the_wide_frames_cells(explorer):
    """Past MAX_ADAPTER_COLUMNS adapters the tables turn to one row per adapter and mask: the same cells."""
    codes = ["en_XX", "de_DE", "ja_XX"]
    prediction = explorer.predict_masks("One <mask> and <mask>.", codes, 3)
    wide, turned = prediction.to_wide_frame(), prediction.to_adapter_frame()
    assert list(turned.columns) == ["language", "mask", "top-k: token (probability)"] and len(turned) == 6
    for _, row in turned.iterrows():
        ranks = wide[wide["mask"] == row["mask"]].sort_values("rank")
        assert row["top-k: token (probability)"] == ", ".join(ranks[row["language"]])
    lens = explorer.logit_lens("One <mask> and <mask>.", codes, 2)
    wide, turned = lens.to_wide_frame(), lens.to_adapter_frame()
    assert len(turned) == 6 and list(turned.columns)[2:] == [f"layer {layer}" for layer in lens.layers]
    for _, row in wide.iterrows():
        for code in codes:
            match = turned[(turned.language == code) & (turned["mask"] == row["mask"])]
            assert match[f"layer {row['layer']}"].item() == row[code]


def test_many_language_pairs_get_a_language_grid_at_one_layer(explorer):
    """Past MAX_LABELLED_ROWS pairs the CKA view is language x language at the chosen layer: each cell exact."""
    codes = ["en_XX", "de_DE", "ja_XX"]
    result = explorer.compare_sentences([(code, text) for code in codes for text in ("One.", "Two here.", "Three.")])
    grid = plots.cka_grid(result, 2)
    assert list(grid.data[0].x) == codes and list(grid.data[0].y) == codes and len(grid.data) == 2
    for score in result.scores:
        if score.layer != 2:
            continue
        a, b = codes.index(score.language_a), codes.index(score.language_b)
        for cell in (grid.data[0].z[a][b], grid.data[0].z[b][a]):
            assert math.isnan(cell) if math.isnan(score.cka) else cell == score.cka
        assert grid.data[1].z[a][b] == score.matched_cosine - score.shuffled_cosine
    assert math.isnan(grid.data[0].z[1][1])  # no pair with itself
