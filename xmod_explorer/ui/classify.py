"""Classify tab: label probabilities per adapter, and the cross-lingual transfer lab.

The head a user trains or loads lives only in that user's lab session, never on the shared Explorer, so
two users never see or overwrite each other's heads. The session is kept on the server behind a handle the
server made (ui/sessions.py); the page holds the handle in a hidden field. Unused sessions expire.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import gradio as gr
import pandas as pd

from xmod_explorer import lab, plots
from xmod_explorer.classify import Classification, ProbeHead, ProbeTraining, TransferResult
from xmod_explorer.datasets import Example
from xmod_explorer.defaults import MINI_NOTE, is_mini
from xmod_explorer.engine import Explorer
from xmod_explorer.errors import ExplorerError
from xmod_explorer.languages import display_name, resolve_language
from xmod_explorer.settings import Settings
from xmod_explorer.ui import links
from xmod_explorer.ui.common import (
    ModelHolder,
    escape,
    fresh_folder,
    gpu,
    language_dropdown,
    pick_languages,
    text_box,
    ui_errors,
)

QUIET = {"show_progress": "hidden"}
DEFAULT_SET = "Sentiment of software reviews (English training set, bundled)"
UPLOAD_SET = "My CSV file"
CHECKPOINT_HEAD = "the checkpoint's classification head"
SESSION_HEAD = "my probe (trained or loaded below)"
PREFERRED = ["en_XX", "de_DE", "fr_XX", "ja_XX"]
EXPLAIN_LAB = (
    "X-MOD's central claim, live: a classifier trained on **one** language (the source) with the embeddings and all "
    "language adapters frozen works in other languages just by **switching the language adapter**. The lab trains a "
    "linear probe on sentence vectors (mean of the last layer) computed under the source language's adapter, then "
    "tests each target language twice: with **its own adapter** (X-MOD's way) and with the **source language's "
    "adapter** (the baseline). The gap between the two bars is the lesson only where the data can tell: each "
    "accuracy has a 95 % interval (the whiskers), and each gap an exact McNemar p-value on the same test texts; "
    "below 0.05 the summary calls it a difference, otherwise it says the data cannot tell. The black mark is the "
    "accuracy of always answering the most common label: where a language's bars reach down to it, the probe does "
    "no better than chance there and its gap says nothing about the adapters (the summary says which languages)."
)
CSV_HELP = (
    "CSV with a header line `text,label` and optionally `language` (UTF-8; comma, semicolon or tab). Rows in the "
    "source language (or with no language) train the probe; rows in other languages are the test sets."
)


@dataclass
class LabSession:
    """What one browser session has trained or loaded; kept in a gr.State, never shared."""

    head: ProbeHead | None = None
    training: ProbeTraining | None = None
    transfer: TransferResult | None = None
    notes: list[str] = field(default_factory=list)
    tuned: Explorer | None = None  # this session's fine-tuned copy of the model, if it made one

    def explorer_for(self, shared: Explorer) -> Explorer:
        """The session's fine-tuned copy if there is one, else the shared model."""
        return self.tuned if self.tuned is not None else shared


@dataclass
class ClassifyTab:
    text: gr.Textbox
    languages: gr.Dropdown
    head_choice: gr.Radio
    run: gr.Button
    note: gr.Markdown
    probabilities: gr.Plot
    probability_table: gr.Dataframe
    dataset: gr.Radio
    upload: gr.File
    source: gr.Dropdown
    targets: gr.Dropdown
    finetune: gr.Checkbox
    train: gr.Button
    evaluate: gr.Button
    summary: gr.Markdown
    loss: gr.Plot
    table: gr.Dataframe
    chart: gr.Plot
    download: gr.DownloadButton
    head_file: gr.File
    session: gr.Textbox  # hidden: the handle of this page's lab session on the server
    stop: gr.Button
    copy_link: gr.Button | None = None
    link_box: gr.Textbox | None = None

    def link_fields(self) -> dict:
        """The inputs a deep link may set, by parameter name (Copy link writes them back)."""
        return {"text": self.text, "languages": self.languages, "source": self.source, "targets": self.targets}

    def link_run(self) -> list[str]:
        """A link trains the probe on the bundled set (any model can), then classifies the text with it."""
        return [self.train.elem_id, self.run.elem_id]

    def from_link(self, params: Mapping[str, str], explorer: Explorer, settings: Settings) -> dict:
        """?tab=classify&text=...&languages=de_DE,fr_XX&source=en_XX&targets=de_DE,fr_XX"""
        return links.present(
            {
                self.text: links.text(params, "text", settings),
                self.languages: links.languages(params, "languages", explorer, settings),
                self.source: links.language(params, "source", explorer),
                self.targets: links.languages(params, "targets", explorer, settings),
            }
        )


