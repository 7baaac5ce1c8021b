"""Compose the tabs into one Gradio app and wire what crosses tab borders (model loading, deep links)."""

from __future__ import annotations

import logging
import os
import weakref

import gradio as gr
from starlette.middleware import Middleware

from xmod_explorer import lab, plots
from xmod_explorer.budget import Budget, GiB
from xmod_explorer.engine import Explorer
from xmod_explorer.machine import available_memory_bytes, matmul_flops_per_second, torch_threads
from xmod_explorer.settings import Settings
from xmod_explorer.ui import allocator, gradio_upkeep, links
from xmod_explorer.ui.about import build_about_tab
from xmod_explorer.ui.api import register_api
from xmod_explorer.ui.classify import build_classify_tab, default_source
from xmod_explorer.ui.common import (
    DOWNLOAD_SECONDS,
    ModelHolder,
    language_choices,
    pick_languages,
    remove_old_downloads,
    ui_errors,
)
from xmod_explorer.ui.compare import PREFERRED as COMPARE_PREFERRED
from xmod_explorer.ui.compare import build_compare_tab
from xmod_explorer.ui.fill_mask import PREFERRED as FILL_PREFERRED
from xmod_explorer.ui.fill_mask import build_fill_mask_tab
from xmod_explorer.ui.http_guard import RequestGuard
from xmod_explorer.ui.identify import build_identify_tab
from xmod_explorer.ui.lens import build_lens_tab
from xmod_explorer.ui.maps import build_map_tab
from xmod_explorer.ui.mix import build_mix_tab
from xmod_explorer.ui.model import banner_markdown, build_model_tab, load_explorer, shown_info, summary_markdown
from xmod_explorer.ui.sentences import build_sentences_tab, default_pairs
from xmod_explorer.ui.serving import Serving, start_janitor

log = logging.getLogger(__name__)

CSS = """
#model-banner { font-size: 0.95em; opacity: 0.9; }
.gradio-container { max-width: 1400px !important; }
/* Charts follow the page's theme: their backgrounds are transparent (plots._layout); in dark mode the axis, title
   and legend text and the grid take the page's colours (cell labels inside heatmaps keep Plotly's contrast). */
.dark .js-plotly-plot .main-svg :is(.xtick, .ytick, .g-xtitle, .g-ytitle, .gtitle, .legendtext, .legendtitletext,
    .annotation-text, .cbtitle, .cbaxis) text,
.dark .js-plotly-plot .main-svg :is(.gtitle, .legendtext, .annotation-text) {
    fill: var(--body-text-color) !important;
}
.dark .js-plotly-plot .main-svg :is(.gridlayer path, .zerolinelayer path) { stroke: #555 !important; }
.dark .js-plotly-plot .main-svg .legend .bg { fill: transparent !important; }
/* Contrast of at least 4.5:1 for text on buttons, placeholders, small print and the footer (WCAG AA), light and
   dark: Gradio 6.17's defaults give 2.8:1 on the orange buttons and 1.9:1 for placeholders. */
:root, .dark {
    --button-primary-background-fill: #b93c0b !important;
    --button-primary-background-fill-hover: #9a3412 !important;
    --button-primary-text-color: #ffffff !important;
    --button-cancel-background-fill: #b91c1c !important;
    --button-cancel-background-fill-hover: #991b1b !important;
    --button-cancel-text-color: #ffffff !important;
}
:root { --input-placeholder-color: #6b6b76 !important; --body-text-color-subdued: #5c5c66 !important; }
.dark { --input-placeholder-color: #a9a9b4 !important; --body-text-color-subdued: #b4b4be !important; }
input::placeholder, textarea::placeholder { color: var(--input-placeholder-color) !important; opacity: 1; }
.slider_input_container .min_value, .slider_input_container .max_value, footer, footer a, .show-api, .built-with,
.or { color: var(--body-text-color-subdued) !important; opacity: 1 !important; }
/* A phone-wide page must not scroll sideways: charts shrink with their column. */
.js-plotly-plot, .plot-container { max-width: 100%; }
"""


BUDGET_SHARE = 0.75  # of the memory free once the model is loaded, unless --memory-budget says otherwise

_serving: weakref.WeakKeyDictionary[gr.Blocks, Serving] = weakref.WeakKeyDictionary()


def serving_of(demo: gr.Blocks) -> Serving:
    """The serving layer (budget, jobs, sessions) of an app made by build_app."""
    return _serving[demo]


