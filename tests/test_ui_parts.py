"""The UI's small pieces on their own: link parameters, the summarised tables, the teaching texts."""

from __future__ import annotations

import dataclasses

import gradio as gr
import pytest

from xmod_explorer import Explorer
from xmod_explorer.settings import load_settings
from xmod_explorer.ui import links


@pytest.fixture(scope="module")
def explorer(base_dir):
    return Explorer.from_pretrained(str(base_dir))


@pytest.fixture
def warnings(monkeypatch):
    """The messages links.dropped would show as toasts."""
    shown = []
    monkeypatch.setattr(gr, "Warning", lambda message, *args, **kwargs: shown.append(message))
    return shown


@pytest.mark.parametrize("value", ["²", "٣", "1.5", "-2", "1e3", "0x10", "５"])  # '²'.isdigit() is True
def test_a_number_that_is_not_plain_digits_is_dropped_with_a_message(value, warnings):
    assert links.number({"top_k": value}, "top_k", 1, 10) is None
    assert warnings == ["The link&#x27;s top_k parameter was not used: give a whole number."]


def test_numbers_are_clamped_and_blank_ones_ignored(warnings):
    assert links.number({"top_k": " 7 "}, "top_k", 1, 10) == 7
    assert links.number({"top_k": "99"}, "top_k", 1, 10) == 10
    assert links.number({"top_k": "0"}, "top_k", 1, 10) == 1
    assert links.number({}, "top_k", 1, 10) is None
    assert warnings == []


def test_each_bad_parameter_is_dropped_alone(explorer, warnings):
    settings = load_settings([])
    params = {"text": "Hallo <mask>.", "languages": "de_DE,xx_YY", "a": "fr_XX", "b": "<b>", "centred": "maybe"}
    assert links.text(params, "text", settings) == "Hallo <mask>."
    assert links.languages(params, "languages", explorer, settings) is None
    assert links.language(params, "a", explorer) == "fr_XX"
    assert links.language(params, "b", explorer) is None
    assert links.flag(params, "centred") is None
    assert links.flag({"centred": "1"}, "centred") is True
    assert [message.split(":")[0] for message in warnings] == [
        "The link&#x27;s languages parameter was not used",
        "The link&#x27;s b parameter was not used",
        "The link&#x27;s centred parameter was not used",
    ]
    assert all("<b>" not in message and "xx_YY" not in message for message in warnings)  # never echoed


def test_rows_parameter_reads_code_tab_sentence_lines(explorer, warnings):
    settings = load_settings([])
    frame = links.rows({"rows": "de_DE\tEin Satz.\n\nfr_XX\tUne phrase.\n"}, "rows", explorer, settings)
    assert frame.values.tolist() == [["de_DE", "Ein Satz."], ["fr_XX", "Une phrase."]]
    assert links.rows({"rows": "zz_ZZ\tNo."}, "rows", explorer, settings) is None
    assert len(warnings) == 1
    capped = dataclasses.replace(settings, limits=dataclasses.replace(settings.limits, max_sentences=2))
    assert len(links.rows({"rows": "de_DE\ta\nde_DE\tb\nde_DE\tc"}, "rows", explorer, capped)) == 2


def test_pairs_table_has_no_self_pairs_and_no_mirror_rows(explorer):
    comparison = explorer.compare_adapters("Ein Satz über Dateien.", ["de_DE", "fr_XX", "en_XX", "ja_XX"])
    table = comparison.pairs_at(2)
    assert len(table) == 6  # 4 choose 2
    assert all(a != b for a, b in zip(table.language_a, table.language_b))
    assert len({frozenset(pair) for pair in zip(table.language_a, table.language_b)}) == 6
    assert list(table.pooled_cosine) == sorted(table.pooled_cosine)
    full = comparison.to_frame()
    assert len(full) == len(comparison.layers) * 16  # the CSV keeps every layer and order


def test_the_completed_sentence_puts_each_adapters_top_token_in(explorer):
    prediction = explorer.predict_masks("Die <mask> ist <mask>.", ["de_DE", "fr_XX"], 3)
    completed = prediction.completed()
    for code in ("de_DE", "fr_XX"):
        first, second = (slot.predictions[code][0].token for slot in prediction.masks)
        assert completed[code] == f"Die {first} ist {second}."


def test_classify_probabilities_have_two_decimals_and_the_model_order(explorer):
    from xmod_explorer.classify import Classification
    from xmod_explorer.ui.classify import probability_frame

    result = Classification(
        "m",
        "t",
        ["bad", "good"],
        ["ja_XX", "de_DE"],
        {"ja_XX": {"bad": 0.0012, "good": 0.9988}, "de_DE": {"bad": 0.5, "good": 0.5}},
        "head",
    )
    frame = probability_frame(result)
    assert frame["bad"].tolist() == ["0.00", "0.50"] and frame["good"].tolist() == ["1.00", "0.50"]


def test_the_lab_summary_says_where_the_probe_is_at_chance():
    from xmod_explorer.classify import TransferResult, TransferRow
    from xmod_explorer.ui.classify import chance_markdown

    def row(language, right):
        return TransferRow(language, 100, right, right, 0, 0, 0.5)

    at_chance = TransferResult("m", "en_XX", ["a", "b"], [row("de_DE", 52), row("fr_XX", 49)])
    assert chance_markdown(at_chance).startswith("**At chance everywhere**")
    mixed = TransferResult("m", "en_XX", ["a", "b"], [row("de_DE", 90), row("fr_XX", 49)])
    text = chance_markdown(mixed)
    assert "above chance" in text and "de\\_DE" in text and "At chance in fr\\_XX" in text  # markdown-escaped


# ----- Fill the mask's examples: each one offered works on the model it is offered for -------------------------


def example_rows(path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines()[1:] if line.strip())


def test_every_example_offered_with_the_mini_model_runs_on_it():
    from xmod_explorer.ui.fill_mask import read_examples

    explorer = Explorer.from_pretrained("mini")
    examples = read_examples(explorer.languages)
    assert len(examples) >= 10, "the mini model should be offered its own examples"
    for text, codes in examples:
        prediction = explorer.predict_masks(text, codes, 5)
        assert prediction.languages == codes and prediction.masks, text


def test_every_shipped_example_is_offered_with_all_81_languages_and_runs(all_languages_dir):
    from xmod_explorer.ui.fill_mask import EXAMPLE_FILES, read_examples

    explorer = Explorer.from_pretrained(str(all_languages_dir))
    examples = read_examples(explorer.languages)
    assert len(examples) == sum(example_rows(path) for path in EXAMPLE_FILES)  # none is hidden from xmod-base
    for text, codes in examples:
        prediction = explorer.predict_masks(text, codes, 5)
        assert prediction.languages == codes and prediction.masks, text
