"""Helpers every tab uses: error translation, GPU wrapping, language choices, CSV downloads."""

from __future__ import annotations

import atexit
import csv
import functools
import html
import logging
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
import pandas as pd

from xmod_explorer import jobs
from xmod_explorer.batching import MaskBatcher
from xmod_explorer.engine import Explorer
from xmod_explorer.errors import ExplorerError
from xmod_explorer.languages import display_name
from xmod_explorer.settings import Settings
from xmod_explorer.ui import allocator

if TYPE_CHECKING:  # the holder carries the serving layer, which itself builds on this module
    from xmod_explorer.ui.serving import Serving

log = logging.getLogger(__name__)

try:  # On a ZeroGPU Space, functions that touch the GPU must be wrapped; elsewhere this is a no-op.
    import spaces

    gpu = spaces.GPU
except ImportError:  # pragma: no cover - depends on the host

    def gpu(fn):
        return fn


def ui_errors(fn, escape_html: bool = True):
    """Show ExplorerError messages as gr.Error; log anything else and show a short message, no traceback.

    The page renders error toasts as HTML, where a message naming <mask> would lose the word, so
    messages are escaped for it; API endpoints (escape_html=False) hand the text over as it is.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ExplorerError as exc:
            raise gr.Error(html.escape(str(exc)) if escape_html else str(exc), print_exception=False) from None
        except Exception as exc:  # the app must keep serving whatever went wrong
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(
                f"Something went wrong on the server ({type(exc).__name__}). Try again, or with a shorter input.",
                print_exception=False,
            ) from None
        finally:
            allocator.release_freed_memory()

    return wrapper


class ModelHolder:
    """The one shared Explorer, swapped as a whole when the Model tab loads another model, and the serving
    layer every heavy handler runs through (holder.serving.heavy). Fill-mask requests go through
    predict_masks, which shares forward passes between users (batch=True) or runs each alone."""

    def __init__(self, explorer: Explorer, serving: Serving, *, batch: bool = True):
        self._explorer = explorer
        self._lock = threading.Lock()
        self.serving = serving
        self.batcher = (
            MaskBatcher(
                lambda: self.explorer,
                run=self._shared_pass,
                alone=self._one_pass,
                workers=serving.budget.max_running or 1,  # one pass per place of the budget (a CPU: per core)
            )
            if batch
            else None
        )

    def predict_masks(self, text, languages, top_k):
        """Explorer.predict_masks on the current model: in a pass shared with other users' requests if batching
        (waiting, the caller's job can still be stopped), else alone."""
        if self.batcher is None:
            return self.explorer.predict_masks(text, languages, top_k)
        return self.batcher.predict_masks(text, languages, top_k, check=jobs.checkpoint)

    def _pass_job(self, what: str, serves: int = 1) -> jobs.Job:
        """The batcher's passes run as jobs of the server's memory budget, like every other forward pass; a shared
        pass takes its place in the budget's line by its work per request."""
        return jobs.Job(budget=self.serving.budget, what=what, serves=serves)

    def _shared_pass(self, explorer: Explorer, requests: list) -> list:
        with jobs.running(self._pass_job("A shared fill-mask pass", serves=len(requests))):
            return explorer.predict_masks_together(requests)

    def _one_pass(self, explorer: Explorer, request):
        with jobs.running(self._pass_job("This request")):
            return explorer.run_mask_request(request)

    @property
    def explorer(self) -> Explorer:
        return self._explorer

    def swap(self, explorer: Explorer) -> None:
        with self._lock:
            old, self._explorer = self._explorer, explorer
        del old


# The engine reads "auto" in predict_masks' languages as the adapter that fits the text best.
AUTO_CHOICE = ("auto: the adapter that fits the text best", "auto")


def language_choices(explorer: Explorer, *, auto: bool = False) -> list[tuple[str, str]]:
    """Dropdown choices: readable label shown, code sent; with auto, the "auto" choice first."""
    return [AUTO_CHOICE] * auto + [(display_name(code), code) for code in explorer.languages]


def text_box(settings: Settings, value: str, *, label: str, elem_id: str, scale: int | None = None) -> gr.Textbox:
    """The text a tab analyses, capped at the server's character limit. One line to start with (it grows with
    the text), so that Enter runs the tab, as people expect; a multi-line box would need Shift+Enter."""
    return gr.Textbox(
        label=label,
        value=value,
        lines=1,
        max_lines=6,
        scale=scale,
        max_length=settings.limits.max_text_chars,
        elem_id=elem_id,
    )


def language_dropdown(
    explorer: Explorer,
    settings: Settings,
    value,
    *,
    label: str,
    elem_id: str,
    multiselect: bool = True,
    auto: bool = False,
) -> gr.Dropdown:
    """A searchable dropdown of the model's languages (names shown, codes sent), capped like the engine."""
    return gr.Dropdown(
        choices=language_choices(explorer, auto=auto),
        value=value,
        multiselect=multiselect,
        filterable=True,
        max_choices=settings.limits.max_languages if multiselect else None,
        label=label,
        elem_id=elem_id,
    )


def pick_languages(explorer: Explorer, preferred: list[str], count: int = 4) -> list[str]:
    """The preferred codes the model has, topped up from its own list."""
    chosen = [code for code in preferred if code in explorer.languages][:count]
    for code in explorer.languages:
        if len(chosen) >= min(count, len(explorer.languages)):
            break
        if code not in chosen:
            chosen.append(code)
    return chosen


_files_root: Path | None = None
_files_lock = threading.Lock()


# Gradio copies a returned file into its own cache (which delete_cache empties) as it answers, so the
# app's own copy is needed only for a moment; folders older than this are removed by the janitor.
DOWNLOAD_SECONDS = 600.0


def downloads_root() -> Path:
    """The one folder under which the app writes files for download; made on first use, removed at exit."""
    global _files_root
    with _files_lock:
        if _files_root is None:
            _files_root = Path(tempfile.mkdtemp(prefix="xmod-explorer-files-"))
            atexit.register(shutil.rmtree, _files_root, ignore_errors=True)
        return _files_root


def fresh_folder() -> Path:
    """A new empty folder for one download, under downloads_root()."""
    return Path(tempfile.mkdtemp(dir=downloads_root()))


def remove_old_downloads(max_age: float = DOWNLOAD_SECONDS) -> int:
    """Delete download folders older than max_age seconds; returns how many went."""
    if _files_root is None or not _files_root.exists():
        return 0
    now = time.time()
    removed = 0
    for folder in _files_root.iterdir():
        try:
            if now - folder.stat().st_mtime > max_age:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        except OSError:
            continue
    return removed


# A cell a spreadsheet would read as a formula or a command: prefix it with an apostrophe, which spreadsheets
# show as text and do not display (OWASP's advice for CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of frame whose text cells (and column names) cannot start a formula in a spreadsheet."""

    def safe(value):
        return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value

    safe_frame = frame.copy()
    for column in safe_frame.columns:
        if safe_frame[column].dtype == object or pd.api.types.is_string_dtype(safe_frame[column]):
            safe_frame[column] = safe_frame[column].map(safe)
    safe_frame.columns = [safe(str(column)) for column in safe_frame.columns]
    return safe_frame


def csv_file(frame: pd.DataFrame, stem: str) -> str:
    """Write a table to a fresh CSV file for a download button, safe to open in a spreadsheet."""
    path = fresh_folder() / f"{stem}.csv"
    # Every text cell quoted: a token holding a carriage return must not split its row in a spreadsheet.
    spreadsheet_safe(frame).to_csv(path, index=False, quoting=csv.QUOTE_NONNUMERIC)
    return str(path)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def escape(text: str) -> str:
    """Text from users or the vocabulary, safe inside Markdown: HTML escaped, Markdown syntax neutralised."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=True))


# A table on the page shows at most this many rows (each is markup the browser lays out); the CSV has all of them.
MAX_SHOWN_ROWS = 100
# Above this many adapters a table with one column per adapter is turned to one row per adapter: a table lays out
# every column but only the rows in view, and 81 columns held the browser's main thread for a third of a second.
MAX_ADAPTER_COLUMNS = 12


def summarised(frame: pd.DataFrame, label: str, *, visible: bool = True) -> gr.Dataframe:
    """A Dataframe update showing the first MAX_SHOWN_ROWS rows of frame, its label saying so when rows were left
    out (sort the frame first so that the first rows are the ones worth seeing)."""
    if len(frame) <= MAX_SHOWN_ROWS:
        # No label in the update: Gradio 6.17 then redraws the whole table, which took seconds in the browser.
        return gr.Dataframe(value=frame, visible=visible)
    label = f"{label}: the first {MAX_SHOWN_ROWS} of {len(frame):,} rows (the CSV has all)"
    return gr.Dataframe(value=frame.head(MAX_SHOWN_ROWS), label=label, visible=visible)