def default_source(languages: list[str]) -> str:
    """English when the model has it (the bundled training set is English), else its first language."""
    return lab.BUNDLED_SOURCE if lab.BUNDLED_SOURCE in languages else languages[0]


def lab_data(
    explorer: Explorer, dataset: str, upload: str | None, source: str, *, training: bool = True
) -> tuple[list[Example], dict[str, list[Example]]]:
    """Training rows and test rows per language, from the data set the user picked."""
    if dataset == UPLOAD_SET:
        return lab.uploaded_data(explorer, upload, source, training=training)
    return lab.bundled_data(explorer, source, training=training)


def training_share(train_rows: list[Example], tests: dict[str, list[Example]], targets: list[str]) -> float:
    """The share of one progress bar that training a probe takes, the rest being the evaluation: in proportion to
    the text each passes through the model (training once per row, evaluation twice: the target's adapter and the
    source's). A fixed 85 % made the bar race through training and crawl through the evaluation (issue 16)."""
    trained = sum(len(example.text) for example in train_rows)
    tested = 2 * sum(len(example.text) for code in targets for example in tests.get(code, []))
    return min(0.95, max(0.05, trained / max(1, trained + tested)))


def transfer_table(result: TransferResult) -> pd.DataFrame:
    """The transfer result for display: each accuracy as a percentage with its 95 % interval, the gap's p-value."""
    source = f"source adapter ({result.source_language})"

    def percent(value: float) -> str:
        return f"{value * 100:.1f}"

    return pd.DataFrame(
        [
            {
                "language": row.language,
                "examples": row.examples,
                "target adapter (%)": percent(row.target_adapter_accuracy),
                "target 95 % interval": f"{percent(row.target_adapter_ci[0])} to {percent(row.target_adapter_ci[1])}",
                f"{source} (%)": percent(row.source_adapter_accuracy),
                "source 95 % interval": f"{percent(row.source_adapter_ci[0])} to {percent(row.source_adapter_ci[1])}",
                "gap (%)": percent(row.gap),
                "gap p-value": "same adapter" if row.language == result.source_language else f"{row.gap_p_value:.3f}",
                "majority label (%)": percent(row.majority_share),
            }
            for row in result.rows
        ]
    )


def head_file(head: ProbeHead) -> str:
    """Write the head to a fresh .safetensors file for the download button."""
    folder = fresh_folder()
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"probe-{head.source_language}-{'-'.join(head.labels)}")[:80]
    return str(head.save(folder / f"{stem}.safetensors"))


def probability_frame(result: Classification) -> pd.DataFrame:
    """The probabilities as text with two decimals ("0.98", "0.00"): a number column shows 0.0012 as 0."""
    frame = result.to_frame()
    for label in result.labels:
        frame[label] = frame[label].map(lambda value: f"{value:.2f}")
    return frame


def chance_markdown(transfer: TransferResult) -> str:
    """Which languages the probe does better than chance on: only there can the result say anything."""
    rows = transfer.target_rows or transfer.rows
    above = [row.language for row in rows if row.target_adapter_ci[0] > row.majority_share]
    if not above:
        return (
            "**At chance everywhere**: in no target language is the accuracy with its own adapter clearly above "
            "always answering the most common label (its 95 % interval reaches that floor). This run shows nothing "
            "about transfer, for or against X-MOD's claim; a larger model or more training data may."
        )
    chance = [row.language for row in rows if row.language not in above]
    text = (
        f"Clearly above chance (the 95 % interval of the own-adapter accuracy lies above the most-common-label "
        f"floor) in {len(above)} of {len(rows)}: {escape(', '.join(above))}."
    )
    if chance:
        text += f" At chance in {escape(', '.join(chance))}: there the gap says nothing about the adapters."
    return text


