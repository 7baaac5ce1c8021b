"""Loading through the Hugging Face cache, offline behaviour, defaults, and unsafe weights."""

from __future__ import annotations

import json
import pickle
import shutil
import time

import pytest
import torch
from helpers import assert_same_predictions

from xmod_explorer import Explorer, ExplorerError, compat, defaults

SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


def make_cache(root, repo: str, source) -> None:
    """Lay out a hub cache entry the way huggingface_hub writes one (refs/main -> snapshot)."""
    entry = root / ("models--" + repo.replace("/", "--"))
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(SNAPSHOT)
    shutil.copytree(source, entry / "snapshots" / SNAPSHOT)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "hub").mkdir()
    return tmp_path / "hub"


def test_hub_id_loads_from_the_cache_offline(offline_cache, base_dir):
    make_cache(offline_cache, "xmod-test/tiny-base", base_dir)
    from_cache = Explorer.from_pretrained("xmod-test/tiny-base")
    from_folder = Explorer.from_pretrained(str(base_dir))
    assert from_cache.info().model == "xmod-test/tiny-base"
    assert str(offline_cache) in from_cache.info().folder
    a = from_cache.predict_masks("One <mask> here.", ["de_DE", "ja_XX"], 4).to_dict()
    b = from_folder.predict_masks("One <mask> here.", ["de_DE", "ja_XX"], 4).to_dict()
    assert_same_predictions(a, b)


def test_uncached_hub_id_offline_fails_fast_with_advice(offline_cache):
    start = time.monotonic()
    with pytest.raises(ExplorerError, match="HF_HUB_OFFLINE"):
        Explorer.from_pretrained("xmod-test/not-there")
    assert time.monotonic() - start < 5


