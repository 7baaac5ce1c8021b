"""Logit lens tab: each <mask> read through the masked-LM head at every layer, under each chosen adapter."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import gradio as gr

from xmod_explorer import plots
from xmod_explorer.engine import Explorer
from xmod_explorer.lens import LogitLens
from xmod_explorer.settings import Settings
from xmod_explorer.ui import links
from xmod_explorer.ui.common import (
    MAX_ADAPTER_COLUMNS,
    ModelHolder,
    csv_file,
    escape,
    gpu,
    language_choices,
    language_dropdown,
    pick_languages,
    text_box,
    ui_errors,
)

PREFERRED = ["en_XX", "de_DE", "fr_XX", "ja_XX", "zh_CN"]
HOW_TO_READ = (
    "**How to read it.** The model's own masked-LM head (the layer that turns the last hidden state into word "
    "probabilities) is applied to **every** layer's state at the mask, under each adapter. In the grid each cell is "
    "that adapter's top word at that layer; green means it is already the word the adapter answers at the last "
    "layer (which is exactly what Fill the mask shows). Layer 0 is the embedding output, before any adapter, so all "
    "adapters agree there. The lines show how probable each adapter's final answer is at each layer. What it does "
    "not show: the head was trained on the last layer only, so an early layer's top word is a reading through a lens "
    "the model never used there, not the model's belief at that point; a late rise says the answer becomes linearly "
    "readable late, not that it is decided late."
)


@dataclass
class LensTab:
    text: gr.Textbox
    languages: gr.Dropdown
    top_k: gr.Slider
    run: gr.Button
    summary: gr.Markdown
    mask_number: gr.Radio
    grid: gr.Plot
    lines: gr.Plot
    table: gr.Dataframe
    download: gr.DownloadButton
    result: gr.State
    copy_link: gr.Button | None = None
    link_box: gr.Textbox | None = None

    def model_fields(self) -> list:
        """The components that change when the Model tab loads another model."""
        return [self.languages]

    def model_updates(self, explorer: Explorer) -> dict:
        """What changes here when the Model tab loads another model."""
        chosen = pick_languages(explorer, PREFERRED)
        return {self.languages: gr.Dropdown(choices=language_choices(explorer), value=chosen, multiselect=True)}

    def link_fields(self) -> dict:
        """The inputs a deep link may set, by parameter name (Copy link writes them back)."""
        return {"text": self.text, "languages": self.languages, "top_k": self.top_k}

    def link_run(self) -> str:
        return self.run.elem_id

    def from_link(self, params: Mapping[str, str], explorer: Explorer, settings: Settings) -> dict:
        """?tab=lens&text=...&languages=en_XX,de_DE&top_k=5"""
        return links.present(
            {
                self.text: links.text(params, "text", settings),
                self.languages: links.languages(params, "languages", explorer, settings),
                self.top_k: links.number(params, "top_k", 1, settings.limits.max_top_k),
            }
        )


def summary_markdown(lens: LogitLens) -> str:
    """Per mask: where the adapters' top words first differ, and from which layer each adapter keeps its answer."""
    lines = [f"_{escape(lens.readout)}_"]
    for number, mask in enumerate(lens.masks, start=1):
        divergence = mask.divergence_layer()
        where = (
            "agree on the top word at every layer"
            if divergence is None
            else f"first give different top words at **layer {divergence}**"
        )
        settled = ", ".join(
            f"{code} **{escape(mask.final[code].token)}** from layer {layer}"
            for code, layer in mask.settled_layer().items()
        )
        lines.append(f"**Mask {number}**: the adapters {where}. Final answers, kept from: {settled}.")
    return "\n\n".join(lines)


def build_lens_tab(holder: ModelHolder, settings: Settings) -> LensTab:
    explorer = holder.explorer
    with gr.Row():
        text = text_box(
            settings,
            "Click the <mask> to save the document.",
            label="Sentence with one or more <mask>",
            elem_id="lens-text",
            scale=3,
        )
        with gr.Column(scale=2):
            languages = language_dropdown(
                explorer,
                settings,
                pick_languages(explorer, PREFERRED),
                label="Language adapters",
                elem_id="lens-languages",
            )
            top_k = gr.Slider(1, settings.limits.max_top_k, value=5, step=1, label="Top-k per layer (table, CSV)")
    run = gr.Button("Read every layer", variant="primary", elem_id="lens-run")
    copy_link, link_box = links.link_row("lens")
    gr.Markdown(HOW_TO_READ)
    summary = gr.Markdown(elem_id="lens-summary")
    mask_number = gr.Radio(choices=[1], value=1, label="Charts for mask", visible=False)
    with gr.Row():
        grid = gr.Plot(label="Top word per layer and adapter", elem_id="lens-grid")
        lines = gr.Plot(label="Probability of each adapter's final answer per layer", elem_id="lens-lines")
    table = gr.Dataframe(
        label="Top word per layer: token (probability); one column per adapter, or with more than "
        f"{MAX_ADAPTER_COLUMNS} adapters one row per adapter and mask",
        interactive=False,
        max_height=360,
        elem_id="lens-table",
    )
    download = gr.DownloadButton("Download CSV (top-k at every layer)", visible=False, size="sm")
    result = gr.State(None)
    tab = LensTab(
        text,
        languages,
        top_k,
        run,
        summary,
        mask_number,
        grid,
        lines,
        table,
        download,
        result,
        copy_link=copy_link,
        link_box=link_box,
    )

    @holder.serving.heavy
    @gpu
    def read(sentence, codes, k):
        lens = holder.explorer.logit_lens(sentence, codes, int(k) if isinstance(k, (int, float)) else k)
        count = len(lens.masks)
        return {
            tab.summary: summary_markdown(lens),
            tab.mask_number: gr.Radio(choices=list(range(1, count + 1)), value=1, visible=count > 1),
            tab.grid: plots.lens_grid(lens, 1),
            tab.table: lens.to_adapter_frame() if len(lens.languages) > MAX_ADAPTER_COLUMNS else lens.to_wide_frame(),
            tab.download: gr.DownloadButton(value=csv_file(lens.to_frame(), "logit_lens"), visible=True),
            tab.result: lens,
        }

    @ui_errors
    def show_mask(number, lens):
        if lens is None or not number:
            return gr.skip()
        number = int(number)
        return {tab.grid: plots.lens_grid(lens, number), tab.lines: plots.lens_final_probability(lens, number)}

    @ui_errors
    def draw_lines(number, lens):
        return gr.skip() if lens is None else plots.lens_final_probability(lens, int(number or 1))

    outputs = [summary, mask_number, grid, table, download, result]
    for trigger in (run.click, text.submit):
        # The second chart comes in a second answer, drawn by the browser in a task of its own (issue 16).
        trigger(read, [text, languages, top_k], outputs, api_visibility="private").success(
            draw_lines, [mask_number, result], lines, api_visibility="private", show_progress="hidden"
        )
    mask_number.input(show_mask, [mask_number, result], [grid, lines], api_visibility="private")
    return tab
