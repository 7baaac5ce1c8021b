"""Deep links: one tab's inputs read from the page address (?tab=NAME&...), filled in and run, and a Copy link
button per tab that writes the current inputs back into such an address.

A parameter that does not fit is dropped with a fixed message naming only the parameter: nothing from the
address is ever shown back as text or markup. Values go into input components, never into Markdown.

How a link reaches its tab, all of it started by the browser:
1. a page-load script that runs in the browser only (no server event) reads ?tab=NAME and clicks that tab's
   button, or, for the tab already on screen (the first one), a visually hidden "open link" button;
2. that select (or click) event reads the address on the server and fills the tab's inputs, once per page;
3. a browser-only step then clicks the tab's own run button, so the result is computed exactly as by hand.

Why not the server's page-load event: filling inputs from it (Gradio 6.17) froze the page's main thread for
45-107 s once a result with 12 adapters arrived in another tab (issue 16), and it leaves the inputs of tabs not
on screen greyed out for good (their "pending" state is never cleared). A hidden textbox's change event froze
the page too; events started by the browser on a visible tab do not.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Protocol

import gradio as gr
import pandas as pd

from xmod_explorer.engine import Explorer
from xmod_explorer.errors import ExplorerError
from xmod_explorer.languages import resolve_language, resolve_languages
from xmod_explorer.settings import Settings
from xmod_explorer.ui.common import ModelHolder

# Old links had no tab parameter and always meant the first tab.
FIRST_TAB = "fill"
# The browser-only step a tab chains after an event that a link may run before another (see LinkedTab.link_run).
NEXT_RUN = """() => {
    const next = (window.__xmodLinkNext || []).shift();
    if (next) document.getElementById(next)?.click();
}"""


class LinkedTab(Protocol):
    def link_fields(self) -> dict:
        """{parameter name: input component}, in the order they appear on the page."""
        ...

    def from_link(self, params: Mapping[str, str], explorer: Explorer, settings: Settings) -> dict: ...

    def link_run(self) -> str | list[str]:
        """The elem_id of the button a link clicks once the inputs are filled; a list: one after another, each
        next one clicked by the previous button's event through NEXT_RUN."""
        ...


def open_linked_tab(
    demo: gr.Blocks, tabs: Mapping[str, tuple[gr.Tab, LinkedTab]], holder: ModelHolder, settings: Settings
) -> None:
    """Wire ?tab=NAME links: the browser opens the tab (its gr.Tab has elem_id tab-NAME), the tab fills itself,
    the browser clicks its run button."""
    names = json.dumps(sorted(tabs))
    labels = json.dumps({name: item.label for name, (item, _) in tabs.items()})
    demo.load(
        None,
        None,
        None,
        js=f"""async () => {{
            const params = new URLSearchParams(window.location.search);
            let name = params.get("tab");
            if (!name && params.get("text")) name = "{FIRST_TAB}";
            if (!{names}.includes(name)) return;
            window.__xmodLink = name;
            // Let the page finish drawing its hidden warm-up chart first (at most 10 s), so that the link's result
            // is not drawn while the page is still busy loading.
            for (let waited = 0; waited < 10000 && !document.querySelector("#plotly-warm-up .main-svg"); waited += 100)
                await new Promise((resolve) => setTimeout(resolve, 100));
            if (name === "{FIRST_TAB}") {{
                document.getElementById("link-open-{FIRST_TAB}")?.click();
                return;
            }}
            // On a narrow screen the tab's button may sit in the tab bar's overflow menu, which has no ids.
            const button = document.getElementById(`tab-${{name}}-button`) ||
                [...document.querySelectorAll(".overflow-dropdown button")]
                    .find((item) => item.textContent.trim() === {labels}[name]);
            button?.click();
        }}""",
    )
    for name, (item, tab) in tabs.items():
        trigger = item.select
        if name == FIRST_TAB:  # already on screen: selecting it fires nothing, so a hidden button opens the link
            trigger = gr.Button("Open link", visible="hidden", elem_id=f"link-open-{name}").click
        _fill_when_opened(trigger, name, tab, holder, settings)


def _fill_when_opened(trigger, name: str, tab: LinkedTab, holder: ModelHolder, settings: Settings) -> None:
    """The first time this tab is opened in a page, its inputs take the address's values if the link names it,
    and then the browser clicks the tab's run button."""
    opened = gr.State(False)

    def fill(done, request: gr.Request):
        params = dict(request.query_params) if request is not None else {}
        named = params.get("tab") or (FIRST_TAB if params.get("text") else None)
        if done or named != name:
            return {opened: True}
        return {opened: True, **tab.from_link(params, holder.explorer, settings)}

    fields = list(tab.link_fields().values())
    runs = tab.link_run()
    runs = [runs] if isinstance(runs, str) else list(runs)
    trigger(fill, [opened], [opened, *fields], api_visibility="private", concurrency_limit=None).then(
        None,
        None,
        None,
        js=f"""() => {{
            if (window.__xmodLink !== "{name}") return;
            window.__xmodLink = null;
            window.__xmodLinkNext = {json.dumps(runs[1:])};
            performance.mark("xmod-link-run");
            document.getElementById("{runs[0]}")?.click();
        }}""",
    )
    _copy_link(name, tab)


