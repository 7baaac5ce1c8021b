"""The command line, run as a real subprocess, prints the engine's numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT, assert_same_predictions

from xmod_explorer import Explorer

pytestmark = pytest.mark.slow  # runs the app or the command line as real processes, or hundreds of inputs


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "xmod_explorer", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_predict_json_equals_engine(base_dir):
    done = cli(
        "predict",
        "Der <mask> jeder Sprache.",
        "--languages",
        "de_DE,ja_XX",
        "--top-k",
        "4",
        "--model",
        str(base_dir),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    expected = Explorer.from_pretrained(str(base_dir)).predict_masks("Der <mask> jeder Sprache.", ["de_DE", "ja_XX"], 4)
    assert_same_predictions(json.loads(done.stdout), expected.to_dict())


def test_compare_and_info_tables(base_dir):
    done = cli(
        "compare",
        "Every layer holds an adapter.",
        "--languages",
        "en_XX,de_DE",
        "--layer",
        "0",
        "--model",
        str(base_dir),
    )
    assert done.returncode == 0, done.stderr
    assert "layer 0" in done.stdout and "1.0" in done.stdout
    info = cli("info", "--model", str(base_dir), "--json")
    assert json.loads(info.stdout)["languages"] == ["ru_RU", "en_XX", "ja_XX", "de_DE", "fr_XX"]


def test_sentences_from_csv(base_dir, tmp_path):
    table = tmp_path / "pairs.csv"
    table.write_text(
        "language,text\nen_XX,Choose two languages.\nde_DE,Wähle zwei Sprachen.\nfr_XX,Choisis deux langues.\n",
        encoding="utf-8",
    )
    done = cli("sentences", str(table), "--model", str(base_dir), "--json")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["pooled_cosine"][0]) == 3


def test_errors_are_messages_not_tracebacks(base_dir):
    done = cli("predict", "No mask here.", "--languages", "de_DE", "--model", str(base_dir))
    assert done.returncode == 2
    assert "error:" in done.stderr and "Traceback" not in done.stderr


def test_convert_command_writes_a_verified_checkpoint(base_dir, tmp_path):
    out = tmp_path / "converted"
    done = cli("convert", str(base_dir), str(out))
    assert done.returncode == 0, done.stderr
    record = json.loads((out / "xmod_explorer.json").read_text())
    assert record["languages"] == ["ru_RU", "en_XX", "ja_XX", "de_DE", "fr_XX"]
    assert max(record["max_abs_diff"].values()) <= record["tolerance"]
    assert sorted(p.name for p in (out / "adapters").iterdir()) == sorted(record["languages"])
    again = cli("convert", str(base_dir), str(out))
    assert again.returncode == 2 and "not empty" in again.stderr


def test_convert_refuses_a_result_that_differs(base_dir, tmp_path):
    """A negative tolerance makes every language fail the check: nothing may be written."""
    from xmod_explorer import ExplorerError
    from xmod_explorer.convert import convert

    out = tmp_path / "refused"
    with pytest.raises(ExplorerError, match="Nothing was written"):
        convert(str(base_dir), out, tolerance=-1.0)
    assert not out.exists() and not out.with_name("refused.partial").exists()


def test_lens_identify_mix_and_map_commands_print_engine_numbers(base_dir, tmp_path):
    explorer = Explorer.from_pretrained(str(base_dir))
    model = ["--model", str(base_dir), "--json"]
    text = "Der <mask> jeder Sprache."
    lens = cli("lens", text, "--languages", "de_DE,ja_XX", "--top-k", "2", *model)
    assert lens.returncode == 0, lens.stderr
    assert json.loads(lens.stdout) == json.loads(json.dumps(explorer.logit_lens(text, "de_DE,ja_XX", 2).to_dict()))
    identify = cli("identify", "Choose two languages.", "--languages", "en_XX,de_DE", *model)
    assert identify.returncode == 0, identify.stderr
    expected = explorer.score_languages("Choose two languages.", "en_XX,de_DE")
    got = json.loads(identify.stdout)
    assert got["languages"] == expected.languages
    assert got["token_log_probs"] == json.loads(json.dumps(expected.to_dict()))["token_log_probs"]
    assert "forward rows" in identify.stderr
    mix = cli("mix", text, "--a", "en_XX", "--b", "ja_XX", "--steps", "3", *model)
    assert mix.returncode == 0, mix.stderr
    expected = explorer.interpolate(text, "en_XX", "ja_XX", 3, 3)
    assert json.loads(mix.stdout) == json.loads(json.dumps(expected.to_dict()))
    table = tmp_path / "pairs.csv"
    table.write_text("language,text\nen_XX,Choose two.\nde_DE,Wähle zwei.\nfr_XX,Choisis deux.\n", encoding="utf-8")
    mapped = cli("map", str(table), "--layer", "2", *model)
    assert mapped.returncode == 0, mapped.stderr
    expected = explorer.project([("en_XX", "Choose two."), ("de_DE", "Wähle zwei."), ("fr_XX", "Choisis deux.")], 2)
    assert json.loads(mapped.stdout) == expected.to_dict()
    readable = cli("map", "--text", "Choose two.", "--languages", "en_XX,de_DE,fr_XX", "--model", str(base_dir))
    assert readable.returncode == 0 and "layer" in readable.stdout and "Layer 0" in readable.stderr
    both = cli("map", str(table), "--text", "Choose two.", "--model", str(base_dir))
    assert both.returncode == 2 and "either a file" in both.stderr
