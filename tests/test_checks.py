"""config.json is checked before anything is built or downloaded: crafted configs are refused, naming key and value."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hub_emulator import HubEmulator
from huggingface_hub import constants
from huggingface_hub.utils import reset_sessions
from transformers import XmodForMaskedLM, XmodForSequenceClassification

from xmod_explorer import Explorer, ExplorerError, checks, compat, machine
from xmod_explorer.tiny import TinySpec, build_random_checkpoint

ROOT = Path(__file__).resolve().parent.parent
HUGE = {"hidden_size": 8192, "num_attention_heads": 64, "intermediate_size": 32768, "num_hidden_layers": 96}
# name -> (keys written over a valid tiny config, text the refusal must contain)
CRAFTED = {
    "auto_map": ({"auto_map": {"AutoModelForMaskedLM": "modeling_evil.Evil"}}, 'auto_map = {"AutoModelForMaskedLM"'),
    "trust_remote_code": ({"trust_remote_code": True}, "trust_remote_code = true"),
    "custom_pipelines": ({"custom_pipelines": {"fill-mask": {"impl": "x.Y"}}}, "custom_pipelines = "),
    "attn_internal": (
        {"_attn_implementation_internal": "kernels-community/evil"},
        '_attn_implementation_internal = "kernels-community/evil"',
    ),
    "attn_autoset": ({"_attn_implementation_autoset": True}, "_attn_implementation_autoset = true"),
    "attn_sdpa": ({"attn_implementation": "sdpa"}, 'attn_implementation = "sdpa"'),
    "quantization": ({"quantization_config": {"quant_method": "bitsandbytes"}}, "quantization_config = "),
    "layers": ({"num_hidden_layers": 1_000_000}, "num_hidden_layers = 1000000"),
    "hidden": ({"hidden_size": 1_048_576, "num_attention_heads": 4}, "hidden_size = 1048576"),
    "vocabulary": ({"vocab_size": 1_000_000_000}, "vocab_size = 1000000000"),
    "positions": ({"max_position_embeddings": 100_000_000}, "max_position_embeddings = 100000000"),
    "languages": ({"languages": [f"x{i}_XX" for i in range(5_000)]}, 'languages = "5,000 codes"'),
    "not_a_size": ({"num_hidden_layers": "12"}, 'num_hidden_layers = "12"'),
    "memory": ({**HUGE, "vocab_size": 1_000_000}, "GiB of memory is available"),
}


@pytest.fixture(scope="module")
def valid(base_dir) -> dict:
    return json.loads((base_dir / "config.json").read_text())


def crafted_folder(root: Path, base_dir: Path, name: str, config: dict) -> Path:
    """A complete checkpoint (weights, tokenizer) whose config.json carries the crafted keys."""
    folder = root / name
    shutil.copytree(base_dir, folder)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_config_in_a_local_folder_is_refused(tmp_path, base_dir, valid, name):
    keys, expected = CRAFTED[name]
    folder = crafted_folder(tmp_path, base_dir, name, {**valid, **keys})
    with pytest.raises(ExplorerError) as caught:
        Explorer.from_pretrained(str(folder))
    assert expected in str(caught.value)


@pytest.fixture(scope="module")
def crafted_hub(base_dir, valid):
    """The crafted configs as hub repositories, with real weights behind them (pytorch_model.bin)."""
    emulator = HubEmulator()
    weights = Path(base_dir) / "model.safetensors"
    for name, (keys, _) in CRAFTED.items():
        files = {"config.json": json.dumps({**valid, **keys}), "model.safetensors": weights}
        for tokenizer_file in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            files[tokenizer_file] = base_dir / tokenizer_file
        emulator.add(f"crafted/{name.replace('_', '-')}", files)
    yield emulator
    emulator.close()


@pytest.fixture
def online(tmp_path, monkeypatch, crafted_hub):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_ENDPOINT", crafted_hub.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    reset_sessions()
    crafted_hub.clear_log()
    yield crafted_hub
    reset_sessions()


@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_config_on_the_hub_is_refused_before_any_weight_is_downloaded(online, name):
    _, expected = CRAFTED[name]
    with pytest.raises(ExplorerError) as caught:
        Explorer.from_pretrained(f"crafted/{name.replace('_', '-')}")
    assert expected in str(caught.value)
    fetched = {r.path.rsplit("/", 1)[-1] for r in online.requests if "/resolve/" in r.path}
    assert fetched == {"config.json"}  # neither the weights nor the tokenizer were asked for
    assert not online.requests_for("/lfs/")


REFUSE_ALL = """
import json, os, sys
from xmod_explorer import Explorer, ExplorerError

