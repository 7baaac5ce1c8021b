"""Every published X-MOD layout, downloaded through the hub's real protocol, then loaded offline from the cache.

A HubEmulator on loopback serves tiny random stand-ins under the real repository ids (tests/hub_repos.py);
huggingface_hub's own client makes every request. Each model's mask predictions must equal plain
transformers, one language at a time, within 1e-5.
"""

from __future__ import annotations

import logging
import os

import pytest
from helpers import assert_matches_reference, reference_predictions
from hub_emulator import HubEmulator
from hub_repos import SWISS_SENTENCES, publish_all
from huggingface_hub import constants, hf_hub_download
from huggingface_hub.utils import reset_sessions

from xmod_explorer import Explorer, ExplorerError, hub
from xmod_explorer.tiny import TinySpec, build_random_checkpoint

TEXT = "Choose two <mask> and compare their predictions."
SWISS_TEXT = "Der Bundesrat hat heute in <mask> über das neue Gesetz beraten."
REPOS = [
    "facebook/xmod-base",
    "facebook/xmod-large-prenorm",
    "facebook/xmod-base-13-125k",
    "AdapterHub/xmod-base",
    "ZurichNLP/swissbert",
]
XLMR_FILES = ["tokenizer.json", "sentencepiece.bpe.model", "tokenizer_config.json", "config.json"]
assert SWISS_SENTENCES  # the SwissBERT stand-in's vocabulary is trained on these


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    emulator = HubEmulator()
    try:
        published = publish_all(emulator, tmp_path_factory.mktemp("hub-repos"))
        yield emulator, published
    finally:
        emulator.close()


def set_network(monkeypatch, url: str | None) -> None:
    """Online against url, or offline (url None), the way a user sets it: environment variables."""
    offline = url is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setenv("HF_ENDPOINT", url or "http://127.0.0.1:9")
    # huggingface_hub reads HF_HUB_OFFLINE once at import; its requests session keeps the offline switch.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    reset_sessions()


@pytest.fixture
def online(tmp_path, monkeypatch, emulated):
    emulator, published = emulated
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    set_network(monkeypatch, emulator.url)
    emulator.bytes_per_second = None
    emulator.clear_log()
    yield emulator, published
    emulator.bytes_per_second = None
    reset_sessions()


def text_for(repo: str) -> str:
    return SWISS_TEXT if repo == "ZurichNLP/swissbert" else TEXT


@pytest.mark.parametrize("repo", REPOS)
def test_each_layout_from_the_hub_then_offline_from_its_cache(online, monkeypatch, tmp_path, repo):
    emulator, published = online
    expected = published[repo]
    reference = reference_predictions(expected.source, text_for(repo), 5, expected.tokenizer)

    explorer = Explorer.from_pretrained(repo)
    info = explorer.info()
    assert info.model == repo and info.backend == expected.backend
    assert info.languages == expected.languages  # the checkpoint's own order (alphabetical for -13-125k)
    if expected.own_tokenizer:
        assert info.tokenizer == "the checkpoint's own" and "own tokenizer" in info.tokenizer_source
    else:
        assert info.tokenizer == "FacebookAI/xlm-roberta-base" and "downloaded from the hub" in info.tokenizer_source
    prediction = explorer.predict_masks(text_for(repo), expected.languages, top_k=5)
    assert_matches_reference(prediction, reference)

    # The cache is huggingface_hub's own layout: refs, snapshots of symlinks into blobs.
    entry = tmp_path / "cache" / ("models--" + repo.replace("/", "--"))
    ref = entry / "refs" / ("refs/pr/3" if repo == "facebook/xmod-base" else "main")  # its safetensors revision
    snapshot = entry / "snapshots" / ref.read_text()
    assert (snapshot / "config.json").is_symlink() and (snapshot / "config.json").resolve().parent.name == "blobs"
    assert not list(entry.glob("blobs/*.incomplete"))

    emulator.clear_log()
    set_network(monkeypatch, None)
    again = Explorer.from_pretrained(repo)
    assert "from the Hugging Face cache" in again.info().tokenizer_source or expected.own_tokenizer
    assert_matches_reference(again.predict_masks(text_for(repo), expected.languages, top_k=5), reference)
    assert emulator.requests == []  # offline means offline


def test_xmod_base_takes_the_safetensors_revision_and_skips_the_pickle(online):
    emulator, _ = online
    explorer = Explorer.from_pretrained("facebook/xmod-base")
    assert (explorer.loaded.path / "model.safetensors").is_file()
    assert not emulator.requests_for("pytorch_model.bin")
    assert emulator.requests_for("/api/models/facebook/xmod-base/revision/refs%2Fpr%2F3")
    entry = hub.repo_folder("facebook/xmod-base")
    assert (entry / "refs" / "refs" / "pr" / "3").is_file()


def preload(repo: str, files: list[str], url: str) -> None:
    """What a Space's preload_from_hub (or `hf download REPO FILES`) leaves in the cache: the main branch's files."""
    for name in files:
        hf_hub_download(repo, name, cache_dir=hub.cache_dir(), endpoint=url)


def test_xmod_base_from_a_preloaded_main_branch_reads_the_pickle_offline(online, monkeypatch):
    emulator, published = online
    preload("facebook/xmod-base", ["config.json", "pytorch_model.bin"], emulator.url)
    preload("FacebookAI/xlm-roberta-base", XLMR_FILES, emulator.url)
    set_network(monkeypatch, None)
    explorer = Explorer.from_pretrained("facebook/xmod-base")
    assert (explorer.loaded.path / "pytorch_model.bin").is_file()
    assert "FacebookAI/xlm-roberta-base" in explorer.info().tokenizer_source
    expected = published["facebook/xmod-base"]
    codes = expected.languages[::9]
    prediction = explorer.predict_masks(TEXT, codes, top_k=5)
    assert_matches_reference(prediction, reference_predictions(expected.source, TEXT, 5, expected.tokenizer))


