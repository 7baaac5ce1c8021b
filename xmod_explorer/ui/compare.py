"""Compare adapters tab: the same text through several adapters, layer by layer."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from xmod_explorer import plots
from xmod_explorer.settings import Settings
from xmod_explorer.similarity import AdapterComparison
from xmod_explorer.ui.common import ModelHolder, csv_file, gpu, language_dropdown, pick_languages, text_box, ui_errors

PREFERRED = ["en_XX", "de_DE", "fr_XX", "ru_RU", "ja_XX", "zh_CN"]
HOW_TO_READ = {
    "heatmap": "Each cell: similarity of two adapters' sentence vectors (mean over tokens) at the chosen layer. "
    "Layer 0 is the embedding output, before any adapter, so every cell there is 1.",
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
    with gr.Row():
        layer = gr.Slider(0, layers, value=layers, step=1, label="Layer (0 = embeddings)")
        centred = gr.Checkbox(value=False, label="Centred cosine")
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
    table = gr.Dataframe(label="All pairs, all layers", interactive=False, max_height=300)
    download = gr.DownloadButton("Download CSV", visible=False, size="sm")
    result = gr.State(None)
    tab = CompareTab(
        text, languages, reference, run, layer, centred, heatmap, lines, token_language, tokens, table, download, result
    )

    def figures(comparison: AdapterComparison, at_layer, use_centred, token_code) -> dict:
        at_layer = min(int(at_layer), comparison.layers[-1])
        if token_code not in comparison.languages:
            token_code = comparison.languages[-1]
        return {
            tab.heatmap: plots.adapter_heatmap(comparison, at_layer, bool(use_centred)),
            tab.lines: plots.reference_lines(comparison, bool(use_centred)),
            tab.tokens: plots.token_shift_heatmap(comparison, token_code, bool(use_centred)),
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
            **figures(comparison, at_layer, use_centred, token_code),
            tab.reference: gr.Dropdown(choices=comparison.languages, value=comparison.reference),
            tab.token_language: gr.Dropdown(choices=comparison.languages, value=token_code),
            tab.layer: gr.Slider(maximum=comparison.layers[-1]),
            tab.table: comparison.to_frame().round(4),
            tab.download: gr.DownloadButton(value=csv_file(comparison.to_frame(), "adapter_similarity"), visible=True),
            tab.result: comparison,
        }

    @ui_errors
    def redraw(comparison, at_layer, use_centred, token_code):
        if comparison is None:
            return gr.skip()
        return figures(comparison, at_layer, use_centred, token_code)

    def follow_choice(codes, reference_code):
        codes = list(codes or [])
        return gr.Dropdown(
            choices=codes, value=reference_code if reference_code in codes else (codes[0] if codes else None)
        )

    inputs = [text, languages, reference, layer, centred, token_language]
    outputs = [heatmap, lines, tokens, reference, token_language, layer, table, download, result]
    for trigger in (run.click, text.submit):
        trigger(compare, inputs, outputs, api_visibility="private")
    languages.change(follow_choice, [languages, reference], reference, api_visibility="private")
    for control in (layer, centred, token_language):
        control.change(
            redraw, [result, layer, centred, token_language], [heatmap, lines, tokens], api_visibility="private"
        )
    # A new reference changes the numbers themselves, so it recomputes.
    reference.input(compare, inputs, outputs, api_visibility="private")
    return tab
