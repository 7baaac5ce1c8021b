"""Labelled text for the transfer lab: the project's sentiment set and users' CSV files, validated here once.

A labelled CSV has a header line naming the columns ``text,label[,language]`` (any order; comma,
semicolon or tab separated, told apart by the header; CR, LF or CRLF line ends; UTF-8 with or without a
byte-order mark). Anything wrong is an ExplorerError naming the row or column.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from xmod_explorer.defaults import ASSETS
from xmod_explorer.errors import ExplorerError
from xmod_explorer.languages import resolve_language
from xmod_explorer.limits import Limits

SENTIMENT = ASSETS / "sentiment"
SENTIMENT_TRAIN = SENTIMENT / "train.csv"
SENTIMENT_TEST = SENTIMENT / "test.csv"
# The languages the sentiment test set is written in, besides English (all in xmod-base and the mini model).
SENTIMENT_TARGETS = ["de_DE", "fr_XX", "es_XX", "ru_RU", "ja_XX", "zh_CN"]
# The shipped parallel set: the Across languages tab's example, and the reference sentences for centring.
PARALLEL_SET = ASSETS / "examples" / "parallel.tsv"
COLUMNS = ("text", "label", "language")


@dataclass(frozen=True)
class Example:
    """One labelled text; language None means 'the language the caller trains in'."""

    text: str
    label: str
    language: str | None = None


def _blank(value: object) -> bool:
    return (
        value is None or (isinstance(value, float) and value != value) or (isinstance(value, str) and not value.strip())
    )


def as_examples(data: object, *, what: str = "examples") -> list[Example]:
    """Examples from Python values: Example objects, (text, label[, language]) tuples, dicts or a DataFrame."""
    if isinstance(data, pd.DataFrame):
        missing = [name for name in ("text", "label") if name not in data.columns]
        if missing:
            raise ExplorerError(
                f"The {what} table has no column {missing[0]!r}; it needs columns text,label[,language]."
            )
        data = data.to_dict("records")
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise ExplorerError(f"Give the {what} as a list of (text, label) or (text, label, language) rows.")
    examples = []
    for number, item in enumerate(data, start=1):
        if isinstance(item, Example):
            row = (item.text, item.label, item.language)
        elif isinstance(item, Mapping):
            row = (item.get("text"), item.get("label"), item.get("language"))
        elif isinstance(item, (list, tuple)) and len(item) in (2, 3):
            row = (item[0], item[1], item[2] if len(item) == 3 else None)
        else:
            raise ExplorerError(
                f"Row {number} of the {what} must be (text, label) or (text, label, language); got {item!r}."
            )
        text, label, language = row
        if not isinstance(text, str) or not text.strip():
            raise ExplorerError(f"Row {number} of the {what}: the text is empty. Every row needs a text.")
        if _blank(label):
            raise ExplorerError(f"Row {number} of the {what}: the label is empty. Every row needs a label.")
        examples.append(Example(text, str(label).strip(), None if _blank(language) else str(language).strip()))
    if not examples:
        raise ExplorerError(f"The {what} are empty; give at least two labelled rows.")
    return examples


def as_pairs(data: object) -> list[tuple[object, object]]:
    """(language, sentence) rows from a list of pairs, dicts or a DataFrame; fully blank rows are dropped.

    The values are returned unchecked: the engine resolves codes and tokenizes texts, row by row.
    """
    if isinstance(data, pd.DataFrame):
        data = data.values.tolist()
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise ExplorerError("Give sentences as a list of (language, sentence) pairs.")
    rows = []
    for number, item in enumerate(data, start=1):
        if isinstance(item, Mapping):
            item = (item.get("language"), item.get("text", item.get("sentence")))
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise ExplorerError(f"Row {number} must be a (language, sentence) pair; got {item!r}.")
        if not (_blank(item[0]) and _blank(item[1])):  # editable tables leave empty rows behind
            rows.append((item[0], item[1]))
    return rows


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """(language, text) rows from a CSV or TSV file with the columns language and text."""
    path = str(path)
    separator = "\t" if path.endswith((".tsv", ".tab")) else ","
    try:
        frame = pd.read_csv(path, sep=separator, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ExplorerError(f"Could not read {path}: {exc}") from exc
    missing = {"language", "text"} - set(frame.columns)
    if missing:
        raise ExplorerError(f"{path} needs the columns language and text; it lacks {', '.join(sorted(missing))}.")
    return list(zip(frame["language"], frame["text"]))


def reference_sentences(languages: Sequence[str]) -> list[tuple[str, str]]:
    """The shipped parallel set's (language, text) rows in the given languages, in file order.

    When none of its languages is given, every sentence comes back under the first given language,
    so that any model has a reference set.
    """
    rows = read_pairs(PARALLEL_SET)
    chosen = [(code, text) for code, text in rows if code in languages]
    return chosen or [(languages[0], text) for _, text in rows]


def _decode(data: bytes, name: str) -> str:
    if b"\x00" in data[:4096]:
        raise ExplorerError(
            f"{name} is not a CSV file: it holds binary data. Upload a text file with columns text,label[,language]."
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExplorerError(
            f"{name} is not UTF-8 text (undecodable byte at position {exc.start}). Save it as 'CSV UTF-8' and upload "
            "it again."
        ) from None


# The header is looked for in this many characters; a first line longer than that is not a header.
HEADER_CHARS = 64 * 1024
SEPARATORS = (",", ";", "\t")
# csv.reader works row by row and gives other threads the interpreter between rows, but a file of many
# short rows still takes a while at the local caps; past this the upload is refused rather than waited for.
PARSE_SECONDS = 10.0
_LINE_END = re.compile(r"\r\n|\r|\n")


def _header_line(text: str, name: str) -> str:
    """The first line, found within the first HEADER_CHARS characters whatever the line ends (CR, LF, CRLF).

    csv.Sniffer is not used: its regular expressions are quadratic in the length of what they read and hold
    the interpreter while they run (a 476 KB file saved by Excel for Mac, one CR-separated "line", froze the
    whole server for over a minute). The header itself says which separator the file uses.
    """
    prefix = text[:HEADER_CHARS]
    end = _LINE_END.search(prefix)
    if end is not None:
        return prefix[: end.start()]
    if len(text) > HEADER_CHARS:
        raise ExplorerError(
            f"{name} has no line break in its first {HEADER_CHARS // 1024} KB, so it has no header line. The first "
            "line must name the columns (text,label and optionally language), and each row must be on a line of "
            "its own."
        )
    return text


def _separator(header: str) -> tuple[str, list[str]]:
    """The separator (comma, semicolon or tab) that splits the header into the most known column names,
    and the column names it gives (lower case)."""
    best = None
    for separator in SEPARATORS:
        try:
            cells = next(csv.reader([header], delimiter=separator), [])
        except csv.Error:
            continue
        columns = [cell.strip().lower() for cell in cells]
        score = (sum(column in COLUMNS for column in columns), len(columns))
        if best is None or score > best[0]:
            best = (score, separator, columns)
    if best is None:
        return ",", []
    return best[1], best[2]


def read_labelled_csv(
    source: str | Path | bytes,
    limits: Limits,
    languages: Sequence[str],
    *,
    name: str | None = None,
) -> list[Example]:
    """Read and check a CSV with columns text,label[,language]; languages: the model's codes."""
    if isinstance(source, (bytes, bytearray)):
        data, name = bytes(source), name or "The file"
        if len(data) > limits.max_upload_bytes:
            raise ExplorerError(_too_large(name, len(data), limits))
    else:
        path = Path(source)
        name = name or f"The file {path.name}"
        if not path.is_file():
            raise ExplorerError(f"{name} cannot be found; upload it again.")
        size = path.stat().st_size
        if size > limits.max_upload_bytes:
            raise ExplorerError(_too_large(name, size, limits))
        data = path.read_bytes()
    text = _decode(data, name)
    if not text.strip():
        raise ExplorerError(f"{name} is empty. It needs a header line text,label[,language] and labelled rows.")
    started = time.monotonic()
    separator, columns = _separator(_header_line(text, name))
    # newline="": the reader sees CR, LF and CRLF line ends alike (Excel for Mac still writes CR only).
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator, quotechar='"', doublequote=True)
    try:
        next(reader)
    except csv.Error as exc:
        raise ExplorerError(f"{name} is not a readable CSV ({exc}). Check the quoting on line 1.") from None
    missing = [column for column in ("text", "label") if column not in columns]
    if missing:
        found = ", ".join(repr(c) for c in columns if c) or "none"
        raise ExplorerError(
            f"{name} has no column {missing[0]!r} (columns found: {found}). "
            "The first line must name the columns: text,label and optionally language."
        )
    index = {column: columns.index(column) for column in COLUMNS if column in columns}
    cap = limits.max_train_examples
    examples: list[Example] = []
    number = 0
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue  # blank lines
            number += 1
            if number % 256 == 0 and time.monotonic() - started > PARSE_SECONDS:
                raise ExplorerError(
                    f"{name} took longer than {PARSE_SECONDS:.0f} s to read (stopped at row {number:,}). Upload a "
                    "smaller file."
                )
            if number > cap:
                raise ExplorerError(
                    f"{name} has more than {cap:,} rows; at most {cap:,} labelled rows are accepted here. Remove some "
                    "rows."
                )
            where = f"Row {number} (line {reader.line_num})"

            def cell(column: str, cells: list[str] = cells) -> str:
                position = index.get(column)
                return cells[position].strip() if position is not None and position < len(cells) else ""

            sentence, label = cell("text"), cell("label")
            if not sentence:
                raise ExplorerError(f"{where}: the text is empty. Every row needs a text in the column 'text'.")
            if len(sentence) > limits.max_text_chars:
                raise ExplorerError(
                    f"{where}: the text is {len(sentence):,} characters long; at most {limits.max_text_chars:,} are "
                    "accepted here."
                )
            if not label:
                raise ExplorerError(f"{where}: the label is empty. Every row needs a label in the column 'label'.")
            language = cell("language") or None
            if language is not None:
                try:
                    language = resolve_language(language, languages)
                except ExplorerError as exc:
                    raise ExplorerError(f"{where}, column 'language': {exc}") from None
            examples.append(Example(sentence, label, language))
    except csv.Error as exc:
        if "field limit" in str(exc):
            raise ExplorerError(
                f"{name} has a cell longer than {csv.field_size_limit():,} characters near line {reader.line_num}; "
                "a quote that is never closed does this. Check the quoting, or shorten the text."
            ) from None
        raise ExplorerError(f"{name} is not a readable CSV near line {reader.line_num} ({exc}).") from None
    if not examples:
        raise ExplorerError(f"{name} has a header but no labelled rows. Add rows of text,label.")
    labels = sorted({example.label for example in examples})
    if len(labels) < 2:
        raise ExplorerError(
            f"{name} has only one label ({labels[0]!r}); a classifier needs at least two. Add examples of another "
            "label."
        )
    return examples


