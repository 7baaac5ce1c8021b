"""The real app on a real port, driven through gradio_client like any API user."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from conftest import LANGUAGES, assert_same_predictions
from xmod_explorer import Explorer
from xmod_explorer.settings import load_settings
from xmod_explorer.ui.layout import build_app, launch_options

ROOT = Path(__file__).resolve().parent.parent


def serve(settings, explorer):
    demo = build_app(settings, explorer)
    options = {**launch_options(settings), "server_name": "127.0.0.1", "server_port": free_port(), "share": False}
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **options)
    return demo, Client(url, verbose=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def local_app(base_dir):
    settings = load_settings(["--model", str(base_dir)])
    explorer = Explorer.from_pretrained(str(base_dir), limits=settings.limits)
    demo, client = serve(settings, explorer)
    yield client, explorer
    demo.close()


@pytest.fixture(scope="module")
def public_app(base_dir):
    settings = load_settings(["--model", str(base_dir), "--public"])
    explorer = Explorer.from_pretrained(str(base_dir), limits=settings.limits)
    demo, client = serve(settings, explorer)
    yield client
    demo.close()


def test_endpoints_are_named(local_app):
    client, _ = local_app
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/predict_masks", "/compare_adapters", "/compare_sentences", "/model_info"} <= names


def test_predict_masks_endpoint_returns_engine_numbers(local_app):
    client, explorer = local_app
    text = "Der <mask> jeder Sprache sitzt in jeder <mask>."
    got = client.predict(text, ["de_DE", "ja_XX", "ru_RU"], 4, api_name="/predict_masks")
    assert_same_predictions(got, explorer.predict_masks(text, ["de_DE", "ja_XX", "ru_RU"], 4).to_dict(), atol=0)


def test_compare_endpoints_return_engine_numbers(local_app):
    client, explorer = local_app
    got = client.predict("Every layer holds an adapter.", ["en_XX", "fr_XX"], "fr_XX", api_name="/compare_adapters")
    expected = explorer.compare_adapters("Every layer holds an adapter.", ["en_XX", "fr_XX"], "fr_XX").to_dict()
    assert got == expected
    pairs = [["en_XX", "Choose two languages."], ["de_DE", "Wähle zwei Sprachen."], ["fr_XX", "Choisis deux langues."]]
    got = client.predict(pairs, api_name="/compare_sentences")
    assert got == explorer.compare_sentences(pairs).to_dict()


def test_model_info_endpoint(local_app, base_dir):
    client, _ = local_app
    info = client.predict(api_name="/model_info")
    assert info["model"] == str(base_dir)
    assert info["languages"] == LANGUAGES
    assert info["backend"] == "transformers" and info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["parameters"] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (("no mask here", ["en_XX"], 5), "<mask>"),
        (("", ["en_XX"], 5), "empty"),
        (("A <mask>.", ["xx_XX"], 5), "Unknown language"),
        (("A <mask>.", [], 5), "at least one language"),
        (("A <mask>.", ["en_XX"], 0), "top_k"),
        (("A <mask>.", ["en_XX"], 1000), "top_k"),
        (("word " * 700 + "<mask>", ["en_XX"], 5), "at most 512"),
    ],
)
def test_bad_input_is_an_app_error_and_the_app_keeps_serving(local_app, args, message):
    client, explorer = local_app
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/predict_masks")
    after = client.predict("A <mask>.", ["en_XX"], 2, api_name="/predict_masks")
    assert_same_predictions(after, explorer.predict_masks("A <mask>.", ["en_XX"], 2).to_dict(), atol=0)


def test_public_mode_caps_input(public_app):
    with pytest.raises(AppError, match="characters"):
        public_app.predict("x" * 1500 + " <mask>", ["en_XX"], 5, api_name="/predict_masks")
    with pytest.raises(AppError, match="top_k must be between 1 and 20"):
        public_app.predict("A <mask>.", ["en_XX"], 50, api_name="/predict_masks")
    with pytest.raises(AppError, match="masks"):
        public_app.predict("<mask> " * 6, ["en_XX"], 5, api_name="/predict_masks")
    assert public_app.predict("A <mask>.", ["en_XX"], 5, api_name="/predict_masks")["masks"]


def test_public_mode_has_no_model_loading(base_dir):
    settings = load_settings(["--model", str(base_dir)], environ={"SPACE_ID": "someone/xmod-explorer"})
    assert settings.public and not settings.can_load_models and settings.host == "0.0.0.0"
    demo = build_app(settings, Explorer.from_pretrained(str(base_dir), limits=settings.limits))
    labels = [getattr(block, "value", None) for block in demo.blocks.values()]
    assert "Load" not in labels
    assert any(isinstance(v, str) and "switched off" in v for v in labels)


def test_flags_and_environment(tmp_path):
    settings = load_settings(
        ["--languages", "en_XX,de_DE", "--port", "9000"],
        environ={"XMOD_MODEL": "mini", "XMOD_DEVICE": "cpu", "XMOD_PORT": "8000", "XMOD_SHARE": "1"},
    )
    assert settings.model == "mini" and settings.device == "cpu"
    assert settings.languages == ["en_XX", "de_DE"]
    assert settings.port == 9000  # the flag wins over the environment
    assert settings.share and not settings.public


def test_app_starts_offline_without_hf_hub_offline(tmp_path):
    """`python app.py` with no arguments, no network and an empty cache answers within 30 s."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "XMOD_", "TRANSFORMERS_"))}
    env.update({"HF_HUB_CACHE": str(tmp_path / "cache"), "HF_ENDPOINT": "http://127.0.0.1:9", "XMOD_PORT": str(port)})
    log = open(tmp_path / "app.log", "w")
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        start = time.monotonic()
        client = None
        while time.monotonic() - start < 30 and process.poll() is None:
            try:
                client = Client(f"http://127.0.0.1:{port}", verbose=False)
                break
            except Exception:
                time.sleep(0.5)
        assert client is not None, (tmp_path / "app.log").read_text()
        info = client.predict(api_name="/model_info")
        elapsed = time.monotonic() - start
        assert elapsed < 30
        assert "cannot be reached" in info["reason"]
        assert info["model"] != "facebook/xmod-base"
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()
    assert "cannot be reached" in (tmp_path / "app.log").read_text()


