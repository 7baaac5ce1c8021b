"""Build the embedded model's corpus from Debian's LibreOffice help packages.

Each package holds the same ~2,560 HTML help pages translated into one language. We keep
the text of ``<p>`` paragraphs, drop short ones and untranslated English fallbacks, dedupe,
and split train / held-out by a hash of the text, writing one file per language and split.
Hindi, whose help is mostly untranslated, also gets LibreOffice's Hindi UI messages.
"""

from __future__ import annotations

import gettext
import hashlib
import json
import re
import subprocess
import tempfile
import unicodedata
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from xmod_explorer.languages import LANGUAGE_NAMES

# xmod-base code -> suffix of the Debian package libreoffice-help-<suffix>.
HELP_PACKAGES: dict[str, str] = {
    "en_XX": "en-us",
    "de_DE": "de",
    "fr_XX": "fr",
    "es_XX": "es",
    "it_IT": "it",
    "ru_RU": "ru",
    "el_GR": "el",
    "ja_XX": "ja",
    "zh_CN": "zh-cn",
    "hi_IN": "hi",
    "ko_KR": "ko",
    "fi_FI": "fi",
}
# The mini model's languages in xmod-base's order, so lang ids follow the same convention.
MINI_LANGUAGES: list[str] = [code for code in LANGUAGE_NAMES if code in HELP_PACKAGES]
# The other LibreOffice help languages that have an xmod-base code: the ones that can be added to the
# pre-trained mini model post hoc (python -m xmod_explorer.mini add-language CODE).
POST_HOC_PACKAGES: dict[str, str] = {
    "ca_ES": "ca",
    "cs_CZ": "cs",
    "da_DK": "da",
    "et_EE": "et",
    "eu_ES": "eu",
    "gl_ES": "gl",
    "hu_HU": "hu",
    "id_ID": "id",
    "km_KH": "km",
    "nl_XX": "nl",
    "pl_PL": "pl",
    "pt_XX": "pt",
    "sk_SK": "sk",
    "sl_SI": "sl",
    "sv_SE": "sv",
    "tr_TR": "tr",
    "vi_VN": "vi",
    "zh_TW": "zh-tw",
}
# Written without spaces between words: length is measured in characters there.
UNSPACED = {"ja_XX", "zh_CN", "zh_TW", "km_KH"}
LATIN_SCRIPT = {"en_XX", "de_DE", "fr_XX", "es_XX", "it_IT", "fi_FI"} | {
    code for code in POST_HOC_PACKAGES if code not in UNSPACED
}
MIN_WORDS = 5
MIN_CHARS_UNSPACED = 12
HELDOUT_PER_MILLE = 20
MAX_LATIN_SHARE = 0.7
MAX_ENGLISH_WORD_SHARE = 0.8
# LibreOffice's help pages end with a generated "Title is: <page title>" line, in English
# even in translations: navigation, not text.
GENERATED_PREFIXES = ("Title is:",)
ENGLISH = "en_XX"
# Hindi help is mostly untranslated; LibreOffice's Hindi UI messages (same domain) add to it.
UI_SUPPLEMENT: dict[str, str] = {"hi_IN": "libreoffice-l10n-hi"}


class _ParagraphParser(HTMLParser):
    """Collects the text of every <p> element; markup inside a paragraph becomes plain text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._depth = 0
        self._skip = 0
        self._parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "p":
            if self._depth == 0:
                self._parts = []
            self._depth += 1
        elif tag == "br" and self._depth:
            self._parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag == "p" and self._depth:
            self._depth -= 1
            if self._depth == 0:
                self.paragraphs.append("".join(self._parts))

    def handle_data(self, data: str) -> None:
        if self._depth and not self._skip:
            self._parts.append(data)


def normalize_text(text: str) -> str:
    """NFC, all whitespace runs (incl. no-break spaces) to one space, trimmed."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()


def extract_paragraphs(html: str) -> list[str]:
    """Plain, whitespace-normalised text of each non-empty <p> of an HTML page, in page order."""
    parser = _ParagraphParser()
    parser.feed(html)
    parser.close()
    cleaned = (normalize_text(text) for text in parser.paragraphs)
    return [text for text in cleaned if text]


def long_enough(text: str, language: str) -> bool:
    """At least MIN_WORDS words, or MIN_CHARS_UNSPACED non-space characters for ja/zh."""
    if language in UNSPACED:
        return len(text.replace(" ", "")) >= MIN_CHARS_UNSPACED
    return len(text.split()) >= MIN_WORDS