def _too_large(name: str, size: int, limits: Limits) -> str:
    return (
        f"{name} is {size / 2**20:.1f} MiB; at most {limits.max_upload_bytes / 2**20:.1f} MiB is accepted here. "
        "Upload a smaller file."
    )


def split_by_language(
    examples: Sequence[Example], source_language: str
) -> tuple[list[Example], dict[str, list[Example]]]:
    """Training rows (the source language, or no language given) and test rows per other language."""
    train: list[Example] = []
    tests: dict[str, list[Example]] = {}
    for example in examples:
        if example.language in (None, source_language):
            train.append(Example(example.text, example.label, source_language))
        else:
            tests.setdefault(example.language, []).append(example)
    return train, tests


def sentiment_train() -> list[Example]:
    """The project's English training set: short reviews of software, labels negative/positive."""
    return _read_asset(SENTIMENT_TRAIN)


def sentiment_test(languages: Sequence[str] | None = None) -> list[Example]:
    """The test set (one held-out English set and its translations), limited to languages if given."""
    rows = _read_asset(SENTIMENT_TEST)
    return rows if languages is None else [row for row in rows if row.language in set(languages)]


def _read_asset(path: Path) -> list[Example]:
    if not path.exists():
        raise ExplorerError(f"The default data set {path} is missing from this installation; upload a CSV instead.")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return [Example(row.text, row.label, row.language or None) for row in frame.itertuples(index=False)]
