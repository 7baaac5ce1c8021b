"""The real app on a real port, driven through gradio_client like any API user."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import gradio as gr
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from helpers import LANGUAGES, ROOT, assert_same_predictions, free_port, serve

from xmod_explorer import Explorer
from xmod_explorer.limits import Limits
from xmod_explorer.settings import load_settings
from xmod_explorer.ui.layout import build_app


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
    assert {"/logit_lens", "/score_languages", "/interpolate", "/project"} <= names


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


def test_lens_scoring_mixing_and_map_endpoints_return_engine_numbers(local_app):
    client, explorer = local_app
    text = "Der <mask> jeder Sprache sitzt in jeder <mask>."
    assert client.predict(text, ["de_DE", "ja_XX"], 3, api_name="/logit_lens") == json_ready(
        explorer.logit_lens(text, ["de_DE", "ja_XX"], 3).to_dict()
    )
    got = client.predict("Choose two languages.", ["de_DE", "en_XX"], api_name="/score_languages")
    expected = explorer.score_languages("Choose two languages.", ["de_DE", "en_XX"]).to_dict()
    got["cost"].pop("seconds"), expected["cost"].pop("seconds")
    assert got == json_ready(expected)
    everything = client.predict("Choose two languages.", api_name="/score_languages")
    assert sorted(everything["languages"]) == sorted(LANGUAGES)  # no languages: every adapter
    assert client.predict(text, "en_XX", "ru_RU", 4, 2, api_name="/interpolate") == json_ready(
        explorer.interpolate(text, "en_XX", "ru_RU", 4, 2).to_dict()
    )
    pairs = [["en_XX", "Choose two."], ["de_DE", "Wähle zwei."], ["fr_XX", "Choisis deux."]]
    assert client.predict(pairs, api_name="/project") == explorer.project(pairs).to_dict()
    one_text = client.predict(text="Choose two.", languages=["en_XX", "de_DE", "fr_XX"], layer=1, api_name="/project")
    assert one_text == explorer.project("Choose two.", layer=1, languages=["en_XX", "de_DE", "fr_XX"]).to_dict()
    auto = client.predict("Choose two <mask>.", ["auto"], 2, api_name="/predict_masks")
    assert auto["languages"] == [auto["auto_language"]] == [explorer.score_languages("Choose two <mask>.").best]


def json_ready(data: dict) -> dict:
    """What a dict looks like after a trip through JSON (tuples become lists)."""
    import json

    return json.loads(json.dumps(data))


@pytest.mark.parametrize(
    "args, api_name, message",
    [
        (("No mask.", ["en_XX"], 3), "/logit_lens", "<mask>"),
        (("", None), "/score_languages", "empty"),
        (("A <mask>.", "en_XX", "en_XX", 5, 3), "/interpolate", "two different adapters"),
        (("A <mask>.", "en_XX", "de_DE", 500, 3), "/interpolate", "steps"),
        (([["en_XX", "One."]], "", None, None, "pca"), "/project", "at least 3 points"),
        (([["en_XX", "One."], ["de_DE", "Zwei."], ["fr_XX", "Trois."]], "", None, 9, "pca"), "/project", "layer"),
    ],
)
def test_new_endpoints_refuse_bad_input_with_a_message(local_app, args, api_name, message):
    client, _ = local_app
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name=api_name)


def test_public_mode_caps_scoring(public_app):
    with pytest.raises(AppError, match="forward rows"):
        public_app.predict("Choose two languages. " * 16, api_name="/score_languages")  # 5 x 208 rows


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
    assert settings.share and settings.public  # a gradio.live link serves strangers


@pytest.mark.parametrize(
    "flags, environ, public, reason",
    [
        ([], {}, False, "serving on 127.0.0.1 only"),
        (["--host", "localhost"], {}, False, "serving on localhost only"),
        (["--share"], {}, True, "--share opens a public gradio.live link"),
        (["--host", "0.0.0.0"], {}, True, "--host 0.0.0.0 accepts connections from other machines"),
        (["--host", "192.168.1.5"], {"XMOD_SHARE": "1"}, True, "--share opens.*--host 192.168.1.5"),
        (["--host", "0.0.0.0", "--no-public"], {}, False, "--no-public keeps local mode"),
        (["--share"], {"XMOD_NO_PUBLIC": "1"}, False, "--no-public keeps local mode"),
        (["--no-public"], {"SPACE_ID": "someone/space"}, True, "Hugging Face Space"),
        (["--public", "--no-public"], {}, True, "--public given"),
    ],
)
def test_public_mode_is_on_wherever_strangers_can_reach_the_server(flags, environ, public, reason):
    settings = load_settings(flags, environ=environ)
    assert settings.public is public and re.search(reason, settings.public_reason)
    assert settings.limits == (Limits.public() if public else Limits.local())


def test_the_log_says_which_mode_and_why(base_dir, caplog):
    from xmod_explorer.ui.server import create_demo

    settings = load_settings(["--model", str(base_dir), "--host", "0.0.0.0"])
    with caplog.at_level("INFO", logger="xmod_explorer"):
        create_demo(settings).close()
    assert "public mode: --host 0.0.0.0 accepts connections from other machines" in caplog.text


@pytest.mark.slow
def test_app_starts_offline_without_hf_hub_offline(tmp_path):
    """`python app.py` with no arguments, no network and an empty cache answers within 30 s."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "XMOD_", "TRANSFORMERS_"))}
    env.update({"HF_HUB_CACHE": str(tmp_path / "cache"), "HF_ENDPOINT": "http://127.0.0.1:9", "XMOD_PORT": str(port)})
    log = open(tmp_path / "app.log", "w")  # noqa: SIM115 - closed in the finally below, after the process ends
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
    assert response.status_code == 413 and "accepts files of at most 1.0 MiB" in response.json()["detail"]
    small = tmp_path / "small.csv"
    small.write_text("text,label\nfine,positive\n")
    with open(small, "rb") as handle:
        assert httpx.post(f"{base}/gradio_api/upload", files={"files": handle}).status_code == 200


