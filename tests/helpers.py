"""What many test modules share: the tiny models' languages, the transformers reference, app servers.

Test modules import from here (or get fixtures from conftest.py), never from one another.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
# Deliberately not alphabetical, so that any code assuming an order of lang ids fails.
LANGUAGES = ["ru_RU", "en_XX", "ja_XX", "de_DE", "fr_XX"]


# ----- numbers: the engine against plain transformers ------------------------------------------------


def reference_predictions(folder, text: str, top_k: int, tokenizer_folder=None) -> dict:
    """The documented way: set_default_language, full-vocabulary forward, one language at a time.

    Returns {code: [topk per mask position]}. tokenizer_folder: where the tokenizer is, for checkpoints that ship
    none (default: folder)."""
    from transformers import AutoTokenizer, XmodForMaskedLM

    model = XmodForMaskedLM.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder or folder))
    encoded = tokenizer(text, return_tensors="pt")
    positions = (encoded.input_ids[0] == tokenizer.mask_token_id).nonzero().flatten().tolist()
    result = {}
    for code in model.config.languages:
        model.set_default_language(code)
        with torch.no_grad():
            probabilities = model(**encoded).logits[0].softmax(-1)
        result[code] = [probabilities[p].topk(top_k) for p in positions]
    return result


def reference_hidden_states(folder, text: str, code: str) -> tuple[torch.Tensor, list[int]]:
    """Every layer's states at the text's tokens (not <s>, </s>) under one language: (layers + 1, tokens, hidden),
    and the positions of those tokens. The documented way: set_default_language, then XmodModel's forward."""
    from transformers import AutoTokenizer, XmodForMaskedLM

    model = XmodForMaskedLM.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model.set_default_language(code)
    encoded = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        states = model.roberta(**encoded, output_hidden_states=True).hidden_states
    special = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}  # <s>, </s>, padding
    content = [i for i, t in enumerate(encoded.input_ids[0].tolist()) if t not in special]
    return torch.stack([s[0, content] for s in states]), content


def assert_matches_reference(prediction, reference, tolerance=1e-5) -> None:
    """A MaskPrediction equals reference_predictions: same ids in the same order, probabilities within tolerance."""
    for m, slot in enumerate(prediction.masks):
        for code, guesses in slot.predictions.items():
            expected = reference[code][m]
            assert [g.token_id for g in guesses] == expected.indices.tolist(), (code, m)
            got = torch.tensor([g.probability for g in guesses])
            assert torch.allclose(got, expected.values, atol=tolerance, rtol=0), (code, m, got, expected.values)


def assert_same_predictions(a: dict, b: dict, atol: float = 1e-6) -> None:
    """Two predict_masks dicts agree: same tokens in the same order, probabilities within atol."""
    assert a["languages"] == b["languages"]
    assert len(a["masks"]) == len(b["masks"])
    for slot_a, slot_b in zip(a["masks"], b["masks"]):
        assert slot_a["position"] == slot_b["position"]
        for code in a["languages"]:
            guesses_a, guesses_b = slot_a["predictions"][code], slot_b["predictions"][code]
            assert [g["token_id"] for g in guesses_a] == [g["token_id"] for g in guesses_b], code
            for ga, gb in zip(guesses_a, guesses_b):
                assert abs(ga["probability"] - gb["probability"]) <= atol, (code, ga, gb)


# ----- hostile uploads ----------------------------------------------------------------------------------


def excel_for_mac_csv(size: int) -> bytes:
    """A labelled CSV of at least size bytes as Excel for Mac saves it: CR line ends only, so to a reader
    that looks for LF the whole file is one line."""
    lines = ["text,label,language"]
    number = 0
    while sum(len(line) + 1 for line in lines) < size:
        number += 1
        label = "positive" if number % 2 else "negative"
        # Excel quotes a cell that holds the separator; csv.Sniffer's regular expressions are quadratic in those.
        lines.append(f'"Review {number}: the program opens the document, and shows every page quickly",{label},en_XX')
    return ("\r".join(lines) + "\r").encode("utf-8")


# ----- servers: the app in-process, or as `python app.py` on a real port ------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(settings, explorer, **build):
    """The app built around explorer (build: build_app's keywords), launched in this process on a free port;
    returns (demo, client)."""
    from gradio_client import Client

    from xmod_explorer.ui.layout import build_app, launch_options

    demo = build_app(settings, explorer, **build)
    options = {**launch_options(settings, demo), "server_name": "127.0.0.1", "server_port": free_port(), "share": False}
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **options)
    return demo, Client(url, verbose=False)


def wait_until_serving(url: str, process: subprocess.Popen, log: Path, limit: float = 60) -> None:
    """Poll /gradio_api/info: the 'Running on' line comes before the server answers."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/gradio_api/info", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the app did not answer within {limit} s:\n{log.read_text()}")


@contextlib.contextmanager
def app_process(
    args: list[str], folder: Path, env: dict | None = None, command: list[str] | None = None, cwd: Path = ROOT
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`python app.py ARGS --port P` (or another command) as a subprocess, offline; once it answers,
    yields (url, process)."""
    port = free_port()
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    log = folder / "app.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [*(command or [sys.executable, "app.py"]), *args, "--port", str(port)],
            cwd=cwd,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process, log)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


# ----- maps: a 2-D PCA of all points at once, for checking the streamed one ---------------------------------


def pca_reference(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates (n, 2) and explained shares (2,) from an SVD of all centred points, each axis oriented so
    that the point farthest from the centre along it (the first, on ties) lies on its positive side."""
    x = points.double() - points.double().mean(0)
    u, s, _ = torch.linalg.svd(x, full_matrices=False)
    coordinates = u[:, :2] * s[:2]
    for axis in range(2):
        if coordinates[coordinates[:, axis].abs().argmax(), axis] < 0:
            coordinates[:, axis] *= -1
    return coordinates, s[:2] ** 2 / (s**2).sum()


# ----- Gradio's own protocol, spoken directly (what the page and API clients send) --------------------------


def event_index(config: dict, elem_id: str, trigger: str = "click") -> int:
    """The fn_index of the event that a component (by elem_id) triggers, from the app's /config."""
    ids = [c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id]
    for dependency in config["dependencies"]:
        if any(target == [ids[0], trigger] for target in dependency.get("targets", [])):
            return dependency["id"]
    raise LookupError(f"no {trigger} event on #{elem_id}")


def join(base: str, fn_index: int, data: list, session_hash: str, timeout: float = 30) -> str:
    """POST /gradio_api/queue/join as the page does; returns the event id."""
    import httpx

    body = {"data": data, "fn_index": fn_index, "session_hash": session_hash, "event_data": None, "trigger_id": None}
    response = httpx.post(f"{base}/gradio_api/queue/join", json=body, timeout=timeout)
    response.raise_for_status()
    return response.json()["event_id"]


def upload(base: str, name: str, data: bytes) -> dict:
    """POST one file to /gradio_api/upload; returns the FileData an event input takes."""
    import httpx

    response = httpx.post(f"{base}/gradio_api/upload", files={"files": (name, data)}, timeout=30)
    response.raise_for_status()
    return {"path": response.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def messages(stream) -> Iterator[dict]:
    """The JSON messages of an open /gradio_api/queue/data event stream (an httpx streaming response)."""
    import json

    for line in stream.iter_lines():
        if line.startswith("data:"):
            yield json.loads(line[5:])
