"""Which model to load when none is named, and the short names users may give instead of a path."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from xmod_explorer import hub

log = logging.getLogger(__name__)
Loaded = TypeVar("Loaded")

DEFAULT_MODEL = "facebook/xmod-base"
_PACKAGE = Path(__file__).resolve().parent
# Installed from a wheel the assets sit inside the package; in a checkout, beside it.
ASSETS = _PACKAGE / "assets" if (_PACKAGE / "assets").is_dir() else _PACKAGE.parent / "assets"
MINI_PATH = ASSETS / "xmod-mini"
RANDOM_NOTE = "random weights, outputs are meaningless"
# Shown wherever the embedded model's results could be read as findings about X-MOD itself.
MINI_NOTE = (
    "The embedded mini X-MOD was pre-trained only on LibreOffice's help pages (software documentation in 12 "
    "languages) and has never seen a review: its sentiment results in the transfer lab show how the lab works, "
    "not what X-MOD can do."
)


def is_mini(folder: str | Path) -> bool:
    """Whether folder is the embedded mini model (however it was named when loaded)."""
    return Path(folder).resolve() == MINI_PATH.resolve()


@dataclass(frozen=True)
class ModelChoice:
    """A model reference to load and the reason it was chosen (shown in the UI and the log)."""

    reference: str
    reason: str
    random_weights: bool = False
    name: str | None = None  # what to call it in the UI when the reference is a bare path


def mini_available() -> bool:
    return (MINI_PATH / "config.json").exists()


def build_random_fallback() -> ModelChoice:
    """A tiny random X-MOD in a temporary folder: the last resort when no real model is at hand."""
    from xmod_explorer.tiny import TinySpec, build_random_checkpoint

    folder = Path(tempfile.mkdtemp(prefix="xmod-random-"))
    languages = ["en_XX", "de_DE", "fr_XX", "es_XX", "ru_RU", "ja_XX", "zh_CN", "hi_IN"]
    build_random_checkpoint(folder, TinySpec(languages=languages, hidden_size=64, num_heads=4, intermediate_size=128))
    return ModelChoice(str(folder), f"tiny model with {RANDOM_NOTE}", random_weights=True, name="random-tiny-xmod")


def resolve_alias(reference: str) -> ModelChoice | None:
    """'mini' is the embedded model in assets/, 'random' a tiny random one; None for anything else."""
    name = reference.strip().lower()
    if name in {"mini", "xmod-mini"}:
        return ModelChoice(str(MINI_PATH), "the embedded mini X-MOD in assets/, asked for by name", name="xmod-mini")
    if name in {"random", "tiny-random"}:
        return build_random_fallback()
    return None


def fallback(why: str) -> ModelChoice:
    """The embedded mini X-MOD (else a tiny random one), with why the default was not used."""
    if mini_available():
        return ModelChoice(str(MINI_PATH), f"{why}: using the embedded mini X-MOD", name="xmod-mini")
    choice = build_random_fallback()
    return ModelChoice(choice.reference, f"{why}: {choice.reason}", True, choice.name)


def load_default(load: Callable[[str], Loaded]) -> tuple[Loaded, ModelChoice]:
    """Load the default model with load(reference); whatever goes wrong with it, load the fallback instead.

    Start-up must never crash because of the default: no tokenizer, a partial or corrupt download,
    too little memory. The returned choice's reason says what failed and what to do about it.
    """
    choice = resolve_default()
    if choice.reference != DEFAULT_MODEL:
        return load(choice.reference), choice
    try:
        return load(DEFAULT_MODEL), choice
    except Exception as exc:  # any failure of the default, including ones no check foresaw
        from xmod_explorer.errors import ExplorerError

        log.warning("the default model %s could not be loaded", DEFAULT_MODEL, exc_info=True)
        if isinstance(exc, ExplorerError):
            why = f"{DEFAULT_MODEL} could not be loaded: {str(exc).rstrip('.')}"
        else:
            why = (
                f"{DEFAULT_MODEL} could not be loaded ({type(exc).__name__}: {str(exc)[:200]}); the log has the "
                f"details. Download it again with `{hub.download_command(DEFAULT_MODEL)} --force-download`"
            )
        backup = fallback(why)
        return load(backup.reference), backup


def resolve_default() -> ModelChoice:
    """facebook/xmod-base if cached or downloadable; else the embedded mini model; else a random one."""
    from xmod_explorer.errors import ExplorerError

    try:
        hub.fetch_cached(DEFAULT_MODEL)
        return ModelChoice(DEFAULT_MODEL, f"{DEFAULT_MODEL} found in the local Hugging Face cache")
    except ExplorerError:
        pass
    if hub.hub_offline():
        why = "HF_HUB_OFFLINE is set"
    elif hub.hub_reachable():
        return ModelChoice(DEFAULT_MODEL, f"{DEFAULT_MODEL} downloaded from the Hugging Face hub")
    else:
        why = "the hub cannot be reached"
    return fallback(f"{DEFAULT_MODEL} is not cached and {why}")
