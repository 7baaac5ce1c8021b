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
        return holder.predict_masks(text, languages, top_k).to_dict()

    def compare_adapters(text: str, languages: list[str], reference: str | None = None) -> dict:
        """Run one text through several language adapters and compare hidden states layer by layer: raw and
        centred cosine (centred: minus the model's fixed mean sentence vector per layer, so a pair's value does
        not depend on the other languages chosen; "centring" says what was subtracted).

        Args:
            text: Any text (no mask needed).
            languages: Language adapter codes, e.g. ["en_XX", "de_DE", "ja_XX"].
            reference: The adapter the others are compared to token by token; default the first language.
        """
        return holder.explorer.compare_adapters(text, languages, reference).to_dict()

    def compare_sentences(pairs: list[list[str]]) -> dict:
        """Compare sentences, each run through its own language's adapter: raw and centred cosine per layer
        (centred: minus the model's fixed mean sentence vector, described under "centring"), and for parallel
        sets CKA and translation-pair cosine per layer and language pair, each with a one-sided permutation
        p-value (cka_p_value, cosine_p_value) and the 95 % band of its null (cka_null_low/high,
        cosine_null_low/high).

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

    def logit_lens(text: str, languages: list[str], top_k: int = 5) -> dict:
        """Read every <mask> through the model's masked-LM head at every layer, under each chosen adapter.

        Args:
            text: A sentence containing one or more <mask> tokens.
            languages: Language adapter codes, e.g. ["en_XX", "de_DE"].
            top_k: How many candidates per mask, layer and language.
        Returns per mask the top-k at each layer (0 = embeddings; the last equals predict_masks), each adapter's
        final answer and its probability at every layer, and the first layer where the adapters' top words differ.
        """
        return holder.explorer.logit_lens(text, languages, top_k).to_dict()

    def score_languages(text: str, languages: list[str] | None = None) -> dict:
        """Rank language adapters by how well the model, wearing each, predicts the text's own tokens
        (pseudo-log-likelihood per token), with the cost and py3langid's guess among the same languages.

        Args:
            text: Any text.
            languages: Candidate adapter codes; empty or omitted: every language of the model.
        """
        return holder.explorer.score_languages(text, languages or None).to_dict()

    def interpolate(text: str, language_a: str, language_b: str, steps: int = 11, top_k: int = 5) -> dict:
        """Fill every <mask> with two adapters mixed in every layer: (1 - alpha) * adapter a + alpha * adapter b,
        at steps values of alpha from 0 (a alone) to 1 (b alone).

        Args:
            text: A sentence containing one or more <mask> tokens.
            language_a: The adapter at alpha = 0, e.g. "en_XX".
            language_b: The adapter at alpha = 1, e.g. "de_DE".
            steps: How many alphas, evenly spaced (2 to 101).
            top_k: How many candidates per mask and alpha.
        """
        return holder.explorer.interpolate(text, language_a, language_b, steps, top_k).to_dict()

    def project(
        sentences: list[list[str]] | None = None,
        text: str = "",
        languages: list[str] | None = None,
        layer: int | None = None,
        method: str = "pca",
    ) -> dict:
        """A 2-D map of mean-pooled hidden states per layer: [language, sentence] rows each through its own
        adapter, or (with text and no sentences) one text through many adapters.

        Args:
            sentences: Rows of [language code, sentence], e.g. [["en_XX", "Hello."], ["de_DE", "Hallo."], ...].
            text: One text to send through many adapters (used when sentences is empty).
            languages: The adapters for text; empty: every language of the model.
            layer: One layer (0 = embeddings); omitted: every layer.
            method: "pca" (deterministic) or "umap" (needs umap-learn on the server).
        """
        source = sentences if sentences else text
        return holder.explorer.project(source, layer=layer, method=method, languages=languages or None).to_dict()

    def model_info() -> dict:
        """Describe the loaded model: id, backend, device, dtype, parameter count, and languages in model order."""
        return shown_info(holder.explorer.info(), settings).to_dict()

    heavy = (predict_masks, compare_adapters, compare_sentences, classify, transfer_lab)
    for fn in (*heavy, logit_lens, score_languages, interpolate, project):
        gr.api(holder.serving.heavy(gpu(fn), escape_html=False, progress=False), api_name=fn.__name__)
    gr.api(ui_errors(model_info, escape_html=False), api_name="model_info")