def test_unreachable_hub_fails_fast(tmp_path, monkeypatch):
    """No HF_HUB_OFFLINE, but the endpoint refuses connections: found out within seconds."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    start = time.monotonic()
    with pytest.raises(ExplorerError, match="cannot be reached"):
        Explorer.from_pretrained("xmod-test/not-there")
    assert time.monotonic() - start < 10
    choice = defaults.resolve_default()
    assert choice.reference != defaults.DEFAULT_MODEL and "cannot be reached" in choice.reason


def test_default_prefers_a_cached_xmod_base(offline_cache, base_dir):
    make_cache(offline_cache, defaults.DEFAULT_MODEL, base_dir)
    choice = defaults.resolve_default()
    assert choice.reference == defaults.DEFAULT_MODEL and "cache" in choice.reason


def test_default_offline_without_cache_falls_back(offline_cache):
    choice = defaults.resolve_default()
    assert "HF_HUB_OFFLINE" in choice.reason
    if defaults.mini_available():
        assert choice.reference == str(defaults.MINI_PATH) and not choice.random_weights
    else:
        assert choice.random_weights and defaults.RANDOM_NOTE in choice.reason


def test_named_model_is_never_silently_replaced(offline_cache):
    with pytest.raises(ExplorerError):
        Explorer.from_pretrained("facebook/xmod-base")


def test_random_alias_is_labelled(offline_cache):
    explorer = Explorer.from_pretrained("random")
    info = explorer.info()
    assert info.random_weights and defaults.RANDOM_NOTE in info.reason


class _RunsCode:
    def __reduce__(self):
        return (print, ("this pickle ran code",))


def test_pickle_that_would_run_code_is_refused(tmp_path, base_dir, capsys):
    target = tmp_path / "evil"
    shutil.copytree(base_dir, target)
    (target / "model.safetensors").unlink()
    state = {"payload": _RunsCode()}
    torch.save(state, target / "pytorch_model.bin", pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(ExplorerError, match="refused"):
        Explorer.from_pretrained(str(target))
    assert "this pickle ran code" not in capsys.readouterr().out


def test_plain_pickle_weights_load_through_weights_only(tmp_path, base_dir):
    from transformers import XmodForMaskedLM

    target = tmp_path / "bin"
    shutil.copytree(base_dir, target)
    (target / "model.safetensors").unlink()
    XmodForMaskedLM.from_pretrained(str(base_dir)).save_pretrained(str(target), safe_serialization=False)
    assert (target / "pytorch_model.bin").exists()
    a = Explorer.from_pretrained(str(target)).predict_masks("One <mask>.", ["en_XX"], 3).to_dict()
    b = Explorer.from_pretrained(str(base_dir)).predict_masks("One <mask>.", ["en_XX"], 3).to_dict()
    assert_same_predictions(a, b)


# --- the direct safetensors path --------------------------------------------------------------


def _parameters(model) -> dict:
    return dict(model.state_dict().items())


def _codes(folder) -> list[str]:
    return json.loads((folder / "config.json").read_text())["languages"]


@pytest.mark.parametrize("languages", [None, ["ja_XX", "de_DE"]])
def test_direct_safetensors_load_equals_from_pretrained(model_dir, languages):
    from transformers import XmodForMaskedLM

    from xmod_explorer.loading import _assign_weights

    config = compat.config_from_checked(
        json.loads((model_dir / "config.json").read_text()), languages or _codes(model_dir)
    )
    fast = _assign_weights(model_dir, XmodForMaskedLM, config, torch.float32)
    assert fast is not None, "a single-file safetensors checkpoint should take the direct path"
    reference = XmodForMaskedLM.from_pretrained(str(model_dir), languages=languages or _codes(model_dir))
    got, expected = _parameters(fast), _parameters(reference)
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    # Tied weights stay tied: the output layer is the embedding matrix.
    assert fast.lm_head.decoder.weight is fast.roberta.embeddings.word_embeddings.weight
    assert fast.lm_head.decoder.bias is fast.lm_head.bias
    if languages:
        assert list(fast.roberta.encoder.layer[0].output.adapter_modules) == languages


def test_encoder_only_checkpoint_falls_back_and_cannot_fill_masks(tmp_path, base_dir):
    from transformers import XmodModel

    target = tmp_path / "encoder-only"
    XmodModel.from_pretrained(str(base_dir)).save_pretrained(str(target))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(base_dir / name, target / name)
    explorer = Explorer.from_pretrained(str(target))
    comparison = explorer.compare_adapters("Every layer holds an adapter.", ["en_XX", "de_DE"])
    reference = Explorer.from_pretrained(str(base_dir)).compare_adapters(
        "Every layer holds an adapter.", ["en_XX", "de_DE"]
    )
    assert torch.allclose(comparison.pooled_cosine, reference.pooled_cosine, atol=1e-6)
    with pytest.raises(ExplorerError, match="masked-LM"):
        explorer.predict_masks("A <mask>.", ["en_XX"])


def test_a_default_too_large_for_this_machine_falls_back_before_anything_is_built(offline_cache, base_dir):
    """facebook/xmod-base in the cache, but its config asks for more memory than there is: start with the mini model."""
    make_cache(offline_cache, defaults.DEFAULT_MODEL, base_dir)
    snapshot = offline_cache / "models--facebook--xmod-base" / "snapshots" / SNAPSHOT
    config = json.loads((snapshot / "config.json").read_text())
    huge = {"hidden_size": 8192, "num_attention_heads": 64, "intermediate_size": 32768, "num_hidden_layers": 96}
    (snapshot / "config.json").write_text(json.dumps({**config, **huge, "vocab_size": 1_000_000}))
    explorer = Explorer.from_pretrained(None)
    info = explorer.info()
    expected = "xmod-mini" if defaults.mini_available() else "random-tiny-xmod"
    assert info.model == expected
    assert info.reason.startswith("facebook/xmod-base could not be loaded: facebook/xmod-base: its weights would need")
    assert "GiB of memory is available" in info.reason