def high_water():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

Explorer.from_pretrained(sys.argv[1])  # a valid tiny model first: every import and first-use cost is paid
before = high_water()
messages = []
for reference in sys.argv[2:]:
    try:
        Explorer.from_pretrained(reference)
        messages.append(None)
    except ExplorerError as exc:
        messages.append(str(exc))
print(json.dumps({"before": before, "after": high_water(), "messages": messages}))
"""


def test_nothing_is_allocated_for_a_refused_config(tmp_path, base_dir, valid, crafted_hub):
    """In a fresh process, refusing every crafted config (local and from the hub) leaves its peak memory where a
    tiny model left it: the layer count alone would ask for tens of gigabytes if anything were built."""
    folders = [str(crafted_folder(tmp_path, base_dir, name, {**valid, **keys})) for name, (keys, _) in CRAFTED.items()]
    repos = [f"crafted/{name.replace('_', '-')}" for name in CRAFTED]
    env = {
        "PATH": "/usr/bin:/bin",
        "HF_HUB_CACHE": str(tmp_path / "cache"),
        "HF_ENDPOINT": crafted_hub.url,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(REFUSE_ALL), str(base_dir), *folders, *repos],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(message is not None for message in result["messages"]), result["messages"]
    assert result["after"] - result["before"] < 64 * 2**20, (result["after"] - result["before"]) / 2**20


@pytest.mark.parametrize("style", ["base", "prenorm", "classification", "subset"])
def test_parameter_estimate_equals_the_real_model(tmp_path, tokenizer, style):
    spec = TinySpec(style="prenorm" if style == "prenorm" else "base", adapter_reduction_factor=4)
    if style == "classification":
        spec.head, spec.labels = "classification", ["a", "b", "c"]
    folder = build_random_checkpoint(tmp_path / style, spec, tokenizer)
    config = json.loads((folder / "config.json").read_text())
    languages = spec.languages[:2] if style == "subset" else spec.languages
    cls = XmodForSequenceClassification if style == "classification" else XmodForMaskedLM
    model = cls.from_pretrained(str(folder), config=compat.config_from_checked(config, languages))
    assert checks.estimate_parameters(config, languages) == sum(p.numel() for p in model.parameters())


def test_the_estimate_of_xmod_base_is_its_published_size():
    config = {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "vocab_size": 250002,
        "num_hidden_layers": 12,
        "max_position_embeddings": 514,
        "type_vocab_size": 1,
        "adapter_reduction_factor": 2,
        "languages": ["x"] * 81,
    }
    assert round(checks.estimate_parameters(config) / 1e6, 1) == 852.7  # 3.41 GB in float32
    assert checks.estimate_parameters(config, ["x"] * 5) < 320e6


def test_available_memory_is_measured():
    memory = machine.available_memory_bytes()
    assert memory is not None and 2**28 < memory < 2**50


def test_the_config_transformers_sees_is_built_from_the_checked_values(valid):
    config = compat.config_from_checked(valid, ["de_DE"])
    assert config.languages == ["de_DE"] and config.default_language is None
    assert config._attn_implementation == "eager"
    with torch.device("meta"):
        assert list(XmodForMaskedLM(config).roberta.encoder.layer[0].output.adapter_modules) == ["de_DE"]