def test_device_out_of_memory_is_a_clear_message_and_the_next_request_works(base_dir, monkeypatch):
    """A CUDA out-of-memory cannot be produced on a CPU-only machine, so the backend raises one once (a mock
    on purpose); everything around it is real: the engine's guard, the app, the client."""
    import torch

    settings = load_settings(["--model", str(base_dir)])
    explorer = Explorer.from_pretrained(str(base_dir), limits=settings.limits)
    real = explorer.backend.encode_adapters
    calls = []

    def out_of_memory_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(explorer.backend, "encode_adapters", out_of_memory_once)
    demo, client = serve(settings, explorer)
    try:
        with pytest.raises(AppError, match="ran out of memory"):
            client.predict("A <mask>.", ["en_XX", "de_DE"], 3, api_name="/predict_masks")
        got = client.predict("A <mask>.", ["en_XX", "de_DE"], 3, api_name="/predict_masks")
        assert_same_predictions(got, explorer.predict_masks("A <mask>.", ["en_XX", "de_DE"], 3).to_dict(), atol=0)
    finally:
        demo.close()


def test_public_server_reads_no_arbitrary_paths_and_caps_uploads(public_app, tmp_path):
    import httpx

    base = public_app.src.rstrip("/")
    for path in ("/etc/passwd", str(ROOT / "app.py"), str(ROOT / "README.md")):
        response = httpx.get(f"{base}/gradio_api/file={path}")
        assert response.status_code in (403, 404), path
    big = tmp_path / "big.csv"
    big.write_text("text,label\n" + "a,b\n" * 400_000)  # about 1.6 MB, over the public 1 MiB cap
    with open(big, "rb") as handle:
        response = httpx.post(f"{base}/gradio_api/upload", files={"files": handle})
    assert response.status_code == 413 and "maximum allowed size" in response.text
    small = tmp_path / "small.csv"
    small.write_text("text,label\nfine,positive\n")
    with open(small, "rb") as handle:
        assert httpx.post(f"{base}/gradio_api/upload", files={"files": handle}).status_code == 200
