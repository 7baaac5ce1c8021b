"""Fill the mask tab: one sentence, several language adapters, predictions side by side."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from xmod_explorer import plots
from xmod_explorer.defaults import ASSETS
from xmod_explorer.engine import Explorer
from xmod_explorer.masks import MaskPrediction
from xmod_explorer.settings import Settings
from xmod_explorer.ui import links
from xmod_explorer.ui.common import (
    MAX_ADAPTER_COLUMNS,
    ModelHolder,
    csv_file,
    escape,
    gpu,
    language_dropdown,
    pick_languages,
    text_box,
    ui_errors,
)

PREFERRED = ["en_XX", "de_DE", "fr_XX", "ja_XX"]
EXAMPLE_FILES = [ASSETS / "mini_examples.tsv", ASSETS / "examples" / "fill_mask.tsv"]
EXPLAIN = (
    "Each column is one language adapter run on the **same** sentence. The probability is the softmax over the "
    "whole vocabulary at that mask. Agreement: do the adapters' top tokens match (the same vocabulary piece, not just "
    "the same text), how much do their top-k lists overlap (Jaccard, 1 = identical), and how unsure each is (entropy "
    "in bits: 1 bit = a coin flip between two words)."
)


TABLE_LABEL = (
    f"Predictions: token (probability); one column per adapter, or past {MAX_ADAPTER_COLUMNS} adapters one row per "
    "adapter and mask"
)


@dataclass
class FillMaskTab:
    text: gr.Textbox
    languages: gr.Dropdown
    top_k: gr.Slider
    run: gr.Button
    summary: gr.Markdown
    table: gr.Dataframe
    mask_number: gr.Radio
    chart: gr.Plot
    download: gr.DownloadButton
    result: gr.State
    copy_link: gr.Button | None = None
    link_box: gr.Textbox | None = None

    def link_fields(self) -> dict:
        """The inputs a deep link may set, by parameter name (Copy link writes them back)."""
        return {"text": self.text, "languages": self.languages, "top_k": self.top_k}

    def link_run(self) -> str:
        return self.run.elem_id

    def from_link(self, params: Mapping[str, str], explorer: Explorer, settings: Settings) -> dict:
        """?tab=fill&text=...&languages=de_DE,fr_XX&top_k=5 (languages=auto: the adapter that fits best)"""
        auto = params.get("languages", "").strip().lower() == "auto"
        return links.present(
            {
                self.text: links.text(params, "text", settings),
                self.languages: ["auto"] if auto else links.languages(params, "languages", explorer, settings),
                self.top_k: links.number(params, "top_k", 1, settings.limits.max_top_k),
            }
        )


def read_examples(languages: list[str]) -> list[list]:
    """Example rows (text, languages) whose languages the loaded model has, from the project's example files."""
    rows = []
    for path in EXAMPLE_FILES:
        if not Path(path).exists():
            continue
        with open(path, encoding="utf-8", newline="") as handle:
            for record in csv.DictReader(handle, delimiter="\t"):
                codes = [
                    c.strip() for c in (record.get("languages") or record.get("language") or "").split(",") if c.strip()
                ]
                text = record.get("text", "")
                if text and codes and all(code in languages for code in codes):
                    rows.append([text, codes])
    return rows


def summary_markdown(prediction: MaskPrediction) -> str:
    """A short agreement summary per mask; every token is escaped."""
    many = len(prediction.languages) > MAX_ADAPTER_COLUMNS
    completed = prediction.completed()
    if many:  # one line per distinct sentence, with the adapters that wrote it
        same: dict[str, list[str]] = {}
        for code, sentence in completed.items():
            same.setdefault(sentence, []).append(code)
        filled = "\n".join(
            f"- {escape(sentence)} ({len(codes)}: {escape(', '.join(codes))})" for sentence, codes in same.items()
        )
    else:
        filled = "\n".join(f"- {escape(code)}: {escape(sentence)}" for code, sentence in completed.items())
    lines = [f"**The sentence completed by each adapter** (its top-1 token at every mask):\n\n{filled}"]
    if prediction.auto_language:
        lines.append(
            f"**auto** chose **{escape(prediction.auto_language)}**: the adapter under which the model finds the text "
            "most likely (pseudo-log-likelihood; see the Which language? tab)."
        )
    for number, agreement in enumerate(prediction.agreement(), start=1):
        verdict = "all adapters agree" if agreement.all_agree else "the adapters disagree"
        if agreement.look_alike:
            verdict += " (some top tokens read alike but are different vocabulary pieces: see the ids)"
        tops = ", ".join(
            f"{code} **{escape(token)}**" + (f" (id {agreement.top_token_ids[code]})" if agreement.look_alike else "")
            for code, token in agreement.top_tokens.items()
        )
        if many:  # each top token once, with the adapters that chose it
            chosen: dict[int, list[str]] = {}
            for code, token_id in agreement.top_token_ids.items():
                chosen.setdefault(token_id, []).append(code)
            tops = "; ".join(
                f"**{escape(agreement.top_tokens[codes[0]])}**"
                + (f" (id {token_id})" if agreement.look_alike else "")
                + f" from {len(codes)}: {escape(', '.join(codes))}"
                for token_id, codes in chosen.items()
            )
        entropy = ", ".join(f"{code} {bits:.2f}" for code, bits in agreement.entropy_bits.items())
        lines.append(
            f"**Mask {number}**: {verdict}. Top tokens: {tops}. "
            f"Mean top-k overlap: {agreement.mean_top_k_overlap:.2f}. Entropy (bits): {entropy}."
        )
    return "\n\n".join(lines)


