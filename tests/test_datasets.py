"""Labelled CSV uploads: every common way of saving a CSV reads, and hostile shapes are refused quickly."""

from __future__ import annotations

import time

import pytest
from helpers import LANGUAGES, excel_for_mac_csv

from xmod_explorer.datasets import Example, read_labelled_csv
from xmod_explorer.errors import ExplorerError
from xmod_explorer.limits import Limits

LOCAL = Limits.local()
PUBLIC = Limits.public()
ROWS = [("Fast and clean.", "positive", "en_XX"), ("Langsam; und laut.", "negative", "de_DE")]
EXPECTED = [Example("Fast and clean.", "positive", "en_XX"), Example("Langsam; und laut.", "negative", "de_DE")]


def written(separator: str, line_end: str, *, bom: bool = False) -> bytes:
    def cell(value: str) -> str:
        return f'"{value}"' if separator in value else value

    lines = [separator.join(("text", "label", "language"))]
    lines += [separator.join(cell(value) for value in row) for row in ROWS]
    return (("\ufeff" if bom else "") + line_end.join(lines) + line_end).encode("utf-8")


@pytest.mark.parametrize(
    "data",
    [
        written(",", "\n"),
        written(",", "\r\n", bom=True),  # Excel on Windows: "CSV UTF-8" has a byte-order mark and CRLF
        written(",", "\r"),  # Excel for Mac: CR only
        written(";", "\r\n"),  # Excel where the comma is the decimal separator
        written("\t", "\n"),
        written(";", "\r", bom=True),
    ],
    ids=["comma-lf", "bom-crlf", "cr-only", "semicolon", "tab", "semicolon-cr-bom"],
)
def test_every_common_way_of_saving_reads_the_same(data):
    assert read_labelled_csv(data, LOCAL, LANGUAGES) == EXPECTED


def test_a_long_cr_only_file_is_read_quickly():
    """476 KB saved by Excel for Mac: csv.Sniffer on its one 'line' froze the server for 77 s."""
    data = excel_for_mac_csv(476 * 1024)
    assert b"\n" not in data and len(data) >= 476 * 1024
    start = time.perf_counter()
    rows = read_labelled_csv(data, LOCAL, LANGUAGES)
    assert time.perf_counter() - start < 2
    assert len(rows) > 5000 and rows[0].label in ("positive", "negative")
    start = time.perf_counter()
    with pytest.raises(ExplorerError, match="more than 600 rows"):
        read_labelled_csv(data, PUBLIC, LANGUAGES)
    assert time.perf_counter() - start < 2


@pytest.mark.parametrize("fill", [b"x", b"a,b;c\t"])
def test_a_one_line_mebibyte_is_refused_quickly(fill):
    data = fill * (2**20 // len(fill))
    start = time.perf_counter()
    with pytest.raises(ExplorerError, match="no line break in its first 64 KB"):
        read_labelled_csv(data, LOCAL, LANGUAGES)
    assert time.perf_counter() - start < 2


def test_an_unclosed_quote_is_named():
    data = b'text,label\n"never closed,positive\n' + b"more text\n" * 20_000
    with pytest.raises(ExplorerError, match="quote that is never closed"):
        read_labelled_csv(data, LOCAL, LANGUAGES)
