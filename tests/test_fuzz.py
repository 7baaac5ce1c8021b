"""Hundreds of bad and odd inputs through every public endpoint of the running app.

Oracle: the in-process Explorer on the same model. Each API call must give exactly what the
engine gives for the same arguments, or a clear error (AppError) carrying the engine's own
message; never the generic "Something went wrong" (an unhandled exception), a traceback or a hang.
"""

from __future__ import annotations

import json
import os
import string
import time

import pytest
from gradio_client.exceptions import AppError
from helpers import serve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xmod_explorer import Explorer, ExplorerError
from xmod_explorer.languages import LANGUAGE_NAMES
from xmod_explorer.settings import load_settings

pytestmark = pytest.mark.slow  # runs the app or the command line as real processes, or hundreds of inputs

CALL_TIMEOUT = 60
ALL_CODES = list(LANGUAGE_NAMES)
TRICKY = [
    "",
    " ",
    "\n\t  \n",
    "no mask at all",
    "<mask>",
    "<mask> " * 50,
    "x" * 100_000 + " <mask>",
    "<s></s>",
    "<s><pad></s><unk>",
    "<MASK> and [mask] and < mask > and [ MASK ]",
    "<maskk> <mas> mask",
    "\x00\x01\x02 <mask> \x1b[31mred\x1b[0m",
    "\u202eevil\u202c <mask> \u200b\u200c\u200d\ufeff",
    "שלום <mask> مرحبا",
    "👩‍💻 <mask> 🎉🎉🇩🇪",
    "<img src=x onerror=alert(1)> <mask>",
    "<script>alert('x')</script> <mask>",
    "</textarea><b>bold</b> <mask>",
    "{{7*7}} ${7*7} <mask> %s %n",
    "'; DROP TABLE users; -- <mask>",
    "\\u0000 \\n <mask>",
    "a\r\nb\r<mask>\x0b\x0c",
]
LANGUAGE_SETS = [
    ["en_XX"],
    ["de_DE", "fr_XX"],
    [],
    ["EN_xx"],
    ["en_xx", "De_de"],
    ["xx_YY"],
    ["en"],
    ["German (de_DE)"],
    ["de_DE", "de_DE", "de_DE"],
    ALL_CODES,
    [*ALL_CODES, "zz_ZZ"],
    [""],
    [" en_XX "],
    "en_XX,de_DE",
    "en_XX",
    None,
    42,
    [42],
    [None],
    [["en_XX"]],
    {"a": 1},
]
TOP_KS = [5, 0, -1, 10**9, 2.5, 3.0, "5", None, True, [5], 1, 100]


def call(client, endpoint: str, *args):
    """('ok', result) or ('error', message); raises on hangs."""
    job = client.submit(*args, api_name=endpoint)
    try:
        return "ok", job.result(timeout=CALL_TIMEOUT)
    except AppError as exc:
        return "error", str(exc)


def oracle(fn, *args):
    try:
        return "ok", json.loads(json.dumps(fn(*args).to_dict()))
    except ExplorerError as exc:
        return "error", str(exc)


class Tally:
    def __init__(self):
        self.counts = {"inputs": 0, "results": 0, "clear_errors": 0}

    def check(self, got, expected, label):
        self.counts["inputs"] += 1
        kind, value = got
        if kind == "error":
            assert "Something went wrong" not in value, f"unhandled exception for {label}: {value}"
            assert "Traceback" not in value and 'File "' not in value
            assert value.strip(), f"empty error message for {label}"
            self.counts["clear_errors"] += 1
        else:
            self.counts["results"] += 1
        assert got == expected, f"API and engine differ for {label}"


@pytest.fixture(scope="module", params=["local", "public"])
def target(request, all_languages_dir):
    flags = ["--model", str(all_languages_dir)] + (["--public"] if request.param == "public" else [])
    app_settings = load_settings(flags)
    explorer = Explorer.from_pretrained(str(all_languages_dir), limits=app_settings.limits)
    demo, client = serve(app_settings, explorer)
    baseline = client.predict("Choose two <mask> now.", ["de_DE", "ja_XX"], 5, api_name="/predict_masks")
    tally = Tally()
    yield client, explorer, tally
    after = client.predict("Choose two <mask> now.", ["de_DE", "ja_XX"], 5, api_name="/predict_masks")
    print(f"\nfuzz [{request.param}]: {tally.counts}")
    assert after == baseline, "the app's answers changed after the fuzz run"
    assert tally.counts["inputs"] >= 200
    demo.close()


def test_catalogue_of_bad_inputs(target):
    client, explorer, tally = target
    for text in TRICKY:
        for languages in LANGUAGE_SETS:
            for top_k in (5,) if languages != ["en_XX"] else TOP_KS:
                label = f"predict_masks({text[:30]!r}, {str(languages)[:40]}, {top_k!r})"
                tally.check(
                    call(client, "/predict_masks", text, languages, top_k),
                    oracle(explorer.predict_masks, text, languages, top_k),
                    label,
                )
        tally.check(
            call(client, "/compare_adapters", text, ["en_XX", "de_DE"], None),
            oracle(explorer.compare_adapters, text, ["en_XX", "de_DE"], None),
            f"compare_adapters({text[:30]!r})",
        )


PAIRS = [
    [],
    "not pairs",
    [["en_XX"]],
    [["en_XX", "One."]],
    [["en_XX", "One."], ["de_DE", "Eins."]],
    [["en_XX", "One."], ["xx_XX", "Eins."]],
    [["en_XX", ""], ["de_DE", "Eins."]],
    [["en_XX", "One."], ["de_DE", 5]],
    [["en_XX", "One.", "extra"], ["de_DE", "Eins."]],
    [[None, None], ["en_XX", "One."], ["de_DE", "Eins."]],
    [{"language": "en_XX", "text": "One."}, {"language": "de_DE", "text": "Eins."}],
    [["en_XX", "<script>alert(1)</script>"], ["de_DE", "<img src=x onerror=alert(1)>"]],
    [["en_XX", "x" * 100_000], ["de_DE", "y"]],
    [[code, f"Sentence {i}."] for i, code in enumerate(ALL_CODES)],
    [["en_XX", f"Sentence {i}."] for i in range(500)],
    [["en_XX", "a"], ["en_XX", "b"], ["en_XX", "c"], ["de_DE", "d"], ["de_DE", "e"], ["de_DE", "f"]],
]


def test_sentence_pairs_and_other_endpoints(target):
    client, explorer, tally = target
    for pairs in PAIRS:
        tally.check(
            call(client, "/compare_sentences", pairs),
            oracle(explorer.compare_sentences, pairs),
            f"compare_sentences({str(pairs)[:60]})",
        )
    for reference in ["en_XX", "ja_XX", "xx", None, 5, "de_de"]:
        tally.check(
            call(client, "/compare_adapters", "Every layer holds an adapter.", ["en_XX", "de_DE"], reference),
            oracle(explorer.compare_adapters, "Every layer holds an adapter.", ["en_XX", "de_DE"], reference),
            f"compare_adapters(reference={reference!r})",
        )
    kind, info = call(client, "/model_info")
    assert kind == "ok" and info["languages"] == ALL_CODES


alphabet = st.sampled_from(
    [*list(string.printable), "\x00", "\u200b", "\u202e", "ß", "я", "語", "🎉", "<mask>", "[MASK]", "<s>", "</s>", "<"]
)
texts = st.lists(alphabet, max_size=40).map("".join)
codes = st.lists(
    st.one_of(st.sampled_from(ALL_CODES), st.sampled_from(ALL_CODES).map(str.lower), st.text(max_size=6)), max_size=6
)
top_ks = st.one_of(st.integers(-5, 300), st.floats(-3, 30, allow_nan=False), st.none(), st.text(max_size=3))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(text=texts, languages=codes, top_k=top_ks)
def test_generated_inputs(target, text, languages, top_k):
    client, explorer, tally = target
    label = f"predict_masks({text!r}, {languages!r}, {top_k!r})"
    tally.check(
        call(client, "/predict_masks", text, languages, top_k),
        oracle(explorer.predict_masks, text, languages, top_k),
        label,
    )


def test_disk_and_memory_stay_flat_when_the_fuzz_runs_twice(all_languages_dir):
    """The catalogue through the API, and the page's Predict (which writes a CSV for download), twice over, on a
    public server whose files live 3 s: after each pass and the clean-up, the files left and the resident memory
    are the same."""
    import asyncio
    import ctypes
    import dataclasses
    import gc

    import psutil
    from gradio.state_holder import SessionState
    from helpers import serve as serve_app

    from xmod_explorer.ui.common import downloads_root

    app_settings = load_settings(["--model", str(all_languages_dir), "--public"])
    app_settings = dataclasses.replace(app_settings, limits=dataclasses.replace(app_settings.limits, file_seconds=3.0))
    explorer = Explorer.from_pretrained(str(all_languages_dir), limits=app_settings.limits)
    demo, client = serve_app(app_settings, explorer)
    predict = next(fn for fn in demo.fns.values() if fn.name == "predict")

    def files() -> int:
        tracked = {path for paths in demo.temp_file_sets for path in paths}
        ours = [path for path in downloads_root().rglob("*") if path.is_file()]
        return sum(os.path.getsize(path) for path in [*tracked, *ours] if os.path.exists(path))

    def resident() -> int:
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return psutil.Process().memory_info().rss

    def one_pass() -> tuple[int, int, int]:
        for text in TRICKY:
            for languages in LANGUAGE_SETS[:10]:
                call(client, "/predict_masks", text, languages, 5)
        session = SessionState(demo)
        for number in range(20):
            asyncio.run(
                demo.process_api(predict, [f"Choose {number} <mask> now.", ["de_DE", "ja_XX"], 5], state=session)
            )
        written = files()
        time.sleep(15)  # the janitor looks every 10 s; Gradio's delete_cache every second
        return written, files(), resident()

    try:
        written_first, left_first, memory_first = one_pass()
        written_second, left_second, memory_second = one_pass()
    finally:
        demo.close()
    print(
        f"\nfuzz twice: files written {written_first} then {written_second} bytes, left {left_first} then "
        f"{left_second}; memory {memory_first / 2**20:.0f} then {memory_second / 2**20:.0f} MiB"
    )
    assert written_first > 0 and written_second > 0  # the pass did make files...
    assert left_first == left_second == 0  # ...and none of them stayed
    assert memory_second < memory_first * 1.05
