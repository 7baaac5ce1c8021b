"""Which language? tab: the adapters ranked by how well the model, wearing each, predicts the text's own
tokens (pseudo-log-likelihood), beside an off-the-shelf detector's guess."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import gradio as gr

from xmod_explorer import plots
from xmod_explorer.engine import Explorer
from xmod_explorer.scoring import LanguageScores
from xmod_explorer.settings import Settings
from xmod_explorer.ui import links
from xmod_explorer.ui.common import (
    ModelHolder,
    csv_file,
    escape,
    gpu,
    language_choices,
    language_dropdown,
    text_box,
)

HOW_TO_READ = (
    "**How to read it.** Each token of the text is hidden in turn and the model, wearing one adapter, guesses it "
    "back; the bar is the mean log probability of the right token (nats per token: 0 would be certain, -1 is about "
    "a 1-in-3 guess). The adapter with the highest bar is the one under which the model finds the text most "
    "natural: the model's own language identification (pseudo-log-likelihood, Salazar et al. 2020). It costs one "
    "forward pass per token and adapter, stated below. Beside it, py3langid, a fast character-based detector that "
    "knows nothing of the model, chooses among the same languages. What it does not show: a gap of a few hundredths "
    "of a nat is within what one sentence can swing; closely related languages and short texts are genuinely "
    "ambiguous; and an adapter the model was trained little on can lose even on its own language."
)


@dataclass
class IdentifyTab:
    text: gr.Textbox
    languages: gr.Dropdown
    run: gr.Button
    summary: gr.Markdown
    chart: gr.Plot
    table: gr.Dataframe
    download: gr.DownloadButton
    copy_link: gr.Button | None = None
    link_box: gr.Textbox | None = None

    def model_fields(self) -> list:
        """The components that change when the Model tab loads another model."""
        return [self.languages]

    def model_updates(self, explorer: Explorer) -> dict:
        return {self.languages: gr.Dropdown(choices=language_choices(explorer), value=[], multiselect=True)}

    def link_fields(self) -> dict:
        """The inputs a deep link may set, by parameter name (Copy link writes them back)."""
        return {"text": self.text, "languages": self.languages}

    def link_run(self) -> str:
        return self.run.elem_id

    def from_link(self, params: Mapping[str, str], explorer: Explorer, settings: Settings) -> dict:
        """?tab=identify&text=...&languages=en_XX,de_DE (no languages: all of the model's)"""
        return links.present(
            {
                self.text: links.text(params, "text", settings),
                self.languages: links.languages(params, "languages", explorer, settings),
            }
        )


def summary_markdown(scores: LanguageScores) -> str:
    best, *rest = scores.scores
    lines = [f"The model finds the text most likely with the **{escape(best.language)}** adapter."]
    if rest:
        gap = best.per_token - rest[0].per_token
        lines[0] += f" Next: {escape(rest[0].language)}, {gap:.3f} nats per token behind."
    guess = scores.detector
    if guess is None:
        lines.append("No detector guess (py3langid is not installed, or knows none of these languages).")
    else:
        named = escape(guess.language) if guess.language else f"{escape(guess.label)} (no adapter of that language)"
        agree = "agrees" if guess.language == best.language else "**disagrees**"
        lines.append(f"{escape(guess.detector)} guesses **{named}** (p = {guess.probability:.2f}): it {agree}.")
    lines.append(f"Cost: {escape(scores.cost.describe())}.")
    return "\n\n".join(lines)


def build_identify_tab(holder: ModelHolder, settings: Settings) -> IdentifyTab:
    explorer = holder.explorer
    with gr.Row():
        text = text_box(
            settings,
            "Klicken Sie auf Speichern.",  # short: every language of xmod-base fits the public cap of forward rows
            label="Text in any language (no mask needed)",
            elem_id="identify-text",
            scale=3,
        )
        with gr.Column(scale=2):
            languages = language_dropdown(
                explorer,
                settings,
                [],
                label="Candidate adapters (empty: every language of the model)",
                elem_id="identify-languages",
            )
    run = gr.Button("Which adapter fits?", variant="primary", elem_id="identify-run")
    copy_link, link_box = links.link_row("identify")
    gr.Markdown(HOW_TO_READ)
    summary = gr.Markdown(elem_id="identify-summary")
    chart = gr.Plot(label="Pseudo-log-likelihood per token, per adapter", elem_id="identify-chart")
    table = gr.Dataframe(label="Ranking", interactive=False, max_height=320, elem_id="identify-table")
    download = gr.DownloadButton("Download CSV (log p of every token under every adapter)", visible=False, size="sm")
    tab = IdentifyTab(text, languages, run, summary, chart, table, download, copy_link=copy_link, link_box=link_box)

    @holder.serving.heavy
    @gpu
    def identify(sentence, codes):
        scores = holder.explorer.score_languages(sentence, list(codes or []) or None)
        return {
            tab.summary: summary_markdown(scores),
            tab.chart: plots.language_score_bars(scores),
            tab.table: scores.to_frame().round(4),
            tab.download: gr.DownloadButton(value=csv_file(scores.to_token_frame(), "token_log_probs"), visible=True),
        }

    for trigger in (run.click, text.submit):
        trigger(identify, [text, languages], [summary, chart, table, download], api_visibility="private")
    return tab