# ----- classification and the transfer lab ----------------------------------------------------------


@pytest.fixture(scope="module")
def classifier_app(tmp_path_factory, tokenizer):
    from xmod_explorer.tiny import TinySpec, build_random_checkpoint

    folder = build_random_checkpoint(
        tmp_path_factory.mktemp("app-classifier"), TinySpec(languages=LANGUAGES, head="classification"), tokenizer
    )
    settings = load_settings(["--model", str(folder)])
    explorer = Explorer.from_pretrained(str(folder), limits=settings.limits)
    demo, client = serve(settings, explorer)
    yield client, explorer
    demo.close()


def test_classify_endpoint_returns_engine_numbers(classifier_app):
    client, explorer = classifier_app
    got = client.predict("Chaque langue a son propre adaptateur.", ["ja_XX", "de_DE"], api_name="/classify")
    assert got == explorer.classify("Chaque langue a son propre adaptateur.", ["ja_XX", "de_DE"]).to_dict()
    assert got["labels"] == ["negative", "positive"] and list(got["probabilities"]) == ["ja_XX", "de_DE"]


def test_classify_endpoint_without_a_classification_head(local_app):
    client, _ = local_app
    with pytest.raises(AppError, match="no sequence-classification head"):
        client.predict("A sentence.", ["en_XX"], api_name="/classify")


def test_transfer_lab_endpoint(local_app):
    client, _ = local_app
    got = client.predict("en_XX", ["ja_XX", "de_DE"], api_name="/transfer_lab")
    assert got["training"]["examples"] == 200 and got["training"]["head"]["labels"] == ["negative", "positive"]
    rows = got["transfer"]["rows"]
    assert [row["language"] for row in rows] == ["ja_XX", "de_DE"] and all(row["examples"] == 48 for row in rows)
    with pytest.raises(AppError, match="source_language='en_XX'"):
        client.predict("de_DE", ["ja_XX"], api_name="/transfer_lab")


def _lab(demo):
    """The lab's training event function, found by name in the built app, and the server's session store."""
    from xmod_explorer.ui.layout import serving_of

    functions = {fn.name: fn for fn in demo.fns.values()}
    return functions["train_head"], serving_of(demo).sessions


def _run(demo, function, inputs, session):
    """Run an event as Gradio would for one browser session; returns the lab session handle it answers with."""
    import asyncio

    return asyncio.run(demo.process_api(function, inputs, state=session))["data"][-1]