def summary_markdown(session: LabSession) -> str:
    """What was trained and how; every user-given string is escaped."""
    lines = []
    training, head = session.training, session.head
    if training is not None:
        kind = "Probe" if session.tuned is None else "Fine-tuned model and head"
        converged = f", converged (largest gradient {training.gradient_norm:.0e})" if training.converged else ""
        lines.append(
            f"**{kind} trained** on {training.examples} examples in {escape(display_name(head.source_language))}: "
            f"{training.steps} steps in {training.seconds:.1f} s{converged} (sentence features "
            f"{training.feature_seconds:.1f} s); training accuracy {training.train_accuracy:.0%}. Labels: "
            f"{escape(', '.join(head.labels))}."
        )
        if training.note:
            lines.append(f"Note: {escape(training.note)}")
    elif head is not None:
        lines.append(
            f"**Loaded head**: labels {escape(', '.join(head.labels))}, trained on {escape(head.source_language)} "
            f"with {head.examples} examples on {escape(head.model)}."
        )
    if session.transfer is not None:
        lines.append(escape(session.transfer.summary()))
        lines.append(chance_markdown(session.transfer))
    lines += [f"Note: {escape(note)}" for note in session.notes]
    return "\n\n".join(lines)


def build_classify_tab(holder: ModelHolder, settings: Settings) -> ClassifyTab:
    explorer = holder.explorer
    has_head = bool(explorer.info().labels)
    gr.Markdown("### Classify a text under several language adapters")
    with gr.Row():
        text = text_box(
            settings,
            "After the update the program crashes every time I print.",
            label="Text",
            elem_id="classify-text",
            scale=3,
        )
        with gr.Column(scale=2):
            languages = language_dropdown(
                explorer,
                settings,
                pick_languages(explorer, PREFERRED),
                label="Language adapters",
                elem_id="classify-languages",
            )
            head_choice = gr.Radio(
                [CHECKPOINT_HEAD, SESSION_HEAD],
                value=CHECKPOINT_HEAD if has_head else SESSION_HEAD,
                label="Classify with",
            )
    run = gr.Button("Classify", variant="primary", elem_id="classify-run")
    copy_link, link_box = links.link_row("classify")
    note = gr.Markdown(elem_id="classify-note")
    with gr.Row():
        probabilities = gr.Plot(label="Label probabilities per adapter", elem_id="classify-chart")
        probability_table = gr.Dataframe(
            pd.DataFrame(columns=["language", "predicted"]),
            label="Probabilities",
            interactive=False,
            elem_id="classify-probabilities",
        )

    lesson = EXPLAIN_LAB + (f"\n\n**Note:** {MINI_NOTE}" if is_mini(explorer.info().folder) else "")
    gr.Markdown("### The transfer lab\n" + lesson, elem_id="classify-lesson")
    with gr.Row():
        with gr.Column():
            dataset = gr.Radio([DEFAULT_SET, UPLOAD_SET], value=DEFAULT_SET, label="Data", elem_id="classify-dataset")
            upload = gr.File(
                label="CSV to train and test on", file_types=[".csv"], type="filepath", elem_id="classify-upload"
            )
            gr.Markdown(
                CSV_HELP + f" At most {settings.limits.max_train_examples:,} rows and "
                f"{settings.limits.max_upload_bytes / 2**20:.0f} MiB here; training stops after "
                f"{settings.limits.max_train_seconds:.0f} s."
            )
        with gr.Column():
            source = language_dropdown(
                explorer,
                settings,
                default_source(explorer.languages),
                label="Source language (the adapter used in training)",
                elem_id="classify-source",
                multiselect=False,
            )
            targets = language_dropdown(
                explorer,
                settings,
                lab.default_targets(explorer.languages),
                label="Target languages (zero-shot)",
                elem_id="classify-targets",
            )
            # Offered only with --allow-finetune; the handler checks the flag again.
            finetune = gr.Checkbox(
                value=False,
                label="Also fine-tune (a task adapter, or the shared layers natively) on a private copy of the model: "
                "slow without a GPU",
                visible=settings.allow_finetune,
                elem_id="classify-finetune",
            )
    with gr.Row():
        train = gr.Button("Train probe", variant="primary", elem_id="classify-train")
        evaluate = gr.Button("Evaluate my head again", elem_id="classify-evaluate")
        stop = gr.Button("Stop", variant="stop", elem_id="classify-stop")
    summary = gr.Markdown(elem_id="classify-summary")
    with gr.Row():
        loss = gr.Plot(label="Loss curve", elem_id="classify-loss")
        chart = gr.Plot(label="Accuracy per language", elem_id="classify-transfer-chart")
    table = gr.Dataframe(
        headers=[
            "language",
            "examples",
            "target adapter (%)",
            "target 95 % interval",
            "source adapter (%)",
            "source 95 % interval",
            "gap (%)",
            "gap p-value",
            "majority label (%)",
        ],
        label="Accuracy per target language",
        interactive=False,
        elem_id="classify-table",
    )
    with gr.Row():
        download = gr.DownloadButton("Download head (.safetensors)", visible=False, elem_id="classify-download")
        head_file_input = gr.File(
            label="Load a head saved earlier",
            file_types=[".safetensors"],
            type="filepath",
            elem_id="classify-head-file",
        )
    session = gr.Textbox(value="", visible=False, elem_id="classify-session")
    tab = ClassifyTab(
        text,
        languages,
        head_choice,
        run,
        note,
        probabilities,
        probability_table,
        dataset,
        upload,
        source,
        targets,
        finetune,
        train,
        evaluate,
        summary,
        loss,
        table,
        chart,
        download,
        head_file_input,
        session,
        stop,
        copy_link,
        link_box,
    )
    store = holder.serving.sessions
    idle_minutes = settings.limits.session_idle_seconds / 60

    def session_of(handle) -> LabSession:
        """This page's lab session; an empty one if it has none, or none any more."""
        state = store.get(handle)
        if state is not None:
            return state
        expired = f"Your lab session was unused for {idle_minutes:.0f} minutes and has expired, with its head."
        return LabSession(notes=[expired] if handle else [])

    def need_head(state: LabSession, what: str) -> None:
        if state.head is None:
            raise ExplorerError(" ".join([*state.notes, what]))

    @holder.serving.heavy
    @gpu
    def classify_text(sentence, codes, choice, handle):
        # Rows and bars in the model's language order, whatever order the languages were picked in.
        order = holder.explorer.languages
        codes = sorted(codes or [], key=lambda code: order.index(code) if code in order else -1)
        if choice == SESSION_HEAD:
            state = session_of(handle)
            need_head(state, "You have no probe yet: train one in the transfer lab below, or load a head file.")
            result = state.explorer_for(holder.explorer).classify(sentence, codes, head=state.head)
        else:
            result = holder.explorer.classify(sentence, codes)
        return {
            tab.note: f"Head: {escape(result.head)}.",
            tab.probabilities: plots.classification_bars(result),
            tab.probability_table: probability_frame(result),
        }

    def evaluation(
        explorer: Explorer, state: LabSession, tests: dict[str, list[Example]], chosen: list[str], progress
    ) -> LabSession:
        present = [code for code in chosen if code in tests]
        missing = [code for code in chosen if code not in tests]
        notes = [f"No test rows in {', '.join(missing)}; those languages are left out."] if missing else []
        if is_mini(explorer.info().folder):
            notes.append(MINI_NOTE)
        transfer = None
        if present:
            transfer = lab.evaluate_transfer(
                explorer, state.head, {code: tests[code] for code in present}, progress=progress
            )
        else:
            notes.append("No test rows in any chosen target language, so there is nothing to evaluate.")
        return LabSession(state.head, state.training, transfer, notes, state.tuned)

    def outputs_for(state: LabSession, handle, request: gr.Request | None) -> dict:
        finetuned = state.tuned is not None
        result = {
            tab.summary: summary_markdown(state),
            tab.loss: plots.loss_curve(state.training) if state.training is not None else None,
            tab.download: gr.DownloadButton(value=head_file(state.head), visible=True)
            if state.head is not None and not finetuned
            else gr.DownloadButton(visible=False),
            tab.head_choice: SESSION_HEAD,
            tab.session: store.put(state, handle, owner=getattr(request, "session_hash", None)),
        }
        return result

    @holder.serving.heavy
    @gpu
    def train_head(data, path, source_code, chosen, tune, handle, request: gr.Request, progress=gr.Progress()):
        explorer = holder.explorer
        source_code = resolve_language(source_code, explorer.languages)
        codes = lab.target_languages(explorer, chosen)
        train_rows, tests = lab_data(explorer, data, path, source_code)
        tuning = bool(tune and settings.allow_finetune)
        # Fine-tuning's backward passes outweigh the evaluation; a probe's share follows the text each reads.
        share = 0.85 if tuning else training_share(train_rows, tests, codes)

        def step(fraction, desc=None):
            progress(share * fraction, desc=desc)

        tuned = None
        if tuning:
            store.drop(handle)  # one fine-tuned copy per session: the old one goes before the new one is made
            finetuned = lab.finetune(explorer, train_rows, source_code, progress=step)
            tuned, training = finetuned.explorer, finetuned.training
        else:
            training = lab.train_probe(explorer, train_rows, source_code, progress=step)
        trained = LabSession(training.head, training, tuned=tuned)
        state = evaluation(
            tuned or explorer,
            trained,
            tests,
            codes,
            lambda f, desc=None: progress(share + (1 - share) * f, desc=desc),
        )
        return outputs_for(state, handle, request)

    @holder.serving.heavy
    @gpu
    def evaluate_head(data, path, chosen, handle, request: gr.Request, progress=gr.Progress()):
        state = session_of(handle)
        need_head(state, "You have no head yet: train a probe, or load a head file first.")
        explorer = state.explorer_for(holder.explorer)
        codes = lab.target_languages(explorer, chosen)
        _, tests = lab_data(explorer, data, path, state.head.source_language, training=False)
        return outputs_for(evaluation(explorer, state, tests, codes, progress), handle, request)

    @ui_errors
    def load_head(path, handle, request: gr.Request):
        if not path:
            return gr.skip()
        head = holder.explorer.check_head(ProbeHead.load(path, max_bytes=settings.limits.max_upload_bytes))
        return outputs_for(LabSession(head), handle, request)

    classify_outputs = [note, probabilities, probability_table]
    lab_panel = [summary, loss, download, table, chart]

    def clears(event, others: list):
        """After a good run, the error markers a failed run left on the tab's other panels go (issue 16: "Error"
        stayed over the probabilities after the probe it asked for had been trained). An answer of skips: Gradio
        marks each output done without changing its value."""
        return event.success(lambda: [gr.skip()] * len(others), None, others, api_visibility="private", **QUIET)

    for trigger in (run.click, text.submit):
        clears(
            trigger(classify_text, [text, languages, head_choice, session], classify_outputs, api_visibility="private"),
            lab_panel,
        )

    @ui_errors
    def draw_table(handle):
        state = store.get(handle)
        return transfer_table(state.transfer) if state is not None and state.transfer is not None else None

    @ui_errors
    def draw_transfer(handle):
        state = store.get(handle)
        return plots.transfer_bars(state.transfer) if state is not None and state.transfer is not None else None

    def then_chart(event):
        """The table and the accuracy chart in answers of their own: the browser draws each in a task of its own
        (issue 16); then the classify panel's stale error markers go."""
        quiet = {"api_visibility": "private", **QUIET}
        drawn = event.success(draw_table, session, table, **quiet).success(draw_transfer, session, chart, **quiet)
        return clears(drawn, classify_outputs)

    lab_outputs = [summary, loss, download, head_choice, session]
    training = train.click(
        train_head,
        [dataset, upload, source, targets, finetune, session],
        lab_outputs,
        api_visibility="private",
    )
    then_chart(training).then(None, None, None, js=links.NEXT_RUN)
    evaluating = evaluate.click(
        evaluate_head, [dataset, upload, targets, session], lab_outputs, api_visibility="private"
    )
    then_chart(evaluating)
    stop.click(None, None, None, cancels=[training, evaluating], api_visibility="private")
    then_chart(head_file_input.upload(load_head, [head_file_input, session], lab_outputs, api_visibility="private"))
    upload.upload(lambda _: UPLOAD_SET, upload, dataset, api_visibility="private")
    return tab
