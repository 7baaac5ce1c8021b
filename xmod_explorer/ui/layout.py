"""Compose the tabs into one Gradio app and wire what crosses tab borders (model loading, deep links)."""

from __future__ import annotations

import logging

import gradio as gr

from xmod_explorer import lab, plots
from xmod_explorer.engine import Explorer
from xmod_explorer.settings import Settings
from xmod_explorer.ui import allocator, links
from xmod_explorer.ui.about import build_about_tab
from xmod_explorer.ui.api import register_api
from xmod_explorer.ui.classify import build_classify_tab, default_source
from xmod_explorer.ui.common import ModelHolder, language_choices, pick_languages, ui_errors
from xmod_explorer.ui.compare import PREFERRED as COMPARE_PREFERRED
from xmod_explorer.ui.compare import build_compare_tab
from xmod_explorer.ui.fill_mask import PREFERRED as FILL_PREFERRED
from xmod_explorer.ui.fill_mask import build_fill_mask_tab
from xmod_explorer.ui.identify import build_identify_tab
from xmod_explorer.ui.lens import build_lens_tab
from xmod_explorer.ui.maps import build_map_tab
from xmod_explorer.ui.mix import build_mix_tab
from xmod_explorer.ui.model import banner_markdown, build_model_tab, load_explorer, summary_markdown
from xmod_explorer.ui.sentences import build_sentences_tab, default_pairs

log = logging.getLogger(__name__)

CSS = """
#model-banner { font-size: 0.95em; opacity: 0.9; }
.gradio-container { max-width: 1400px !important; }
"""


def launch_options(settings: Settings) -> dict:
    """Keyword arguments for demo.launch() that follow from the settings (app.py and the tests use them)."""
    return {
        "server_name": settings.host,
        "server_port": settings.port,
        "share": settings.share,
        "show_error": False,
        "max_file_size": settings.limits.max_upload_bytes,
        "mcp_server": settings.mcp or None,
        "footer_links": ["api", "gradio"],
        "css": CSS,
    }


def concurrency_for(explorer: Explorer) -> int:
    """Forward passes on a CPU share its cores, so more at once only adds memory; a GPU overlaps well."""
    return 4 if explorer.loaded.device.type != "cpu" else 2


def build_app(settings: Settings, explorer: Explorer) -> gr.Blocks:
    """The whole app around one loaded Explorer."""
    allocator.limit_arenas()
    holder = ModelHolder(explorer)
    with gr.Blocks(title="X-MOD Explorer") as demo:
        gr.Markdown("# X-MOD Explorer\nSee what the language adapters of a multilingual X-MOD model do.")
        banner = gr.Markdown(banner_markdown(explorer.info()), elem_id="model-banner")
        # Every analysis tab has its own deep link (?tab=ID&...), filled and run by ui/links.py.
        linked, items = {}, {}
        with gr.Tabs():
            with gr.Tab("Fill the mask", id="fill", elem_id="tab-fill") as items["fill"]:
                fill = linked["fill"] = build_fill_mask_tab(holder, settings)
            with gr.Tab("Compare adapters", id="compare", elem_id="tab-compare") as items["compare"]:
                compare = linked["compare"] = build_compare_tab(holder, settings)
            with gr.Tab("Across languages", id="sentences", elem_id="tab-sentences") as items["sentences"]:
                sentences = linked["sentences"] = build_sentences_tab(holder, settings)
            # These tabs also say themselves what changes when another model loads.
            reloaded = {}
            with gr.Tab("Logit lens", id="lens", elem_id="tab-lens") as items["lens"]:
                linked["lens"] = reloaded["lens"] = build_lens_tab(holder, settings)
            with gr.Tab("Which language?", id="identify", elem_id="tab-identify") as items["identify"]:
                linked["identify"] = reloaded["identify"] = build_identify_tab(holder, settings)
            with gr.Tab("Mix two adapters", id="mix", elem_id="tab-mix") as items["mix"]:
                linked["mix"] = reloaded["mix"] = build_mix_tab(holder, settings)
            with gr.Tab("Map", id="map", elem_id="tab-map") as items["map"]:
                linked["map"] = reloaded["map"] = build_map_tab(holder, settings)
            with gr.Tab("Classify", id="classify", elem_id="tab-classify") as items["classify"]:
                classify = linked["classify"] = build_classify_tab(holder, settings)
            with gr.Tab("Model", id="model"):
                model = build_model_tab(holder, settings)
            with gr.Tab("About", id="about"):
                build_about_tab()
        register_api(holder)

        # Plotly's code is parsed and set up the first time any chart is drawn (about a second of one main-thread
        # task on a slow laptop): a tiny chart nobody sees pays that while the page loads, not when a result arrives.
        gr.Plot(plots.warm_up(), visible="hidden", show_label=False, elem_id="plotly-warm-up")
        links.open_linked_tab(demo, {name: (items[name], tab) for name, tab in linked.items()}, holder, settings)

        if model.load is not None:

            @ui_errors
            def load_model(reference, backend, device, dtype, subset, progress=gr.Progress()):
                progress(0, desc="Step 1 of 3: finding and reading the checkpoint")
                # Downloads report each file's bytes done of bytes total; the log gets the same lines.
                new = load_explorer(
                    settings, reference, backend, device, dtype, subset, lambda part, text: progress(part, desc=text)
                )
                progress(0.9, desc="Step 2 of 3: swapping the model in for everyone")
                holder.swap(new)
                progress(0.95, desc="Step 3 of 3: updating every tab's language lists")
                info = new.info()
                log.info("now serving %s (%s)", info.model, info.reason)
                choices = language_choices(new)
                fill_codes = pick_languages(new, FILL_PREFERRED)
                compare_codes = pick_languages(new, COMPARE_PREFERRED, count=5)
                return {
                    banner: banner_markdown(info),
                    model.summary: summary_markdown(info),
                    model.languages: info.to_frame(),
                    fill.languages: gr.Dropdown(choices=language_choices(new, auto=True), value=fill_codes),
                    compare.languages: gr.Dropdown(choices=choices, value=compare_codes),
                    compare.reference: gr.Dropdown(choices=compare_codes, value=compare_codes[0]),
                    compare.layer: gr.Slider(maximum=info.layers, value=info.layers),
                    sentences.table: default_pairs(new.languages),
                    sentences.layer: gr.Slider(maximum=info.layers, value=info.layers),
                    classify.languages: gr.Dropdown(choices=choices, value=fill_codes),
                    classify.source: gr.Dropdown(choices=choices, value=default_source(new.languages)),
                    classify.targets: gr.Dropdown(choices=choices, value=lab.default_targets(new.languages)),
                    **{field: update for tab in reloaded.values() for field, update in tab.model_updates(new).items()},
                }

            model.confirm.click(
                load_model,
                [model.reference, model.backend, model.device, model.dtype, model.subset],
                [
                    banner,
                    model.summary,
                    model.languages,
                    fill.languages,
                    compare.languages,
                    compare.reference,
                    compare.layer,
                    sentences.table,
                    sentences.layer,
                    classify.languages,
                    classify.source,
                    classify.targets,
                    *[field for tab in reloaded.values() for field in tab.model_fields()],
                ],
                api_visibility="private",
                concurrency_limit=1,
                concurrency_id="load-model",
            )
    demo.queue(default_concurrency_limit=concurrency_for(explorer), max_size=256)
    return demo
