"""`pip install .` gives a working library and command: a wheel built from this tree, installed into a
fresh virtual environment and run from outside the checkout.

The fresh environment borrows the test environment's dependencies through a .pth file (installing
torch again would take minutes and gigabytes); xmod_explorer itself comes only from the wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from gradio_client import Client
from helpers import ROOT, app_process, assert_same_predictions

from xmod_explorer import Explorer

pytestmark = pytest.mark.slow

TEXT = "Click the <mask> to save the document."


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed; returns its bin folder."""
    folder = tmp_path_factory.mktemp("package")
    run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-w", str(folder)],
        cwd=folder,
    )
    wheel = next(folder.glob("xmod_explorer-*.whl"))
    venv = folder / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    (Path(site) / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)])
    return venv / "bin"


def test_the_library_imports_from_the_wheel_outside_the_checkout(installed, tmp_path):
    code = (
        "import json, xmod_explorer; from xmod_explorer import Explorer;"
        "e = Explorer.from_pretrained('mini');"
        f"print(json.dumps({{'file': xmod_explorer.__file__, 'folder': e.info().folder, "
        f"'result': e.predict_masks({TEXT!r}, ['en_XX', 'de_DE'], 3).to_dict()}}))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    done = run([str(installed / "python"), "-c", code], cwd=tmp_path, env=env)
    import json

    data = json.loads(done.stdout.strip().splitlines()[-1])
    venv = str(installed.parent)
    assert data["file"].startswith(venv) and data["folder"].startswith(venv)  # code and mini model from the wheel
    expected = Explorer.from_pretrained("mini").predict_masks(TEXT, ["en_XX", "de_DE"], 3).to_dict()
    assert_same_predictions(data["result"], expected)


def test_the_console_script_serves_the_app(installed, tmp_path):
    assert run([str(installed / "xmod-explorer"), "info", "--model", "mini"], cwd=tmp_path).stdout.count("_") > 5
    env = {"PYTHONPATH": "", "HF_HUB_CACHE": str(tmp_path / "hub")}
    with app_process(
        ["--model", "mini"], tmp_path, env=env, command=[str(installed / "xmod-explorer")], cwd=tmp_path
    ) as (
        url,
        _,
    ):
        client = Client(url, verbose=False)
        info = client.predict(api_name="/model_info")
        assert info["model"] == "xmod-mini" and info["folder"].startswith(str(installed.parent))
        answer = client.predict(TEXT, ["en_XX", "fr_XX"], 4, api_name="/predict_masks")
    expected = Explorer.from_pretrained("mini").predict_masks(TEXT, ["en_XX", "fr_XX"], 4).to_dict()
    assert_same_predictions(answer, expected)


def test_the_console_script_runs_batch_mode(installed, tmp_path):
    corpus = tmp_path / "corpus.tsv"
    corpus.write_text("text\tlanguage\nClick the <mask> to save the document.\tde_DE\n", encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    command = [str(installed / "xmod-explorer"), "batch", "predict", "--input", str(corpus), "--output", "out.csv"]
    done = run([*command, "--model", "mini", "--top-k", "2", "--no-progress"], cwd=tmp_path, env=env)
    assert "wrote 2 result rows for 1 input rows" in done.stdout
    assert (tmp_path / "out.csv").read_text(encoding="utf-8").count("\n0,1,") == 2
