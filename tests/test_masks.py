"""Agreement between adapters' mask predictions is decided on vocabulary ids, and shown with the text."""

from __future__ import annotations

import pytest

from xmod_explorer import plots
from xmod_explorer.masks import MaskPrediction, MaskSlot, TokenGuess


def prediction(tops: dict[str, tuple[str, int]]) -> MaskPrediction:
    """One mask; each adapter's top guess given as (readable text, id), then two shared runners-up."""
    codes = list(tops)
    slot = MaskSlot(
        3,
        {
            code: [TokenGuess(text, token_id, 0.6), TokenGuess("old", 900, 0.2), TokenGuess("big", 901, 0.1)]
            for code, (text, token_id) in tops.items()
        },
        dict.fromkeys(codes, 1.0),
    )
    return MaskPrediction("m", "The <mask> house.", codes, ["<s>", "The", "<mask>", "house", "."], [slot])


def test_pieces_that_read_alike_are_not_an_agreement():
    """'new' inside a word and '▁new' at a word start both read 'new' but are different predictions."""
    from xmod_explorer.ui.fill_mask import summary_markdown

    alike = prediction({"en_XX": ("new", 501), "de_DE": ("new", 77)})
    agreement = alike.agreement()[0]
    assert not agreement.all_agree and agreement.look_alike
    assert agreement.top_tokens == {"en_XX": "new", "de_DE": "new"}
    assert agreement.top_token_ids == {"en_XX": 501, "de_DE": 77}
    assert agreement.to_dict()["top_token_ids"] == {"en_XX": 501, "de_DE": 77}
    assert agreement.mean_top_k_overlap == pytest.approx(2 / 4)  # ids {501, 900, 901} against {77, 900, 901}
    text = summary_markdown(alike)
    assert "the adapters disagree" in text and "(id 501)" in text and "(id 77)" in text

    same = prediction({"en_XX": ("new", 501), "de_DE": ("new", 501)}).agreement()[0]
    assert same.all_agree and not same.look_alike and same.mean_top_k_overlap == 1.0
    assert "all adapters agree" in summary_markdown(prediction({"en_XX": ("new", 501), "de_DE": ("new", 501)}))


def test_the_many_language_heatmap_keeps_look_alike_pieces_apart(monkeypatch):
    monkeypatch.setattr(plots, "MAX_BAR_PANELS", 1)
    figure = plots.mask_probabilities(prediction({"en_XX": ("new", 501), "de_DE": ("new", 77)}))
    heatmap = figure.data[0]
    assert list(heatmap.y) == ["new (id 501)", "old", "big", "new (id 77)"]
    assert [list(row) for row in heatmap.z] == [[0.6, None], [0.2, 0.2], [0.1, 0.1], [None, 0.6]]
