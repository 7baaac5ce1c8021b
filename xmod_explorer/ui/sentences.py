"""Across languages tab: each sentence through its own language's adapter, compared per layer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from xmod_explorer import plots
from xmod_explorer.datasets import PARALLEL_SET
from xmod_explorer.engine import Explorer
from xmod_explorer.settings import Settings
from xmod_explorer.similarity import SentenceComparison
from xmod_explorer.ui import links
from xmod_explorer.ui.common import ModelHolder, csv_file, escape, gpu, summarised, ui_errors

SCORES_LABEL = "Language pairs at this layer (the CSV has every layer)"
CKA_HOW_TO_READ = (
    "**How to read the right-hand chart.** One row per language pair, one column per layer. Left panel: linear CKA "
    "between the two languages' sets of translations (1 = the same geometry, 0 = unrelated); with few sentences the "
    "debiased estimate can fall below 0 by chance, so read a small negative value as 0. Right panel: how much more "
    "similar translations are than randomly re-paired sentences (cosine; above 0 = translations are closer, below 0 "
    "= farther). A * marks p < 0.05 against the re-pairings; hover shows each number and the re-pairings' 95 % band. "
    "Past 80 language pairs the chart is a language x language grid at the chosen layer (the same two values per "
    "pair, hover names the pair); the CSV has every layer with the p-values and bands."
)
PREFERRED = ["en_XX", "de_DE", "fr_XX", "ru_RU", "es_XX", "ja_XX"]
EXPLAIN = (
    "Write sentences in several languages; each runs through **its own** language adapter. For a parallel set "
    "(the same number of sentences per language, the i-th sentence of each language a translation of the others) the "
    "chart shows, per layer and language pair, linear CKA (debiased; it compares the geometry of whole sets of "
    "sentences, with each language's vectors centred on that language's own mean) and the mean cosine of translation "
    "pairs (uncentred), each tested against the sentences re-paired at random (a permutation test over every "
    "pairing, or 1,000 random ones when there are more). A * in a cell means p < 0.05 (one-sided: translations score "
    "higher than chance pairings); hover shows the middle 95 % of the re-pairings' values, inside which the data "
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
    copy_link: gr.Button | None = None
    link_box: gr.Textbox | None = None

    def link_fields(self) -> dict:
        """The inputs a deep link may set, by parameter name (Copy link writes them back)."""
        return {"rows": self.table, "layer": self.layer, "centred": self.centred}

    def link_run(self) -> str:
        return self.run.elem_id

    def from_link(self, params: Mapping[str, str], explorer: Explorer, settings: Settings) -> dict:
        """?tab=sentences&rows=...&layer=3&centred=1 (rows: lines of code TAB sentence), or
        ?tab=sentences&languages=en_XX,de_DE,fr_XX: the bundled parallel sentences in those languages."""
        table = links.rows(params, "rows", explorer, settings)
        if table is None and params.get("languages"):
            codes = links.languages(params, "languages", explorer, settings)
            if codes:
                table = default_pairs(codes, count=len(codes), preferred=codes)
                if table.empty:
                    links.dropped("languages", "the bundled parallel sentences have none of these languages")
                    table = None
        return links.present(
            {
                self.table: table,
                self.layer: links.number(params, "layer", 0, explorer.info().layers),
                self.centred: links.flag(params, "centred"),
            }
        )


def default_pairs(languages: list[str], count: int = 4, preferred: list[str] = PREFERRED) -> pd.DataFrame:
    """The project's parallel example set, limited to languages the model has (the preferred ones first)."""
    frame = pd.read_csv(PARALLEL_SET, sep="\t", dtype=str)
    chosen = [code for code in preferred if code in languages][:count]
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
    copy_link, link_box = links.link_row("sentences")
    with gr.Row():
        layer = gr.Slider(0, layers, value=layers, step=1, label="Layer (0 = embeddings)")
        centred = gr.Checkbox(
            value=False, label="Centred cosine (subtract the model's mean sentence vector, as in Compare adapters)"
        )
    with gr.Row():
        heatmap = gr.Plot(label="Sentence similarity at one layer", elem_id="sentences-heatmap")
        cka = gr.Plot(label="Translations vs random re-pairings, per layer", elem_id="sentences-cka")
    gr.Markdown(CKA_HOW_TO_READ)
    notes = gr.Markdown()
    scores = gr.Dataframe(
        label=SCORES_LABEL,
        interactive=False,
        max_height=300,
        visible=False,
        elem_id="sentences-scores",
    )
    download = gr.DownloadButton("Download CSV", visible=False, size="sm")
    result = gr.State(None)
    tab = SentencesTab(table, run, layer, centred, heatmap, cka, notes, scores, download, result, copy_link, link_box)

    @holder.serving.heavy
    @gpu
    def compare(rows, at_layer, use_centred):
        comparison = holder.explorer.compare_sentences(rows)
        at_layer = min(int(at_layer), comparison.layers[-1])
        frame = comparison.to_frame()
        return {
            tab.heatmap: plots.sentence_heatmap(comparison, at_layer, bool(use_centred)),
            tab.notes: "\n\n".join(f"Note: {escape(note)}" for note in comparison.notes),
            tab.download: gr.DownloadButton(value=csv_file(frame, "sentence_similarity"), visible=not frame.empty),
            tab.layer: gr.Slider(maximum=comparison.layers[-1], value=at_layer),
            tab.result: comparison,
        }

    def layer_view(comparison: SentenceComparison, at_layer, use_centred) -> dict:
        at_layer = min(int(at_layer), comparison.layers[-1])
        frame = comparison.to_frame()
        return {
            tab.heatmap: plots.sentence_heatmap(comparison, at_layer, bool(use_centred)),
            tab.scores: summarised(frame[frame.layer == at_layer].round(4), SCORES_LABEL, visible=not frame.empty),
        }

    @ui_errors
    def redraw(comparison: SentenceComparison | None, at_layer, use_centred):
        return gr.skip() if comparison is None else layer_view(comparison, at_layer, use_centred)

    @ui_errors
    def draw_scores(comparison: SentenceComparison | None, at_layer):
        if comparison is None:
            return gr.skip()
        frame = comparison.to_frame()
        at_layer = min(int(at_layer), comparison.layers[-1])
        return summarised(frame[frame.layer == at_layer].round(4), SCORES_LABEL, visible=not frame.empty)

    def cka_view(comparison: SentenceComparison, at_layer):
        if not comparison.scores:
            return None
        pairs = len({(score.language_a, score.language_b) for score in comparison.scores})
        if pairs > plots.MAX_LABELLED_ROWS:  # a compact language x language grid at the chosen layer
            return plots.cka_grid(comparison, min(int(at_layer), comparison.layers[-1]))
        return plots.cka_heatmap(comparison)

    @ui_errors
    def draw_cka(comparison: SentenceComparison | None, at_layer):
        if comparison is None:
            return gr.skip()
        return gr.Plot(value=cka_view(comparison, at_layer), visible=bool(comparison.scores))

    @ui_errors
    def redraw_cka(comparison: SentenceComparison | None, at_layer):
        """Only the compact grid depends on the layer."""
        if (
            comparison is None
            or len({(s.language_a, s.language_b) for s in comparison.scores}) <= plots.MAX_LABELLED_ROWS
        ):
            return gr.skip()
        return cka_view(comparison, at_layer)

    # The table and the CKA chart come in answers of their own, each drawn by the browser in a task of its own
    # (issue 16); the controls redraw on user input only, not on the change the answer itself makes.
    comparing = run.click(
        compare,
        [table, layer, centred],
        [heatmap, notes, download, layer, result],
        api_visibility="private",
    )
    quiet = {"api_visibility": "private", "show_progress": "hidden"}
    comparing.success(draw_scores, [result, layer], scores, **quiet).success(draw_cka, [result, layer], cka, **quiet)
    stop.click(None, None, None, cancels=[comparing], api_visibility="private")
    for control in (layer, centred):
        control.input(redraw, [result, layer, centred], [heatmap, scores], api_visibility="private")
    layer.input(redraw_cka, [result, layer], cka, **quiet)
    return tab