def build_fill_mask_tab(holder: ModelHolder, settings: Settings) -> FillMaskTab:
    explorer = holder.explorer
    defaults = pick_languages(explorer, PREFERRED)
    examples = read_examples(explorer.languages)
    with gr.Row():
        with gr.Column(scale=3):
            text = text_box(
                settings,
                examples[0][0] if examples else "The <mask> of the city is very old.",
                label="Sentence with one or more <mask>",
                elem_id="fill-text",
            )
        with gr.Column(scale=2):
            languages = language_dropdown(
                explorer,
                settings,
                examples[0][1] if examples else defaults,
                label="Language adapters (type to search; auto = the one that fits the text best)",
                elem_id="fill-languages",
                auto=True,
            )
            top_k = gr.Slider(1, settings.limits.max_top_k, value=5, step=1, label="Top-k")
    # A dropdown rather than gr.Examples: Gradio 6.17's examples table throws in the browser whenever a
    # multiselect input it is bound to changes.
    example = gr.Dropdown(
        choices=[(f"{row[0]}  [{', '.join(row[1])}]", index) for index, row in enumerate(examples)],
        value=None,
        label="Examples for this model (choose one, then Predict)",
        visible=bool(examples),
        elem_id="fill-examples",
    )

    run = gr.Button("Predict", variant="primary", elem_id="fill-run")
    copy_link, link_box = links.link_row("fill")
    gr.Markdown(EXPLAIN)
    summary = gr.Markdown(elem_id="fill-summary")
    table = gr.Dataframe(
        label=TABLE_LABEL,
        interactive=False,
        max_height=420,
        visible=False,  # until there is something to show
        elem_id="fill-table",
        buttons=["copy", "fullscreen"],
    )
    download = gr.DownloadButton("Download CSV", visible=False, size="sm")
    mask_number = gr.Radio(choices=[1], value=1, label="Chart for mask", visible=False, elem_id="fill-mask-number")
    chart = gr.Plot(label="Top-k probabilities per adapter", elem_id="fill-chart")
    gr.Markdown(
        "How to read the chart: for up to four adapters, one panel each with its top-k tokens and their "
        "probabilities (the axis stops just above the largest one); for more, one column per adapter and one row "
        "per token, darker = more probable, blank = not in that adapter's top-k. Hover for exact values."
    )
    result = gr.State(None)
    tab = FillMaskTab(
        text, languages, top_k, run, summary, table, mask_number, chart, download, result, copy_link, link_box
    )

    @holder.serving.heavy
    @gpu
    def predict(sentence, codes, k):
        prediction = holder.predict_masks(sentence, codes, int(k) if isinstance(k, (int, float)) else k)
        count = len(prediction.masks)
        many = len(prediction.languages) > MAX_ADAPTER_COLUMNS
        return {
            tab.summary: summary_markdown(prediction),
            # Every row, and no label in the update: a label change on this table (hidden until the first result)
            # held the browser for 13 s at 81 adapters.
            tab.table: gr.Dataframe(
                value=prediction.to_adapter_frame() if many else prediction.to_wide_frame(), visible=True
            ),
            tab.download: gr.DownloadButton(value=csv_file(prediction.to_frame(), "predictions"), visible=True),
            tab.mask_number: gr.Radio(choices=list(range(1, count + 1)), value=1, visible=count > 1),
            tab.result: prediction,
        }

    @ui_errors
    def show_mask(number, prediction):
        if prediction is None or not number:
            return gr.skip()
        return plots.mask_probabilities(prediction, int(number))

    def use_example(index):
        if index is None or not 0 <= int(index) < len(examples):
            return gr.skip()
        sentence, codes = examples[int(index)]
        return {tab.text: sentence, tab.languages: codes}

    example.input(use_example, example, [text, languages], api_visibility="private")
    outputs = [tab.summary, tab.table, tab.download, tab.mask_number, tab.result]
    for trigger in (run.click, text.submit):
        # The chart comes in a second answer, so the browser draws it in a task of its own (issue 16).
        trigger(predict, [text, languages, top_k], outputs, api_visibility="private").success(
            show_mask, [mask_number, result], chart, api_visibility="private", show_progress="hidden"
        )
    mask_number.input(show_mask, [mask_number, result], chart, api_visibility="private")
    return tab
