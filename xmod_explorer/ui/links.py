"""Deep links: one tab's input values read from the page address (?tab=NAME&...), each parameter on its own.

A parameter that does not fit is dropped with a fixed message naming only the parameter: nothing from the
address is ever shown back as text or markup. Values go into input components, never into Markdown.

How a link reaches its tab: a page-load script that runs in the browser only clicks the named tab, and that
tab's own select event reads the address and fills its inputs, once per page. Filling them from the server's
page-load event instead leaves the inputs of tabs not on screen greyed out for good in Gradio 6.17 (their
"pending" state is never cleared), and that event is the one that freezes the page (issue 16).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Protocol

import gradio as gr

from xmod_explorer.engine import Explorer
from xmod_explorer.errors import ExplorerError
from xmod_explorer.languages import resolve_language, resolve_languages
from xmod_explorer.settings import Settings
from xmod_explorer.ui.common import ModelHolder


class LinkedTab(Protocol):
    def link_fields(self) -> list: ...

    def from_link(self, params: Mapping[str, str], explorer: Explorer, settings: Settings) -> dict: ...


def open_linked_tab(
    demo: gr.Blocks, tabs: Mapping[str, tuple[gr.Tab, LinkedTab]], holder: ModelHolder, settings: Settings
) -> None:
    """Wire ?tab=NAME links: the browser opens the tab (its gr.Tab has elem_id tab-NAME), the tab fills itself."""
    names = json.dumps(sorted(tabs))
    demo.load(
        None,
        None,
        None,
        js=f"""() => {{
            const name = new URLSearchParams(window.location.search).get("tab");
            if ({names}.includes(name)) document.getElementById(`tab-${{name}}-button`)?.click();
        }}""",
    )
    for name, (item, tab) in tabs.items():
        _fill_when_opened(item, name, tab, holder, settings)


def _fill_when_opened(item: gr.Tab, name: str, tab: LinkedTab, holder: ModelHolder, settings: Settings) -> None:
    """The first time this tab is opened in a page, its inputs take the address's values if the link names it."""
    opened = gr.State(False)

    def fill(done, request: gr.Request):
        params = dict(request.query_params) if request is not None else {}
        if done or params.get("tab") != name:
            return {opened: True}
        return {opened: True, **tab.from_link(params, holder.explorer, settings)}

    item.select(fill, [opened], [opened, *tab.link_fields()], api_visibility="private", concurrency_limit=None)


def _dropped(key: str, what: str) -> None:
    gr.Warning(f"The link's {key} parameter was not used: {what}.")


def text(params: Mapping[str, str], key: str, settings: Settings) -> str | None:
    value = params.get(key)
    return value[: settings.limits.max_text_chars] if value else None


def languages(params: Mapping[str, str], key: str, explorer: Explorer, settings: Settings) -> list[str] | None:
    if not params.get(key):
        return None
    try:
        return resolve_languages(params[key], explorer.languages, max_count=settings.limits.max_languages)
    except ExplorerError:
        _dropped(key, "give codes of this model's languages, comma-separated")
        return None


def language(params: Mapping[str, str], key: str, explorer: Explorer) -> str | None:
    if not params.get(key):
        return None
    try:
        return resolve_language(params[key], explorer.languages)
    except ExplorerError:
        _dropped(key, "give the code of one of this model's languages")
        return None


def number(params: Mapping[str, str], key: str, low: int, high: int) -> int | None:
    """A whole number, clamped to [low, high]."""
    value = params.get(key, "")
    if not value:
        return None
    if not (value.isascii() and value.isdigit()):  # "²".isdigit() is True, int("²") fails
        _dropped(key, "give a whole number")
        return None
    return max(low, min(int(value), high))


def choice(params: Mapping[str, str], key: str, choices: list[str]) -> str | None:
    value = params.get(key)
    if not value:
        return None
    if value not in choices:
        _dropped(key, "give one of " + ", ".join(choices))
        return None
    return value


def present(values: Mapping) -> dict:
    """The entries that a link set, for a {component: value} update."""
    return {component: value for component, value in values.items() if value is not None}
