"""Across languages tab: each sentence through its own language's adapter, compared per layer."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import pandas as pd

from xmod_explorer import plots
from xmod_explorer.datasets import PARALLEL_SET
from xmod_explorer.settings import Settings
from xmod_explorer.similarity import SentenceComparison
from xmod_explorer.ui.common import ModelHolder, csv_file, escape, gpu, ui_errors

PREFERRED = ["en_XX", "de_DE", "fr_XX", "ru_RU", "es_XX", "ja_XX"]
EXPLAIN = (
    "Write sentences in several languages; each runs through **its own** language adapter. For a parallel set "
    "(the same number of sentences per language, the i-th sentence of each language a translation of the others) the "
    "chart shows, per layer and language pair, linear CKA (debiased; it compares the geometry of whole sets of "
    "sentences, with each language's vectors centred on that language's own mean) and the mean cosine of translation "
    "pairs (uncentred). Each line runs over a shaded band: the middle 95 % of the same number when the sentences are "
    "re-paired at random (a permutation test over every pairing, or 1,000 random ones when there are more). A filled "
    "marker means p < 0.05 (one-sided: translations score higher than chance pairings); inside the band the data "
    "cannot tell a finding from chance. With fewer than 5 sentences per language the test can show little. The "
    "centred heatmap subtracts the model's mean sentence vector, the same one in every tab."
)


@dataclass
class SentencesTab:
    table: gr.Dataframe
    run: gr.Button
    layer: gr.Slider
    centred: gr.Checkbox
    heatmap: gr.Plot
    cka: gr.Plot
    notes: gr.Markdown
    scores: gr.Dataframe
    download: gr.DownloadButton
    result: gr.State


def default_pairs(languages: list[str], count: int = 4) -> pd.DataFrame:
    """The project's parallel example set, limited to languages the model has."""
    frame = pd.read_csv(PARALLEL_SET, sep="\t", dtype=str)
    chosen = [code for code in PREFERRED if code in languages][:count]
    return frame[frame.language.isin(chosen)].reset_index(drop=True)


def build_sentences_tab(holder: ModelHolder, settings: Settings) -> SentencesTab:
    explorer = holder.explorer
    layers = explorer.info().layers
    gr.Markdown(EXPLAIN)
    table = gr.Dataframe(
        value=default_pairs(explorer.languages),
        headers=["language", "text"],
        datatype=["str", "str"],
        interactive=True,
        label="Sentences: language code and text (edit, add or delete rows)",
        max_height=420,
        elem_id="sentences-table",
    )
    with gr.Row():
        run = gr.Button("Compare sentences", variant="primary", elem_id="sentences-run", scale=4)
        stop = gr.Button("Stop", variant="stop", elem_id="sentences-stop", scale=1)
    with gr.Row():
        layer = gr.Slider(0, layers, value=layers, step=1, label="Layer (0 = embeddings)")
        centred = gr.Checkbox(
            value=False, label="Centred cosine (subtract the model's mean sentence vector, as in Compare adapters)"
        )
    with gr.Row():
        heatmap = gr.Plot(label="Sentence similarity at one layer", elem_id="sentences-heatmap")
        cka = gr.Plot(label="Translations vs random re-pairings, per layer", elem_id="sentences-cka")
    notes = gr.Markdown()
    scores = gr.Dataframe(label="Per layer and language pair", interactive=False, max_height=300)
    download = gr.DownloadButton("Download CSV", visible=False, size="sm")
    result = gr.State(None)
    tab = SentencesTab(table, run, layer, centred, heatmap, cka, notes, scores, download, result)

    @holder.serving.heavy
    @gpu
    def compare(rows, at_layer, use_centred):
        comparison = holder.explorer.compare_sentences(rows)
        at_layer = min(int(at_layer), comparison.layers[-1])
        frame = comparison.to_frame()
        return {
            tab.heatmap: plots.sentence_heatmap(comparison, at_layer, bool(use_centred)),
            tab.cka: plots.cka_lines(comparison) if comparison.scores else None,
            tab.notes: "\n\n".join(f"Note: {escape(note)}" for note in comparison.notes),
            tab.scores: frame.round(4),
            tab.download: gr.DownloadButton(value=csv_file(frame, "sentence_similarity"), visible=not frame.empty),
            tab.layer: gr.Slider(maximum=comparison.layers[-1]),
            tab.result: comparison,
        }

    @ui_errors
    def redraw(comparison: SentenceComparison | None, at_layer, use_centred):
        if comparison is None:
            return gr.skip()
        return plots.sentence_heatmap(comparison, min(int(at_layer), comparison.layers[-1]), bool(use_centred))

    comparing = run.click(
        compare,
        [table, layer, centred],
        [heatmap, cka, notes, scores, download, layer, result],
        api_visibility="private",
    )
    stop.click(None, None, None, cancels=[comparing], api_visibility="private")
    for control in (layer, centred):
        control.change(redraw, [result, layer, centred], heatmap, api_visibility="private")
    return tab
