"""Mix two adapters tab: every layer's language adapter output becomes (1 - alpha) * a + alpha * b; the
predictions at the masks as alpha goes from 0 to 1."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import gradio as gr

from xmod_explorer import plots
from xmod_explorer.engine import MAX_MIX_STEPS, Explorer
from xmod_explorer.lens import AdapterMix
from xmod_explorer.settings import Settings
from xmod_explorer.ui import links
from xmod_explorer.ui.common import (
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

PREFERRED = ["en_XX", "de_DE", "fr_XX", "es_XX"]
HOW_TO_READ = (
    "**How to read it.** In every layer the language adapter's output is replaced by a blend: (1 - alpha) times "
    "adapter A's output plus alpha times adapter B's, computed on the same input; everything else (the shared "
    "weights, the residual, the LayerNorms) is the model's own. alpha = 0 is adapter A alone and alpha = 1 adapter B "
    "alone, exactly as in Fill the mask. Each line follows one word that is the top prediction somewhere along the "
    "way; move the alpha slider to see the full top-k there. What it does not show: the model was never trained on "
    "blends, so the middle of the path is an experiment, not a language the model knows; a sudden switch says the two "
    "adapters pull the mask towards different words, not that there is a language halfway between them. Mixing "
    "outputs is not averaging weights (a different adapter)."
)


@dataclass
class MixTab:
    text: gr.Textbox
    language_a: gr.Dropdown
    language_b: gr.Dropdown
    steps: gr.Slider
    top_k: gr.Slider
    run: gr.Button
    summary: gr.Markdown
    mask_number: gr.Radio
    chart: gr.Plot
    alpha: gr.Slider
    table: gr.Dataframe
    download: gr.DownloadButton
    result: gr.State
    copy_link: gr.Button | None = None
    link_box: gr.Textbox | None = None

    def model_fields(self) -> list:
        """The components that change when the Model tab loads another model."""
        return [self.language_a, self.language_b]

    def model_updates(self, explorer: Explorer) -> dict:
        a, b = pick_languages(explorer, PREFERRED, count=2)
        choices = language_choices(explorer)
        return {
            self.language_a: gr.Dropdown(choices=choices, value=a),
            self.language_b: gr.Dropdown(choices=choices, value=b),
        }

    def link_fields(self) -> dict:
        """The inputs a deep link may set, by parameter name (Copy link writes them back)."""
        return {
            "text": self.text,
            "a": self.language_a,
            "b": self.language_b,
            "steps": self.steps,
            "top_k": self.top_k,
        }

    def link_run(self) -> str:
        return self.run.elem_id

    def from_link(self, params: Mapping[str, str], explorer: Explorer, settings: Settings) -> dict:
        """?tab=mix&text=...&a=en_XX&b=de_DE&steps=11&top_k=5"""
        return links.present(
            {
                self.text: links.text(params, "text", settings),
                self.language_a: links.language(params, "a", explorer),
                self.language_b: links.language(params, "b", explorer),
                self.steps: links.number(params, "steps", 2, MAX_MIX_STEPS),
                self.top_k: links.number(params, "top_k", 1, settings.limits.max_top_k),
            }
        )


def summary_markdown(mix: AdapterMix) -> str:
    lines = []
    for number, mask in enumerate(mix.masks, start=1):
        first, last = mask.predictions[0][0], mask.predictions[-1][0]
        changes = mix.changes(number)
        where = (
            "the top word never changes"
            if not changes
            else "the top word changes at alpha " + ", ".join(f"{alpha:.2f}" for alpha in changes)
        )
        lines.append(
            f"**Mask {number}**: {escape(mix.language_a)} alone says **{escape(first.token)}**, "
            f"{escape(mix.language_b)} alone **{escape(last.token)}**; along the way {where}."
        )
    return "\n\n".join(lines)


def build_mix_tab(holder: ModelHolder, settings: Settings) -> MixTab:
    explorer = holder.explorer
    a, b = pick_languages(explorer, PREFERRED, count=2)
    with gr.Row():
        text = text_box(
            settings,
            "Click the <mask> to save the document.",
            label="Sentence with one or more <mask>",
            elem_id="mix-text",
            scale=3,
        )
        with gr.Column(scale=2):
            with gr.Row():
                language_a = language_dropdown(
                    explorer, settings, a, label="Adapter A (alpha = 0)", elem_id="mix-a", multiselect=False
                )
                language_b = language_dropdown(
                    explorer, settings, b, label="Adapter B (alpha = 1)", elem_id="mix-b", multiselect=False
                )
            with gr.Row():
                steps = gr.Slider(2, MAX_MIX_STEPS, value=11, step=1, label="Steps from A to B")
                top_k = gr.Slider(1, settings.limits.max_top_k, value=5, step=1, label="Top-k")
    run = gr.Button("Mix", variant="primary", elem_id="mix-run")
    copy_link, link_box = links.link_row("mix")
    gr.Markdown(HOW_TO_READ)
    summary = gr.Markdown(elem_id="mix-summary")
    mask_number = gr.Radio(choices=[1], value=1, label="Chart for mask", visible=False)
    chart = gr.Plot(label="Probability of each top word across alpha", elem_id="mix-chart")
    alpha = gr.Slider(0, 1, value=0, step=0.1, label="alpha (0 = A, 1 = B): the table below", elem_id="mix-alpha")
    table = gr.Dataframe(label="Top-k at this alpha", interactive=False, max_height=320, elem_id="mix-table")
    download = gr.DownloadButton("Download CSV (every alpha)", visible=False, size="sm")
    result = gr.State(None)
    tab = MixTab(
        text,
        language_a,
        language_b,
        steps,
        top_k,
        run,
        summary,
        mask_number,
        chart,
        alpha,
        table,
        download,
        result,
        copy_link=copy_link,
        link_box=link_box,
    )

    def view(mix: AdapterMix, number, at) -> dict:
        number = int(number) if number else 1
        frame = mix.to_frame(alpha=at)
        return {
            tab.chart: plots.mix_lines(mix, number, at),
            tab.table: frame[frame["mask"] == number].drop(columns=["mask", "position"]).round(4),
        }

    @holder.serving.heavy
    @gpu
    def mix_adapters(sentence, code_a, code_b, count, k):
        mix = holder.explorer.interpolate(sentence, code_a, code_b, count, k)  # the engine checks both numbers
        masks = len(mix.masks)
        frame = mix.to_frame(alpha=0.0)
        return {
            tab.table: frame[frame["mask"] == 1].drop(columns=["mask", "position"]).round(4),
            tab.summary: summary_markdown(mix),
            tab.mask_number: gr.Radio(choices=list(range(1, masks + 1)), value=1, visible=masks > 1),
            tab.alpha: gr.Slider(value=0.0, step=1 / (len(mix.alphas) - 1)),
            tab.download: gr.DownloadButton(value=csv_file(mix.to_frame(), "adapter_mix"), visible=True),
            tab.result: mix,
        }

    @ui_errors
    def redraw(mix, number, at):
        if mix is None:
            return gr.skip()
        return view(mix, number, at)

    @ui_errors
    def draw(mix, number, at):
        return gr.skip() if mix is None else plots.mix_lines(mix, int(number or 1), at)

    outputs = [table, summary, mask_number, alpha, download, result]
    for trigger in (run.click, text.submit):
        # The chart comes in a second answer, drawn by the browser in a task of its own (issue 16).
        trigger(mix_adapters, [text, language_a, language_b, steps, top_k], outputs, api_visibility="private").success(
            draw, [result, mask_number, alpha], chart, api_visibility="private", show_progress="hidden"
        )
    for control in (alpha, mask_number):
        control.input(redraw, [result, mask_number, alpha], [chart, table], api_visibility="private")
    return tab