# Runs once in the browser when the page loads (from the page's head: launch(js=...) is not run as a script).
# Gradio 6.17 leaves some of its own markup inaccessible; this repairs it after each render (debounced, cheap:
# a few selector queries, never a long task):
# - inputs with no accessible name (the dropdowns' search boxes) get their block's label as aria-label;
# - the hidden copy of the tab bar (for its overflow menu) takes its buttons out of the keyboard order, so that
#   every tab is one tab stop, not two;
# - a table's drop-a-file button wrapper and its nested grid roles (interactive content inside a button, a grid
#   holding a button) become plain groups: the table inside keeps its native table semantics;
# - an empty plot's placeholder, a div with an aria-label, gets the role that allows one.
A11Y_HEAD = """<script>
(() => {
  const start = () => {
    const repair = () => {
        for (const field of document.querySelectorAll("input:not([type=hidden]), textarea, select")) {
            if (field.labels?.length || field.getAttribute("aria-label") || field.getAttribute("aria-labelledby"))
                continue;
            const label = field.closest(".block")?.querySelector('[data-testid="block-info"]')?.textContent?.trim();
            if (label) field.setAttribute("aria-label", label);
        }
        for (const button of document.querySelectorAll('.tab-container[aria-hidden="true"] button'))
            button.setAttribute("tabindex", "-1");
        for (const grid of document.querySelectorAll('.table-wrap[role="grid"], .virtual-table-viewport[role="grid"]'))
            grid.removeAttribute("role");
        for (const drop of document.querySelectorAll("button[aria-dropeffect]")) {
            drop.removeAttribute("aria-dropeffect");
            drop.setAttribute("role", "group");
            drop.setAttribute("tabindex", "-1");
        }
        for (const empty of document.querySelectorAll("div.empty[aria-label]:not([role])"))
            empty.setAttribute("role", "img");
    };
    let pending = null;
    new MutationObserver(() => {
        if (pending === null) pending = setTimeout(() => { pending = null; repair(); }, 150);
    }).observe(document.body, {childList: true, subtree: true});
    repair();
  };
  // Gradio may add this to the head after the document has loaded.
  if (document.readyState === "loading") window.addEventListener("DOMContentLoaded", start);
  else start();
})();
</script>"""


def launch_options(settings: Settings, demo: gr.Blocks) -> dict:
    """Keyword arguments for demo.launch() that follow from the settings (app.py and the tests use them)."""
    serving = serving_of(demo)
    guard = Middleware(
        RequestGuard,
        limits=settings.limits,
        on_client_gone=serving.client_gone,
        pages=serving.live_pages,
        on_request=serving.loop_upkeep,
    )
    return {
        "server_name": settings.host,
        "server_port": settings.port,
        "share": settings.share,
        "show_error": False,
        "max_file_size": settings.limits.max_upload_bytes,
        "mcp_server": settings.mcp or None,
        "footer_links": ["api", "gradio"],
        "css": CSS,
        "head": A11Y_HEAD,
        "app_kwargs": {"middleware": [guard]},
    }


def memory_budget(settings: Settings, explorer: Explorer) -> Budget:
    """The server's budget: --memory-budget, else a share of the memory (or GPU memory) free now that the model
    is loaded; the machine's speed is measured once for the time estimates."""
    device = explorer.loaded.device
    if settings.memory_budget_gib:
        capacity = int(settings.memory_budget_gib * GiB)
    else:
        free = available_memory_bytes(device)
        capacity = int(BUDGET_SHARE * free) if free else 4 * GiB
    return Budget(
        capacity,
        flops_per_second=matmul_flops_per_second(device),
        max_running=passes_at_once(device),
        threads=torch_threads() if device.type == "cpu" else None,
    )


def passes_at_once(device) -> int:
    """Forward passes that may run at once: a CPU's cores (more only share them, and each pass waits longer), or
    four on a GPU, where passes overlap well."""
    if device.type != "cpu":
        return 4
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def build_app(settings: Settings, explorer: Explorer, *, budget: Budget | None = None) -> gr.Blocks:
    """The whole app around one loaded Explorer; budget: the server's memory budget (default memory_budget())."""
    allocator.limit_arenas()
    serving = Serving(settings.limits, budget or memory_budget(settings, explorer))
    holder = ModelHolder(explorer, serving, batch=settings.batch)
    # Files Gradio keeps for the page (uploads, its copies of downloads) go after limits.file_seconds.
    lifetime = int(settings.limits.file_seconds)
    with gr.Blocks(title="X-MOD Explorer", delete_cache=(max(1, min(600, lifetime // 6)), lifetime)) as demo:
        gr.Markdown("# X-MOD Explorer\nSee what the language adapters of a multilingual X-MOD model do.")
        banner = gr.Markdown(banner_markdown(shown_info(explorer.info(), settings)), elem_id="model-banner")
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
        register_api(holder, settings)

        # Plotly's code is parsed and set up the first time any chart is drawn (about a second of one main-thread
        # task on a slow laptop): a tiny chart nobody sees pays that while the page loads, not when a result arrives.
        gr.Plot(plots.warm_up(), visible="hidden", show_label=False, elem_id="plotly-warm-up")
        links.open_linked_tab(demo, {name: (items[name], tab) for name, tab in linked.items()}, holder, settings)

        def page_closed(request: gr.Request):
            """The page's heartbeat ended (tab closed): stop its requests, free what its lab session held."""
            if request is not None and request.session_hash:
                serving.client_gone(request.session_hash)
                serving.sessions.drop_owner(request.session_hash)

        demo.unload(page_closed)

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
    # Gradio's per-event limits would let about 2 x 21 event groups run at once; the budget decides instead, for
    # all endpoints together, so Gradio hands every event straight to its handler.
    demo.queue(default_concurrency_limit=None, max_size=256)
    _serving[demo] = serving
    reference = weakref.ref(demo)

    def gradio_leftovers() -> None:
        app = reference()
        if app is not None:
            dropped = gradio_upkeep.forget_finished_events(app)
            dropped += gradio_upkeep.forget_idle_sessions(app, serving.live_pages)
            if dropped:
                allocator.release_freed_memory()

    def finished_tasks() -> None:
        app = reference()
        if app is not None:
            gradio_upkeep.forget_finished_tasks(app)

    serving.add_upkeep(lambda: remove_old_downloads(min(settings.limits.file_seconds, DOWNLOAD_SECONDS)))
    serving.add_upkeep(gradio_leftovers)
    serving.add_upkeep(finished_tasks, in_loop=True)
    start_janitor(serving)
    log.info("%s", serving.describe())
    return demo