def latin_share(text: str) -> float:
    """Fraction of letters in the text that are basic Latin a-z/A-Z."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 0.0
    return sum(ch.isascii() for ch in letters) / len(letters)


def words(text: str) -> list[str]:
    """Lower-cased runs of letters."""
    return re.findall(r"[^\W\d_]+", text.lower())


def english_vocabulary(paragraphs: Iterable[str], min_count: int = 3) -> set[str]:
    """Words seen at least min_count times in English paragraphs."""
    counts: dict[str, int] = {}
    for text in paragraphs:
        for word in words(text):
            counts[word] = counts.get(word, 0) + 1
    return {word for word, count in counts.items() if count >= min_count}


def is_english_fallback(
    text: str, language: str, english: Collection[str] = (), vocabulary: Collection[str] = ()
) -> bool:
    """True for text left untranslated.

    That is: equal to an English paragraph of the same page; in a non-Latin language, mostly
    Latin letters; or nearly all its words English ones (untranslated text that differs from the
    current English page, code, lists of product names).
    """
    if language == ENGLISH:
        return False
    if text in english:
        return True
    # Product names ("LibreOffice Calc") are Latin in every language, so allow some.
    if language not in LATIN_SCRIPT and latin_share(text) > MAX_LATIN_SHARE:
        return True
    found = words(text)
    return (
        bool(vocabulary) and bool(found) and sum(w in vocabulary for w in found) / len(found) >= MAX_ENGLISH_WORD_SHARE
    )


def is_heldout(text: str) -> bool:
    """Deterministic 2% held-out split by a hash of the text, so duplicates can't straddle splits."""
    digest = hashlib.sha1(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % 1000 < HELDOUT_PER_MILLE


@dataclass
class LanguageCorpus:
    """Kept paragraphs of one language, split, plus what was dropped and why."""

    train: list[str] = field(default_factory=list)
    heldout: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=lambda: {"generated": 0, "short": 0, "english": 0, "duplicate": 0})
    seen: set[str] = field(default_factory=set, repr=False)
    # Words of the English corpus, for spotting untranslated text in the other languages.
    english_words: set[str] = field(default_factory=set, repr=False)


def add_paragraphs(corpus: LanguageCorpus, texts: Iterable[str], language: str, english: Collection[str] = ()) -> None:
    """Filter texts (short, English fallback, seen before) and append the rest to their split."""
    for text in texts:
        if text.startswith(GENERATED_PREFIXES):
            corpus.dropped["generated"] += 1
        elif not long_enough(text, language):
            corpus.dropped["short"] += 1
        elif is_english_fallback(text, language, english, corpus.english_words):
            corpus.dropped["english"] += 1
        elif text in corpus.seen:
            corpus.dropped["duplicate"] += 1
        else:
            corpus.seen.add(text)
            (corpus.heldout if is_heldout(text) else corpus.train).append(text)


def clean_pages(
    pages: Iterable[tuple[str, str]],
    language: str,
    english_pages: dict[str, set[str]] | None = None,
    corpus: LanguageCorpus | None = None,
) -> LanguageCorpus:
    """Turn (page key, html) pairs into a deduplicated, filtered, split corpus for one language."""
    english_pages = english_pages or {}
    corpus = corpus or LanguageCorpus()
    for key, html in pages:
        add_paragraphs(corpus, extract_paragraphs(html), language, english_pages.get(key, set()))
    return corpus


def ui_strings(unpacked: Path) -> Iterator[tuple[str, str]]:
    """(English source, translation) for every message in the LibreOffice UI catalogues (.mo) of a package."""
    for path in sorted(unpacked.rglob("*.mo")):
        with path.open("rb") as handle:
            catalog = gettext.GNUTranslations(handle)._catalog  # the only public view is per-message lookup
        for source, translation in catalog.items():
            if isinstance(source, str) and isinstance(translation, str) and source:
                # "~" marks a menu accelerator letter in LibreOffice strings.
                yield normalize_text(source.replace("~", "")), normalize_text(translation.replace("~", ""))


