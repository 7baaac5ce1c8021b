"""Compare adapters tab: the same text through several adapters, layer by layer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import gradio as gr

from xmod_explorer import plots
from xmod_explorer.engine import Explorer
from xmod_explorer.settings import Settings
from xmod_explorer.similarity import AdapterComparison
from xmod_explorer.ui import links
from xmod_explorer.ui.common import (
    ModelHolder,
    csv_file,
    gpu,
    language_dropdown,
    pick_languages,
    summarised,
    text_box,
    ui_errors,
)

PAIRS_LABEL = "Pairs of adapters at this layer, least similar first (the CSV has every layer)"
QUIET = {"api_visibility": "private", "show_progress": "hidden"}
PREFERRED = ["en_XX", "de_DE", "fr_XX", "ru_RU", "ja_XX", "zh_CN"]
HOW_TO_READ = {
    "heatmap": "Each cell: similarity of two adapters' sentence vectors (mean over tokens) at the chosen layer. "
    "Layer 0 is the embedding output, before any adapter, so every cell there is 1. A negative value (possible with "
    "the centred cosine) means the two adapters move the sentence in opposite directions from the average.",
    "lines": "How similar each adapter's sentence vector stays to the reference adapter's, layer after layer. "
    "A line that drops early means that adapter changes the representation early.",
    "tokens": "Rows are tokens, columns layers; darker = this adapter has moved the token further from where the "
    "reference adapter puts it (1 - cosine).",
    "centred": "Raw cosine between transformer states is high even for unrelated inputs (a few large dimensions "
    "dominate). Centred: one fixed vector per layer is subtracted from every state first, this model's mean sentence "
    "vector, computed once from the project's reference sentences (`assets/examples/parallel.tsv`, each through its "
    "own language's adapter). It does not depend on which adapters you choose, so a pair's centred value is the same "
    "in any selection; the sentence heatmap, the lines and the token view all subtract the same vector.",
}


@dataclass
class CompareTab:
    text: gr.Textbox
    languages: gr.Dropdown
    reference: gr.Dropdown
    run: gr.Button
    layer: gr.Slider
    centred: gr.Checkbox
    heatmap: gr.Plot
    lines: gr.Plot
    token_language: gr.Dropdown
    tokens: gr.Plot
    table: gr.Dataframe
    download: gr.DownloadButton
    result: gr.State
    copy_link: gr.Button | None = None
    link_box: gr.Textbox | None = None

    def link_fields(self) -> dict:
        """The inputs a deep link may set, by parameter name (Copy link writes them back)."""
        return {
            "text": self.text,
            "languages": self.languages,
            "reference": self.reference,
            "layer": self.layer,
            "centred": self.centred,
        }

    def link_run(self) -> str:
        return self.run.elem_id

    def from_link(self, params: Mapping[str, str], explorer: Explorer, settings: Settings) -> dict:
        """?tab=compare&text=...&languages=en_XX,de_DE,fr_XX&reference=de_DE&layer=3&centred=1"""
        codes = links.languages(params, "languages", explorer, settings)
        reference = links.language(params, "reference", explorer)
        values = {
            self.text: links.text(params, "text", settings),
            self.layer: links.number(params, "layer", 0, explorer.info().layers),
            self.centred: links.flag(params, "centred"),
        }
        if codes is not None:
            chosen = reference if reference in codes else codes[0]
            values[self.languages] = codes
            values[self.reference] = gr.Dropdown(choices=codes, value=chosen)
        elif reference is not None:
            links.dropped("reference", "give it together with the languages it is one of")
        return links.present(values)


def build_compare_tab(holder: ModelHolder, settings: Settings) -> CompareTab:
    explorer = holder.explorer
    layers = explorer.info().layers
    chosen = pick_languages(explorer, PREFERRED, count=5)
    with gr.Row():
        text = text_box(
            settings,
            "Every language adapter sees the same sentence.",
            label="Text (no mask needed)",
            elem_id="compare-text",
            scale=3,
        )
        with gr.Column(scale=2):
            languages = language_dropdown(
                explorer, settings, chosen, label="Language adapters", elem_id="compare-languages"
            )
            reference = gr.Dropdown(choices=chosen, value=chosen[0], label="Reference adapter")
    run = gr.Button("Compare", variant="primary", elem_id="compare-run")
    copy_link, link_box = links.link_row("compare")
    with gr.Row():
        layer = gr.Slider(0, layers, value=layers, step=1, label="Layer (0 = embeddings)")
        centred = gr.Checkbox(value=False, label="Centred cosine", elem_id="compare-centred")
    gr.Markdown(HOW_TO_READ["centred"])
    with gr.Row():
        with gr.Column():
            heatmap = gr.Plot(label="Adapter similarity at one layer", elem_id="compare-heatmap")
            gr.Markdown(HOW_TO_READ["heatmap"])
        with gr.Column():
            lines = gr.Plot(label="Similarity to the reference across layers", elem_id="compare-lines")
            gr.Markdown(HOW_TO_READ["lines"])
    token_language = gr.Dropdown(choices=chosen, value=chosen[-1], label="Adapter for the token view")
    tokens = gr.Plot(label="Tokens x layers", elem_id="compare-tokens")
    gr.Markdown(HOW_TO_READ["tokens"])
    table = gr.Dataframe(
        label=PAIRS_LABEL,
        interactive=False,
        max_height=300,
        elem_id="compare-table",
    )
    download = gr.DownloadButton("Download CSV", visible=False, size="sm")
    result = gr.State(None)
    tab = CompareTab(
        text,
        languages,
        reference,
        run,
        layer,
        centred,
        heatmap,
        lines,
        token_language,
        tokens,
        table,
        download,
        result,
        copy_link,
        link_box,
    )

    def at(comparison: AdapterComparison, at_layer) -> int:
        return min(int(at_layer), comparison.layers[-1])

    def layer_view(comparison: AdapterComparison, at_layer, use_centred) -> dict:
        at_layer = at(comparison, at_layer)
        return {
            tab.heatmap: plots.adapter_heatmap(comparison, at_layer, bool(use_centred)),
            tab.table: summarised(comparison.pairs_at(at_layer).round(4), PAIRS_LABEL),
        }

    @holder.serving.heavy
    @gpu
    def compare(sentence, codes, reference_code, at_layer, use_centred, token_code):
        codes = list(codes or [])
        reference_code = reference_code if reference_code in codes else (codes[0] if codes else None)
        comparison = holder.explorer.compare_adapters(sentence, codes, reference_code)
        others = [c for c in comparison.languages if c != comparison.reference] or comparison.languages
        token_code = token_code if token_code in others else others[0]
        return {
            **layer_view(comparison, at_layer, use_centred),
            tab.reference: gr.Dropdown(choices=comparison.languages, value=comparison.reference),
            tab.token_language: gr.Dropdown(choices=comparison.languages, value=token_code),
            tab.layer: gr.Slider(maximum=comparison.layers[-1], value=at(comparison, at_layer)),
            tab.download: gr.DownloadButton(value=csv_file(comparison.to_frame(), "adapter_similarity"), visible=True),
            tab.result: comparison,
        }

    @ui_errors
    def redraw_layer(comparison, at_layer, use_centred):
        return gr.skip() if comparison is None else layer_view(comparison, at_layer, use_centred)

    @ui_errors
    def redraw_lines(comparison, use_centred):
        return gr.skip() if comparison is None else plots.reference_lines(comparison, bool(use_centred))

    @ui_errors
    def redraw_tokens(comparison, use_centred, token_code):
        if comparison is None:
            return gr.skip()
        if token_code not in comparison.languages:
            token_code = comparison.languages[-1]
        return plots.token_shift_heatmap(comparison, token_code, bool(use_centred))

    def follow_choice(codes, reference_code):
        codes = list(codes or [])
        return gr.Dropdown(
            choices=codes, value=reference_code if reference_code in codes else (codes[0] if codes else None)
        )

    # One chart per answer from the server: the browser draws each in its own task (issue 16: three Plotly charts
    # drawn in one task held the page for over half a second). The controls redraw on user input only (.input),
    # not on .change, which the compare answer itself would trigger and so draw every chart twice.
    def then_draw(event, with_layer: bool):
        if with_layer:
            event = event.success(redraw_layer, [result, layer, centred], [heatmap, table], **QUIET)
        event.success(redraw_lines, [result, centred], lines, **QUIET).success(
            redraw_tokens, [result, centred, token_language], tokens, **QUIET
        )

    inputs = [text, languages, reference, layer, centred, token_language]
    outputs = [heatmap, table, reference, token_language, layer, download, result]
    for trigger in (run.click, text.submit, reference.input):  # a new reference changes the numbers: recompute
        then_draw(trigger(compare, inputs, outputs, api_visibility="private"), with_layer=False)
    languages.change(follow_choice, [languages, reference], reference, api_visibility="private")
    layer.input(redraw_layer, [result, layer, centred], [heatmap, table], **QUIET)
    then_draw(centred.input(redraw_layer, [result, layer, centred], [heatmap, table], **QUIET), with_layer=False)
    token_language.input(redraw_tokens, [result, centred, token_language], tokens, **QUIET)
    return tab
