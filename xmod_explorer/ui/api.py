"""Named API endpoints (gradio_client, and MCP tools with --mcp): the engine's plain JSON dicts."""

from __future__ import annotations

import gradio as gr

from xmod_explorer import lab
from xmod_explorer.settings import Settings
from xmod_explorer.ui.common import ModelHolder, gpu, ui_errors
from xmod_explorer.ui.model import shown_info


def register_api(holder: ModelHolder, settings: Settings) -> None:
    """Add the API-only endpoints to the Blocks being built; each heavy one runs as a job of the server's."""

    def predict_masks(text: str, languages: list[str], top_k: int = 5) -> dict:
        """Fill every <mask> in a text under each chosen X-MOD language adapter, in one batched pass.

        Args:
            text: A sentence containing one or more <mask> tokens.
            languages: Language adapter codes in the model, e.g. ["en_XX", "de_DE"].
            top_k: How many candidates to return per mask and language.
        """
        return holder.explorer.predict_masks(text, languages, top_k).to_dict()

    def compare_adapters(text: str, languages: list[str], reference: str | None = None) -> dict:
        """Run one text through several language adapters and compare hidden states layer by layer.

        Args:
            text: Any text (no mask needed).
            languages: Language adapter codes, e.g. ["en_XX", "de_DE", "ja_XX"].
            reference: The adapter the others are compared to token by token; default the first language.
        """
        return holder.explorer.compare_adapters(text, languages, reference).to_dict()

    def compare_sentences(pairs: list[list[str]]) -> dict:
        """Compare sentences, each run through its own language's adapter: cosine per layer, and CKA
        with a shuffled baseline for parallel sets.

        Args:
            pairs: Rows of [language code, sentence], e.g. [["en_XX", "Hello."], ["de_DE", "Hallo."]].
        """
        return holder.explorer.compare_sentences(pairs).to_dict()

    def classify(text: str, languages: list[str]) -> dict:
        """Classify a text with the checkpoint's classification head under each chosen language adapter.

        Args:
            text: Any text.
            languages: Language adapter codes, e.g. ["en_XX", "de_DE"].
        Returns {"labels", "languages", "probabilities": {code: {label: p}}} plus model, text and head.
        """
        return holder.explorer.classify(text, languages).to_dict()

    def transfer_lab(source_language: str = "en_XX", target_languages: list[str] | None = None) -> dict:
        """Train a probe on the bundled English sentiment set and test it zero-shot in other languages,
        each with its own adapter and with the source adapter (capped like the UI; nothing is kept).

        Args:
            source_language: The adapter used in training; the bundled set needs en_XX.
            target_languages: Languages to test, e.g. ["de_DE", "ja_XX"]; default the bundled test languages.
        """
        return lab.run_bundled(holder.explorer, source_language, target_languages)

    def model_info() -> dict:
        """Describe the loaded model: id, backend, device, dtype, parameter count, and languages in model order."""
        return shown_info(holder.explorer.info(), settings).to_dict()

    for fn in (predict_masks, compare_adapters, compare_sentences, classify, transfer_lab):
        gr.api(holder.serving.heavy(gpu(fn), escape_html=False, progress=False), api_name=fn.__name__)
    gr.api(ui_errors(model_info, escape_html=False), api_name="model_info")
