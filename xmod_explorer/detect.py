"""A fast off-the-shelf language detector (py3langid), its guesses mapped to a model's X-MOD codes.

py3langid is a character n-gram naive Bayes classifier (langid.py's model, 97 languages). It is restricted
to the languages of the candidate adapters, as the model's own judgement is: on this project's held-out
sentences that restriction fixed every error it made on short fragments (see README).
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import threading
from collections.abc import Sequence
from dataclasses import dataclass

DETECTOR = "py3langid"


@dataclass
class DetectorGuess:
    """The detector's best language: its own ISO 639-1 label, the X-MOD code that label maps to (None when
    no candidate has it), and its probability among the languages it was allowed (0 to 1)."""

    detector: str
    label: str
    language: str | None
    probability: float
    allowed: list[str]

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def iso_code(code: str) -> str:
    """The ISO 639-1 part of an X-MOD code: de_DE -> de."""
    return code.split("_")[0].lower()


def available() -> bool:
    try:
        import py3langid  # noqa: F401
    except ImportError:
        return False
    return True


_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _full_identifier():
    """py3langid's model over all its languages, loaded once (about half a second)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


@functools.lru_cache(maxsize=16)
def _identifier(allowed: tuple[str, ...]):
    """A copy restricted to some languages; set_languages builds new arrays, so copies share the loaded model."""
    identifier = copy.copy(_full_identifier())
    identifier.set_languages(list(allowed))
    return identifier


def detect(text: str, candidates: Sequence[str]) -> DetectorGuess | None:
    """py3langid's guess for text among the candidates' languages; None without py3langid or a candidate it knows.

    Of two candidates sharing a language (zh_CN and zh_TW), the first in the given order is named."""
    if not available():
        return None
    by_iso: dict[str, str] = {}
    for code in candidates:
        by_iso.setdefault(iso_code(code), code)
    with _lock:  # building identifiers is not thread-safe; classifying with a built one is
        known = set(_full_identifier().labels)
        allowed = tuple(sorted(label for label in by_iso if label in known))
        if not allowed:
            return None
        identifier = _identifier(allowed)
    label, probability = identifier.classify(text)
    version = importlib.metadata.version(DETECTOR)
    return DetectorGuess(f"{DETECTOR} {version}", label, by_iso.get(label), float(probability), list(allowed))