def test_two_sessions_train_their_own_heads(base_dir, tmp_path):
    """Two sessions train at once from two threads through gradio's own per-session state: each gets its own head."""
    import threading

    from gradio.state_holder import SessionState

    from xmod_explorer.ui.classify import DEFAULT_SET, UPLOAD_SET

    settings = load_settings(["--model", str(base_dir)])
    explorer = Explorer.from_pretrained(str(base_dir), limits=settings.limits)
    shared_attributes = set(vars(explorer))
    demo = build_app(settings, explorer)
    train, store = _lab(demo)
    upload = tmp_path / "mine.csv"
    upload.write_text(
        "text,label,language\n"
        + "".join(f"choose compare adapter {i},good,de_DE\nmodèle partage poids {i},bad,de_DE\n" for i in range(12))
        + "".join(f"explorer shows {i},good,fr_XX\nlangues entre {i},bad,fr_XX\n" for i in range(4)),
        encoding="utf-8",
    )
    file_data = {"path": str(upload), "orig_name": "mine.csv", "meta": {"_type": "gradio.FileData"}}
    sessions = {"a": SessionState(demo), "b": SessionState(demo)}
    inputs = {
        "a": [DEFAULT_SET, None, "en_XX", ["ja_XX", "de_DE"], False, None],
        "b": [UPLOAD_SET, file_data, "de_DE", ["fr_XX"], False, None],
    }
    errors, handles = [], {}

    def train_in(name):
        try:
            handles[name] = _run(demo, train, inputs[name], sessions[name])
        except Exception as exc:  # surfaced below
            errors.append((name, exc))

    threads = [threading.Thread(target=train_in, args=(name,)) for name in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    a, b = store.get(handles["a"]), store.get(handles["b"])
    assert len(handles["a"]) >= 32 and handles["a"] != handles["b"]  # server-made, unguessable
    assert a.head.labels == ["negative", "positive"] and a.head.source_language == "en_XX" and a.head.examples == 200
    assert b.head.labels == ["bad", "good"] and b.head.source_language == "de_DE" and b.head.examples == 24
    assert a.transfer.languages == ["ja_XX", "de_DE"] and b.transfer.languages == ["fr_XX"]
    assert a.head is not b.head
    assert set(vars(explorer)) == shared_attributes  # nothing of either session was put on the shared model

    # A bad upload in session b: a clear message, and b keeps the head it had; a is untouched.
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nonly,good\nlabels,good\n", encoding="utf-8")
    with pytest.raises(gr.Error, match="only one label"):
        _run(
            demo,
            train,
            [UPLOAD_SET, {**file_data, "path": str(bad)}, "de_DE", ["fr_XX"], False, handles["b"]],
            sessions["b"],
        )
    assert store.get(handles["b"]) is b and store.get(handles["a"]) is a


def test_public_mode_caps_the_lab(base_dir, tmp_path):
    from gradio.state_holder import SessionState

    from xmod_explorer.ui.classify import UPLOAD_SET

    settings = load_settings(["--model", str(base_dir), "--public"])
    demo = build_app(settings, Explorer.from_pretrained(str(base_dir), limits=settings.limits))
    train, store = _lab(demo)
    big = tmp_path / "big.csv"
    big.write_text("text,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(601)), encoding="utf-8")
    session = SessionState(demo)
    file_data = {"path": str(big), "orig_name": "big.csv", "meta": {"_type": "gradio.FileData"}}
    with pytest.raises(gr.Error, match="more than 600 rows"):
        _run(demo, train, [UPLOAD_SET, file_data, "en_XX", ["de_DE"], True, None], session)
    assert len(store) == 0
    labels = [getattr(block, "label", None) for block in demo.blocks.values()]
    finetune = next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "classify-finetune")
    assert finetune.visible is False  # fine-tuning is not offered without --allow-finetune
    assert "CSV to train and test on" in labels


def test_allow_finetune_trains_a_private_copy_for_the_session(base_dir):
    import hashlib

    from gradio.state_holder import SessionState

    from xmod_explorer.ui.classify import DEFAULT_SET

    settings = load_settings(["--model", str(base_dir), "--allow-finetune"])
    explorer = Explorer.from_pretrained(str(base_dir), limits=settings.limits)

    def digest():
        return hashlib.sha256(
            b"".join(p.detach().numpy().tobytes() for p in explorer.backend.model.parameters())
        ).hexdigest()

    before = digest()
    demo = build_app(settings, explorer)
    finetune = next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "classify-finetune")
    assert finetune.visible is True
    train, store = _lab(demo)
    session = SessionState(demo)
    state = store.get(_run(demo, train, [DEFAULT_SET, None, "en_XX", ["de_DE"], True, None], session))
    assert state.tuned is not None and state.tuned.backend.model is not explorer.backend.model
    assert state.head.encoder == "fine-tuned" and state.transfer.languages == ["de_DE"]
    assert digest() == before