def test_a_cache_made_with_the_old_xlm_r_id_serves_the_tokenizer(online, monkeypatch):
    emulator, _ = online
    preload("facebook/xmod-base-13-125k", ["config.json", "pytorch_model.bin"], emulator.url)
    preload("xlm-roberta-base", XLMR_FILES, emulator.url)
    set_network(monkeypatch, None)
    info = Explorer.from_pretrained("facebook/xmod-base-13-125k").info()
    assert info.tokenizer == "xlm-roberta-base" and "cache" in info.tokenizer_source


def test_no_tokenizer_anywhere_offline_names_the_repository_and_the_command(online, monkeypatch):
    emulator, _ = online
    preload("facebook/xmod-base-13-125k", ["config.json", "pytorch_model.bin"], emulator.url)
    set_network(monkeypatch, None)
    with pytest.raises(ExplorerError) as caught:
        Explorer.from_pretrained("facebook/xmod-base-13-125k")
    message = str(caught.value)
    assert "ships no tokenizer" in message and "FacebookAI/xlm-roberta-base" in message
    assert "`hf download FacebookAI/xlm-roberta-base tokenizer.json" in message


def test_a_tokenizer_of_another_vocabulary_is_refused(online, monkeypatch, tmp_path):
    """SwissBERT's weights without its own tokenizer: XLM-R's does not fit its vocabulary and is refused."""
    emulator, published = online
    preload("FacebookAI/xlm-roberta-base", XLMR_FILES, emulator.url)
    folder = tmp_path / "swissbert-without-tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((published["ZurichNLP/swissbert"].source / name).read_bytes())
    set_network(monkeypatch, None)
    with pytest.raises(ExplorerError, match="do not belong together"):
        Explorer.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def large_vocabulary(emulated, tmp_path_factory, tokenizer):
    """A 41 MB checkpoint with its own tokenizer: huggingface_hub writes downloads in 10 MB pieces, so a file
    must be larger than that for progress steps and a resumable partial file to exist."""
    emulator, _ = emulated
    spec = TinySpec(languages=["en_XX", "de_DE"], hidden_size=256, num_layers=1, num_heads=4, intermediate_size=256)
    spec.vocab_size = 40_000
    folder = build_random_checkpoint(tmp_path_factory.mktemp("large-vocabulary"), spec, tokenizer)
    emulator.add("xmod-test/large-vocabulary", {path.name: path for path in folder.iterdir()})
    return folder


def test_download_progress_is_reported_per_file_and_logged(online, caplog, large_vocabulary):
    emulator, _ = online
    size = (large_vocabulary / "model.safetensors").stat().st_size
    emulator.bytes_per_second = size / 2.5
    events = []
    with caplog.at_level(logging.INFO, logger="xmod_explorer.hub"):
        Explorer.from_pretrained("xmod-test/large-vocabulary", progress=events.append)
    weights = [event for event in events if event.file == "model.safetensors"]
    done = [event.done for event in weights]
    assert done == sorted(done) and done[0] == 0 and done[-1] == size
    assert all(event.total == size for event in weights)
    assert len({value for value in done if 0 < value < size}) >= 2, done  # real intermediate progress
    assert next(event.file for event in events if event.done == 0) == "config.json"  # the config comes first
    assert weights[-1].describe() == (
        f"Downloading xmod-test/large-vocabulary: model.safetensors, {hub._size(size)} of {hub._size(size)} "
        f"(file {weights[-1].files} of {weights[-1].files})"
    )
    logged = [record.getMessage() for record in caplog.records]
    assert any(f"model.safetensors, {hub._size(size)} of {hub._size(size)}" in line for line in logged)


def test_an_interrupted_download_resumes_on_the_next_try(online, large_vocabulary):
    emulator, _ = online
    repo = "xmod-test/large-vocabulary"
    size = (large_vocabulary / "model.safetensors").stat().st_size
    emulator.drop_after(repo, "model.safetensors", after=25 << 20)
    with pytest.raises(ExplorerError, match="resumes where it stopped"):
        Explorer.from_pretrained(repo)
    partial = list(hub.repo_folder(repo).glob("blobs/*.incomplete"))
    assert [p.stat().st_size for p in partial] == [20 << 20]  # what arrived was kept, in whole 10 MB pieces

    emulator.clear_log()
    explorer = Explorer.from_pretrained(repo)
    ranges = [r.range for r in emulator.requests if r.method == "GET" and r.path.startswith("/lfs/")]
    assert ranges == [f"bytes={20 << 20}-"]  # only the missing part travelled
    assert (explorer.loaded.path / "model.safetensors").stat().st_size == size
    prediction = explorer.predict_masks(TEXT, ["en_XX", "de_DE"], top_k=5)
    assert_matches_reference(prediction, reference_predictions(large_vocabulary, TEXT, 5))


def test_a_missing_repository_is_a_clear_error(online):
    with pytest.raises(ExplorerError, match="does not exist on the hub"):
        Explorer.from_pretrained("facebook/xmod-base-99-999k")


def test_hub_tests_never_leave_the_loopback(online):
    emulator, _ = online
    assert hub.endpoint() == emulator.url and emulator.url.startswith("http://127.0.0.1:")
    assert os.environ["HF_HUB_CACHE"].endswith("cache")
