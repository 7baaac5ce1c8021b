"""Deep links: one tab's input values read from the page address (?tab=NAME&...), each parameter on its own.

A parameter that does not fit is dropped with a fixed message naming only the parameter: nothing from the
address is ever shown back as text or markup. Values go into input components, never into Markdown.
"""

from __future__ import annotations

from collections.abc import Mapping

import gradio as gr

from xmod_explorer.engine import Explorer
from xmod_explorer.errors import ExplorerError
from xmod_explorer.languages import resolve_language, resolve_languages
from xmod_explorer.settings import Settings


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
    if not value.isdigit():
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