def markdown_values(demo: gr.Blocks) -> dict[str, str]:
    """The initial text of every Markdown component that has an elem_id."""
    return {
        c["props"]["elem_id"]: str(c["props"].get("value", ""))
        for c in demo.config["components"]
        if c.get("type") == "markdown" and c["props"].get("elem_id")
    }


def test_the_mini_model_says_what_it_was_trained_on(base_dir):
    """Its chance-level sentiment results must not read as findings about X-MOD: banner and lesson say so."""
    from xmod_explorer.defaults import MINI_NOTE

    settings = load_settings(["--model", "mini"])
    with build_app(settings, Explorer.from_pretrained("mini", limits=settings.limits)) as demo:
        texts = markdown_values(demo)
    assert "LibreOffice's help pages" in MINI_NOTE
    assert MINI_NOTE in texts["model-banner"] and MINI_NOTE in texts["classify-lesson"]
    settings = load_settings(["--model", str(base_dir)])
    with build_app(settings, Explorer.from_pretrained(str(base_dir), limits=settings.limits)) as demo:
        texts = markdown_values(demo)
    assert MINI_NOTE not in texts["model-banner"] and MINI_NOTE not in texts["classify-lesson"]


# ----- small things a public server must get right ------------------------------------------------------------


def test_csv_downloads_cannot_start_a_formula_in_a_spreadsheet(tmp_path):
    import pandas as pd

    from xmod_explorer.ui.common import csv_file

    frame = pd.DataFrame(
        {
            "token": ['=HYPERLINK("http://x")', "+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd", "plain", "-"],
            "probability": [0.5, -0.25, 0.1, 0.0, 1.0, 0.3, 0.2, -1.5],
        }
    )
    frame["=title"] = "x"
    written = pd.read_csv(csv_file(frame, "predictions"), keep_default_na=False)
    assert written["token"].tolist() == [
        '\'=HYPERLINK("http://x")',
        "'+1",
        "'-2+3",
        "'@SUM(A1)",
        "'\tcmd",
        "'\rcmd",
        "plain",
        "'-",
    ]
    assert written["probability"].tolist() == [0.5, -0.25, 0.1, 0.0, 1.0, 0.3, 0.2, -1.5]  # numbers stay numbers
    assert list(written.columns) == ["token", "probability", "'=title"]


def test_a_public_server_shows_no_path_of_its_disk(tmp_path, base_dir):
    import httpx
    from helpers import app_process

    with app_process(["--model", str(base_dir), "--public"], tmp_path) as (url, _):
        info = Client(url, verbose=False).predict(api_name="/model_info")
        page = httpx.get(f"{url}/config").text
        answer = Client(url, verbose=False).predict("A <mask>.", ["en_XX"], 2, api_name="/predict_masks")
    assert info["folder"] == "" and info["model"] == base_dir.name
    assert str(base_dir) not in page and str(base_dir.parent) not in page
    assert answer["model"] == base_dir.name
    assert "public mode: --public given" in (tmp_path / "app.log").read_text()


def test_heads_with_numbers_that_are_not_finite_are_refused(base_dir, tmp_path):
    import torch
    from gradio.state_holder import SessionState

    from xmod_explorer.classify import ProbeHead

    settings = load_settings(["--model", str(base_dir)])
    explorer = Explorer.from_pretrained(str(base_dir), limits=settings.limits)
    demo = build_app(settings, explorer)
    load_head = next(fn for fn in demo.fns.values() if fn.name == "load_head")
    hidden = explorer.shape.hidden
    for broken in ("nan", "inf", "std"):
        weight, std = torch.zeros(2, hidden), torch.ones(hidden)
        if broken == "nan":
            weight[0, 0] = float("nan")
        elif broken == "inf":
            weight[1, 3] = float("inf")
        else:
            std[0] = 0.0
        head = ProbeHead(weight, torch.zeros(2), torch.zeros(hidden), std, ["a", "b"], "en_XX", explorer.name)
        path = head.save(tmp_path / f"{broken}.safetensors")
        file_data = {"path": str(path), "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}
        with pytest.raises(gr.Error, match="not finite"):
            _run(demo, load_head, [file_data, ""], SessionState(demo))