def fetch_package(package: str, cache: Path) -> tuple[Path, str]:
    """Download a .deb with apt-get (cached) and unpack it; returns (unpacked dir, package version)."""
    cache.mkdir(parents=True, exist_ok=True)
    debs = sorted(cache.glob(f"{package}_*.deb"))
    if not debs:
        subprocess.run(["apt-get", "download", package], cwd=cache, check=True, capture_output=True)
        debs = sorted(cache.glob(f"{package}_*.deb"))
    deb = debs[-1]
    version = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True
    ).stdout.strip()
    unpacked = cache / "unpacked" / package
    if not unpacked.exists():
        tmp = Path(tempfile.mkdtemp(dir=cache))
        subprocess.run(["dpkg", "-x", str(deb), str(tmp)], check=True)
        unpacked.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(unpacked)
    return unpacked, version


def help_pages(unpacked: Path) -> Iterator[tuple[str, str]]:
    """(key, html) for each help page; the key is the path below text/, equal across languages."""
    roots = sorted(unpacked.glob("usr/share/libreoffice/help/*/text"))
    if not roots:
        raise FileNotFoundError(f"no LibreOffice help pages under {unpacked}")
    for path in sorted(roots[0].rglob("*.html")):
        yield path.relative_to(roots[0]).as_posix(), path.read_text(encoding="utf-8", errors="replace")


def help_package(language: str) -> str:
    """Name of the Debian package with a language's LibreOffice help pages."""
    suffix = HELP_PACKAGES.get(language) or POST_HOC_PACKAGES.get(language)
    if suffix is None:
        known = ", ".join(sorted({*HELP_PACKAGES, *POST_HOC_PACKAGES}))
        raise ValueError(f"No LibreOffice help package is known for {language}; known: {known}")
    return f"libreoffice-help-{suffix}"


def read_split(corpus_dir: str | Path, language: str, split: str) -> list[str]:
    """Paragraphs of one language and split ("train" or "heldout") from a built corpus."""
    path = Path(corpus_dir) / f"{language}.{split}.txt"
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line]


def build_corpus(out: str | Path, cache: str | Path = "data/debs", languages: list[str] | None = None) -> dict:
    """Fetch, clean and split each language; writes <code>.<split>.txt and manifest.json; returns the manifest.

    The manifest keeps the entries of languages built earlier into the same folder (a language added
    post hoc joins the pre-training corpus's manifest).
    """
    out, cache = Path(out), Path(cache)
    out.mkdir(parents=True, exist_ok=True)
    languages = languages or MINI_LANGUAGES
    packages = {language: help_package(language) for language in languages}
    english_dir, _ = fetch_package(help_package(ENGLISH), cache)
    english_pages = {key: set(extract_paragraphs(html)) for key, html in help_pages(english_dir)}
    english_words = english_vocabulary(text for page in english_pages.values() for text in page)
    manifest_path = out / "manifest.json"
    manifest: dict = {"source": "Debian libreoffice-help-* HTML pages, <p> text", "languages": {}}
    if manifest_path.exists():
        manifest["languages"] = json.loads(manifest_path.read_text(encoding="utf-8")).get("languages", {})
    for language in languages:
        package = packages[language]
        unpacked, version = fetch_package(package, cache)
        corpus = clean_pages(help_pages(unpacked), language, english_pages, LanguageCorpus(english_words=english_words))
        sources = [{"package": package, "version": version, "paragraphs": len(corpus.seen)}]
        if language in UI_SUPPLEMENT:
            extra_dir, extra_version = fetch_package(UI_SUPPLEMENT[language], cache)
            before = len(corpus.seen)
            for source, translation in ui_strings(extra_dir):
                add_paragraphs(corpus, [translation], language, {source})
            sources.append(
                {"package": UI_SUPPLEMENT[language], "version": extra_version, "paragraphs": len(corpus.seen) - before}
            )
        for split in ("train", "heldout"):
            lines = getattr(corpus, split)
            (out / f"{language}.{split}.txt").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        words = sum(len(t.split()) for t in corpus.train + corpus.heldout)
        chars = sum(len(t) for t in corpus.train + corpus.heldout)
        manifest["languages"][language] = {
            "sources": sources,
            "train": len(corpus.train),
            "heldout": len(corpus.heldout),
            "words": words,
            "characters": chars,
            "dropped": corpus.dropped,
        }
        print(
            f"{language}: {len(corpus.train)} train, {len(corpus.heldout)} held-out paragraphs, "
            f"{words} words, {chars} chars; dropped {corpus.dropped}; "
            + ", ".join(f"{s['package']} {s['version']}: {s['paragraphs']}" for s in sources),
            flush=True,
        )
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest
