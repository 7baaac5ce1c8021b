"""`python app.py` with no flags, offline, on a Hugging Face cache laid out as the hub leaves it.

The cache is filled the way a Space's preload_from_hub (or `hf download`) fills it: huggingface_hub
downloads facebook/xmod-base's main branch and XLM-R's tokenizer files from a loopback hub. The app
then starts offline and must serve facebook/xmod-base with answers equal to plain transformers; with a
broken default it must serve the embedded mini model and say why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gradio_client import Client
from helpers import ROOT, free_port, reference_predictions
from hub_emulator import HubEmulator
from hub_repos import publish_all
from huggingface_hub import constants, hf_hub_download
from huggingface_hub.utils import reset_sessions

from xmod_explorer import defaults

TEXT = "Choose two <mask> and compare their predictions."
XLMR_FILES = ["tokenizer.json", "sentencepiece.bpe.model", "tokenizer_config.json", "config.json"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def preloaded(tmp_path_factory):
    """A cache holding only facebook/xmod-base (main: config.json, pytorch_model.bin) and XLM-R's tokenizer files."""
    root = tmp_path_factory.mktemp("startup")
    emulator = HubEmulator()
    patch = pytest.MonkeyPatch()
    try:
        published = publish_all(emulator, root / "repos")
        cache = root / "cache"
        patch.setattr(constants, "HF_HUB_OFFLINE", False)  # the test session runs offline; these downloads may not
        reset_sessions()
        for repo, files in (
            ("facebook/xmod-base", ["config.json", "pytorch_model.bin"]),
            ("FacebookAI/xlm-roberta-base", XLMR_FILES),
        ):
            for name in files:
                hf_hub_download(repo, name, cache_dir=str(cache), endpoint=emulator.url)
    finally:
        patch.undo()
        reset_sessions()
        emulator.close()
    return cache, published["facebook/xmod-base"]


def start_app(cache: Path, log: Path, args: tuple[str, ...] = (), hub_url: str | None = None):
    """`python app.py ARGS` on cache, offline unless hub_url names a (loopback) hub; returns it and a client."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "XMOD_", "TRANSFORMERS_"))}
    env.update({"HF_HUB_CACHE": str(cache), "XMOD_PORT": str(port), "PYTHONUNBUFFERED": "1"})
    env.update({"HF_ENDPOINT": hub_url, "HF_HUB_OFFLINE": "0"} if hub_url else {"HF_HUB_OFFLINE": "1"})
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "app.py", *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    start = time.monotonic()
    while time.monotonic() - start < 120:
        if process.poll() is not None:
            raise AssertionError(f"the app exited:\n{log.read_text()}")
        try:
            return process, Client(f"http://127.0.0.1:{port}", verbose=False)
        except Exception:
            time.sleep(0.5)
    process.terminate()
    raise AssertionError(f"the app did not answer:\n{log.read_text()}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


def test_app_serves_xmod_base_from_the_cache_offline_with_xlm_r_tokenizer(preloaded, tmp_path):
    cache, expected = preloaded
    process, client = start_app(cache, tmp_path / "app.log")
    try:
        info = client.predict(api_name="/model_info")
        assert info["model"] == "facebook/xmod-base" and "cache" in info["reason"]
        assert info["tokenizer"] == "FacebookAI/xlm-roberta-base"
        assert "XLM-R's tokenizer (FacebookAI/xlm-roberta-base) from the Hugging Face cache" in info["tokenizer_source"]
        assert info["languages"] == expected.languages
        got = client.predict(TEXT, expected.languages, 5, api_name="/predict_masks")
    finally:
        stop(process)
    reference = reference_predictions(expected.source, TEXT, 5, expected.tokenizer)
    assert_equals_reference(got, reference, expected.languages)


def assert_equals_reference(got: dict, reference: dict, languages: list[str]) -> None:
    """An API answer of /predict_masks against plain transformers, per language, within 1e-5."""
    for m, slot in enumerate(got["masks"]):
        for code in languages:
            want = reference[code][m]
            assert [g["token_id"] for g in slot["predictions"][code]] == want.indices.tolist(), code
            for guess, probability in zip(slot["predictions"][code], want.values.tolist()):
                assert abs(guess["probability"] - probability) <= 1e-5, code


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    emulator = HubEmulator()
    try:
        yield emulator, publish_all(emulator, tmp_path_factory.mktemp("repos"))
    finally:
        emulator.close()


@pytest.mark.parametrize(
    "repo",
    [
        "facebook/xmod-base",
        "facebook/xmod-large-prenorm",
        "facebook/xmod-base-13-125k",
        "AdapterHub/xmod-base",
        "ZurichNLP/swissbert",
    ],
)
def test_app_with_model_flag_serves_each_layout_from_the_hub_then_offline(emulated, tmp_path, repo):
    emulator, published = emulated
    expected = published[repo]
    text = "Der Bundesrat hat heute in <mask> über das neue Gesetz beraten." if repo.startswith("Zurich") else TEXT
    reference = reference_predictions(expected.source, text, 5, expected.tokenizer)
    cache = tmp_path / "cache"
    for phase, url in (("hub", emulator.url), ("cache", None)):
        process, client = start_app(cache, tmp_path / f"{phase}.log", ("--model", repo), hub_url=url)
        try:
            info = client.predict(api_name="/model_info")
            got = client.predict(text, expected.languages, 5, api_name="/predict_masks")
        finally:
            stop(process)
        assert info["model"] == repo and info["languages"] == expected.languages, phase
        assert_equals_reference(got, reference, expected.languages)


def broken_cache(preloaded, tmp_path: Path, fault: str) -> Path:
    cache = tmp_path / "cache"
    shutil.copytree(preloaded[0], cache, symlinks=True)
    if fault == "no tokenizer anywhere":
        shutil.rmtree(cache / "models--FacebookAI--xlm-roberta-base")
    else:  # truncated weights: the blob behind the snapshot's pytorch_model.bin loses its second half
        blob = next((cache / "models--facebook--xmod-base" / "snapshots").glob("*/pytorch_model.bin")).resolve()
        data = blob.read_bytes()
        blob.write_bytes(data[: len(data) // 2])
    return cache


@pytest.mark.parametrize(
    "fault, why",
    [
        ("no tokenizer anywhere", "hf download FacebookAI/xlm-roberta-base"),
        ("truncated weights", "could not be read"),
    ],
)
def test_a_broken_default_serves_the_mini_model_and_says_why(preloaded, tmp_path, fault, why):
    if not defaults.mini_available():
        pytest.skip("the embedded mini model is not in assets/")
    process, client = start_app(broken_cache(preloaded, tmp_path, fault), tmp_path / "app.log")
    try:
        info = client.predict(api_name="/model_info")
        answer = client.predict("Click the <mask> to save.", ["en_XX", "de_DE"], 3, api_name="/predict_masks")
    finally:
        stop(process)
    assert info["model"] == "xmod-mini"
    assert info["reason"].startswith("facebook/xmod-base could not be loaded") and why in info["reason"]
    assert info["reason"].endswith("using the embedded mini X-MOD")
    assert answer["masks"]
    log = (tmp_path / "app.log").read_text()
    assert "the default model facebook/xmod-base could not be loaded" in log  # with its traceback, for whoever runs it