def link_row(name: str) -> tuple[gr.Button, gr.Textbox]:
    """A "Copy link" button and the box that shows the link it copied; placed by each tab beside its run button."""
    with gr.Row():
        button = gr.Button("Copy link", size="sm", scale=0, min_width=120, elem_id=f"{name}-copy-link")
        box = gr.Textbox(
            label="Link to this view (copied when you click Copy link)",
            interactive=False,
            max_lines=1,
            scale=4,
            elem_id=f"{name}-link",
        )
    return button, box


def _copy_link(name: str, tab: LinkedTab) -> None:
    """Copy link, in the browser only: the tab's current inputs written as ?tab=NAME&key=value..."""
    copy, box = getattr(tab, "copy_link", None), getattr(tab, "link_box", None)
    if copy is None or box is None:
        return
    fields = tab.link_fields()
    copy.click(
        None,
        list(fields.values()),
        [box],
        js=f"""(...values) => {{
            const params = new URLSearchParams();
            params.set("tab", "{name}");
            {json.dumps(list(fields))}.forEach((key, i) => {{
                let value = values[i];
                if (value === null || value === undefined) return;
                if (Array.isArray(value)) value = value.join(",");
                else if (typeof value === "object") {{
                    const rows = Array.isArray(value.data) ? value.data : [];
                    value = rows.filter((row) => row.some((cell) => String(cell ?? "").trim()))
                        .map((row) => row.map((cell) => String(cell ?? "").replace(/[\\t\\n]/g, " ")).join("\\t"))
                        .join("\\n");
                }} else if (typeof value === "boolean") value = value ? "1" : "0";
                value = String(value);
                if (value !== "") params.set(key, value);
            }});
            const url = `${{window.location.origin}}${{window.location.pathname}}?${{params}}`;
            navigator.clipboard?.writeText(url).catch(() => {{}});
            return url;
        }}""",
        api_visibility="private",
    )


def dropped(key: str, what: str) -> None:
    # Toasts render HTML: the message is fixed text, escaped all the same.
    gr.Warning(html.escape(f"The link's {key} parameter was not used: {what}."))


def text(params: Mapping[str, str], key: str, settings: Settings) -> str | None:
    value = params.get(key)
    return value[: settings.limits.max_text_chars] if value else None


def languages(params: Mapping[str, str], key: str, explorer: Explorer, settings: Settings) -> list[str] | None:
    if not params.get(key):
        return None
    try:
        return resolve_languages(params[key], explorer.languages, max_count=settings.limits.max_languages)
    except ExplorerError:
        dropped(key, "give codes of this model's languages, comma-separated")
        return None


def language(params: Mapping[str, str], key: str, explorer: Explorer) -> str | None:
    if not params.get(key):
        return None
    try:
        return resolve_language(params[key], explorer.languages)
    except ExplorerError:
        dropped(key, "give the code of one of this model's languages")
        return None


def whole_number(value: str) -> bool:
    """Only the digits 0-9: str.isdigit() also accepts '²' or Arabic-Indic digits, which int() may refuse."""
    return bool(value) and value.isascii() and value.isdigit()


def number(params: Mapping[str, str], key: str, low: int, high: int) -> int | None:
    """A whole number, clamped to [low, high]."""
    value = params.get(key, "").strip()
    if not value:
        return None
    if not whole_number(value):
        dropped(key, "give a whole number")
        return None
    return max(low, min(int(value), high))


def flag(params: Mapping[str, str], key: str) -> bool | None:
    """1/true/yes or 0/false/no."""
    value = params.get(key, "").strip().lower()
    if not value:
        return None
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    dropped(key, "give 1 or 0")
    return None


def choice(params: Mapping[str, str], key: str, choices: list[str]) -> str | None:
    value = params.get(key)
    if not value:
        return None
    if value not in choices:
        dropped(key, "give one of " + ", ".join(choices))
        return None
    return value


def rows(params: Mapping[str, str], key: str, explorer: Explorer, settings: Settings) -> pd.DataFrame | None:
    """Sentences as lines of 'code<TAB>text'; a line whose code the model lacks drops the whole parameter."""
    value = params.get(key)
    if not value:
        return None
    table = []
    for line in value.splitlines():
        if not line.strip():
            continue
        if len(table) == settings.limits.max_sentences:
            dropped(key, f"at most {settings.limits.max_sentences} sentences; the rest were left out")
            break
        code, _, sentence = line.partition("\t")
        try:
            code = resolve_language(code.strip(), explorer.languages)
        except ExplorerError:
            dropped(key, "give lines of a language code of this model, a tab, and a sentence")
            return None
        table.append([code, sentence.strip()[: settings.limits.max_text_chars]])
    return pd.DataFrame(table, columns=["language", "text"]) if table else None


def present(values: Mapping) -> dict:
    """The entries that a link set, for a {component: value} update."""
    return {component: value for component, value in values.items() if value is not None}
