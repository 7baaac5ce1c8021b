"""Model tab: what is loaded, and (locally) loading another model or language subset."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from xmod_explorer.defaults import MINI_NOTE, is_mini
from xmod_explorer.engine import Explorer, ModelInfo
from xmod_explorer.hub import DownloadProgress
from xmod_explorer.settings import Settings
from xmod_explorer.ui.common import ModelHolder, escape


@dataclass
class ModelTab:
    summary: gr.Markdown
    languages: gr.Dataframe
    reference: gr.Textbox | None
    backend: gr.Radio | None
    device: gr.Dropdown | None
    dtype: gr.Dropdown | None
    subset: gr.Textbox | None
    load: gr.Button | None
    confirm: gr.Button | None = None  # the second click that really loads (the first only asks)
    asking: gr.Column | None = None


def server_paths(info: ModelInfo) -> list[str]:
    """Where on this server's disk the model lives: what a public server must not show."""
    return [text for text in (info.folder, info.model) if text and (Path(text).is_absolute() or Path(text).exists())]


def without_paths(text: str, paths: list[str]) -> str:
    """text with each of paths replaced by its last part (the folder's name)."""
    for path in sorted(paths, key=len, reverse=True):
        text = text.replace(path, Path(path).name or "model")
    return text


def shown_info(info: ModelInfo, settings: Settings) -> ModelInfo:
    """info as this server may show it: a public server shows no path of its disk (the folder is left out,
    a model named by its path shows the folder's name)."""
    if not settings.public:
        return info
    paths = server_paths(info)
    return dataclasses.replace(
        info,
        folder="",
        model=without_paths(info.model, paths),
        reason=without_paths(info.reason, paths),
        tokenizer_source=without_paths(info.tokenizer_source, paths),
    )


def banner_markdown(info: ModelInfo) -> str:
    """Always visible at the top: which model, why, and whose tokenizer; for the embedded mini model, what it was
    trained on."""
    tokenizer = f" Tokenizer: {escape(info.tokenizer_source)}." if info.tokenizer_source else ""
    if info.random_weights:
        return (
            f"Model: **{escape(info.model)}**. **Random weights: outputs are meaningless.** ({escape(info.reason)})"
            f"{tokenizer}"
        )
    line = f"Model: **{escape(info.model)}** ({escape(info.reason)}).{tokenizer}"
    if info.dtype.startswith("int8"):
        line += f" Runs in **{escape(info.dtype)}**: faster on this CPU, predictions close to but not equal to float32."
    return f"{line} {MINI_NOTE}" if is_mini(info.folder) else line  # MINI_NOTE is our own words: nothing to escape


def summary_markdown(info: ModelInfo) -> str:
    rows = [
        ("Model", escape(info.model)),
        ("Why this model", escape(info.reason)),
        *([("Folder", escape(info.folder))] if info.folder else []),
        ("Tokenizer", escape(info.tokenizer_source or info.tokenizer)),
        ("Backend", f"{info.backend} (checkpoint format: {info.checkpoint_format})"),
        ("Device, dtype", f"{info.device}, {info.dtype}"),
        ("Parameters", f"{info.parameters:,}"),
        ("Memory (weights)", f"{info.memory_bytes / 2**20:,.1f} MiB"),
        ("Shape", f"{info.layers} layers, hidden size {info.hidden_size}, vocabulary {info.vocab_size:,}"),
        ("Longest input", f"{info.max_tokens} tokens"),
        ("Languages", f"{len(info.languages)} ({len(info.loaded_languages)} adapters in memory now)"),
        ("Fills masks", "yes" if info.can_fill_masks else "no (no masked-LM head)"),
    ]
    if info.post_hoc_languages:
        added = escape(", ".join(info.post_hoc_languages))
        rows.append(("Added post hoc", f"{added} (adapter trained after pre-training, every other weight frozen)"))
    if info.labels:
        rows.append(("Classifier labels", escape(", ".join(info.labels))))
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    warning = "\n\n**This model has random weights: its outputs are meaningless.**" if info.random_weights else ""
    return f"| | |\n|---|---|\n{table}{warning}"


def build_model_tab(holder: ModelHolder, settings: Settings) -> ModelTab:
    info = shown_info(holder.explorer.info(), settings)
    summary = gr.Markdown(summary_markdown(info), elem_id="model-summary")
    languages = gr.Dataframe(
        info.to_frame(), label="Languages in model order (lang id = row)", interactive=False, max_height=360
    )
    if not settings.can_load_models:
        gr.Markdown("Loading other models is switched off on this public server.")
        return ModelTab(summary, languages, None, None, None, None, None, None)
    gr.Markdown(
        "### Load another model\nA hub id (downloaded into the Hugging Face cache), a local folder, `mini` (the "
        "embedded model) or `random`."
    )
    with gr.Row():
        reference = gr.Textbox(label="Model", value=info.model, scale=3, elem_id="model-reference")
        backend = gr.Radio(["auto", "transformers", "adapters"], value="auto", label="Backend")
    with gr.Row():
        device = gr.Dropdown(["auto", "cpu", "cuda", "mps"], value="auto", label="Device")
        dtype = gr.Dropdown(["auto", "float32", "float16", "bfloat16", "int8"], value="auto", label="Dtype")
        subset = gr.Textbox(label="Only these languages (comma-separated codes; empty = all)", scale=2)
    gr.Markdown(
        "**Loading changes the model for everyone** connected to this app: every open page and every API caller "
        "gets the new model, and what they were looking at was computed with the old one."
    )
    load = gr.Button("Load…", variant="primary", elem_id="model-load")
    with gr.Column(visible=False) as asking:
        gr.Markdown("Load this model **for everyone** connected now?", elem_id="model-load-question")
        with gr.Row():
            confirm = gr.Button("Yes, load it for everyone", variant="stop", elem_id="model-load-confirm")
            cancel = gr.Button("Cancel", elem_id="model-load-cancel")
    load.click(lambda: gr.Column(visible=True), None, asking, api_visibility="private", show_progress="hidden")
    for button in (cancel, confirm):
        button.click(lambda: gr.Column(visible=False), None, asking, api_visibility="private", show_progress="hidden")
    return ModelTab(summary, languages, reference, backend, device, dtype, subset, load, confirm, asking)


def load_explorer(settings: Settings, reference, backend, device, dtype, subset, progress=None) -> Explorer:
    """Load a new Explorer with the app's limits (the caller swaps it in); progress(fraction, text) shows downloads."""

    def show(event: DownloadProgress) -> None:
        progress(event.fraction, event.describe())

    return Explorer.from_pretrained(
        (reference or "").strip() or None,
        backend=backend or "auto",
        device=device or "auto",
        dtype=dtype or "auto",
        languages=subset or None,
        limits=settings.limits,
        progress=show if progress is not None else None,
    )
