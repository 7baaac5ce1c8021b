"""Tiny test models are the same on every run: tokenizer, weights and outputs, whatever the process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from helpers import ROOT

BUILD = """
import hashlib, json, sys, tempfile
from pathlib import Path
from xmod_explorer import Explorer
from xmod_explorer.mini.tokenizer import counted_tokenizer
from xmod_explorer.tiny import SAMPLE_SENTENCES, TinySpec, build_random_checkpoint

folder = Path(tempfile.mkdtemp())
build_random_checkpoint(folder, TinySpec(), counted_tokenizer(SAMPLE_SENTENCES * 3, 160))
files = ("tokenizer.json", "model.safetensors")
digest = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in files}
result = Explorer.from_pretrained(str(folder)).predict_masks("Choose two <mask>.", ["en_XX", "de_DE"], 5).to_dict()
del result["model"]  # the folder's name
print(json.dumps({"files": digest, "result": result}))
"""


def build_in_a_new_process(hash_seed: str) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", BUILD], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_processes_build_identical_tiny_models():
    """Different hash seeds and processes: the Unigram trainer's tie order changed here; the counted one may not."""
    first, second = build_in_a_new_process("1"), build_in_a_new_process("2")
    assert first["files"] == second["files"]
    assert first["result"] == second["result"]
