"""Shared fixtures: tiny X-MOD checkpoints built here, saved to disk, loaded by the real loader."""

from __future__ import annotations

import os

import pytest

# No test may reach the hub; the loader must work from disk alone.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from helpers import LANGUAGES

from xmod_explorer import compat
from xmod_explorer.mini.tokenizer import counted_tokenizer
from xmod_explorer.tiny import SAMPLE_SENTENCES, TinySpec, build_random_checkpoint

# Tests that need hardware or files this machine may lack run only when `-m` names their marker.
OPT_IN = ("cuda", "real_model")


def pytest_collection_modifyitems(config, items):
    """Opt-in tests (cuda, real_model) are deselected unless -m names them; tests of the adapters backend
    skip, saying why, where the adapters library cannot run (transformers 5)."""
    expression = config.getoption("markexpr") or ""
    chosen, left_out = [], []
    for item in items:
        named = [marker for marker in OPT_IN if item.get_closest_marker(marker)]
        (left_out if any(marker not in expression for marker in named) else chosen).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = chosen
    why = compat.adapters_unavailable()
    if why is not None:
        skip = pytest.mark.skip(reason=f"adapters backend unavailable: {why}")
        for item in items:
            if "adapters_backend" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tokenizer():
    return counted_tokenizer(SAMPLE_SENTENCES * 3, 160)


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory, tokenizer):
    """xmod-base style: post-norm, adapter reuses the output LayerNorm."""
    return build_random_checkpoint(
        tmp_path_factory.mktemp("base"), TinySpec(languages=LANGUAGES, style="base"), tokenizer
    )


@pytest.fixture(scope="session")
def prenorm_dir(tmp_path_factory, tokenizer):
    """xmod-large-prenorm style: pre-norm, own adapter LayerNorm, ln_before_adapter=False."""
    spec = TinySpec(languages=LANGUAGES, style="prenorm", adapter_reduction_factor=4, seed=1)
    return build_random_checkpoint(tmp_path_factory.mktemp("prenorm"), spec, tokenizer)


@pytest.fixture(scope="session", params=["base", "prenorm"])
def model_dir(request, base_dir, prenorm_dir):
    return base_dir if request.param == "base" else prenorm_dir


@pytest.fixture(scope="session")
def converted_dir(tmp_path_factory, base_dir):
    from xmod_explorer.convert import convert

    out = tmp_path_factory.mktemp("converted") / "xmod-adapters"
    convert(str(base_dir), out)
    return out


@pytest.fixture(scope="session")
def all_languages_dir(tmp_path_factory, tokenizer):
    """A tiny model with all 81 xmod-base languages, in xmod-base's order, for 'every language at once'."""
    from xmod_explorer.languages import LANGUAGE_NAMES

    spec = TinySpec(languages=list(LANGUAGE_NAMES), hidden_size=16, num_heads=2, intermediate_size=32, seed=2)
    return build_random_checkpoint(tmp_path_factory.mktemp("all81"), spec, tokenizer)


@pytest.fixture(scope="session")
def wide_dir(tmp_path_factory, tokenizer):
    """Random weights, xmod-base's width (768, 12 heads, 3072), 2 layers: a batch of 4,096 tokens takes seconds, so
    long jobs are long for real."""
    spec = TinySpec(languages=LANGUAGES, hidden_size=768, num_heads=12, intermediate_size=3072, adapter_scale=0.0)
    return build_random_checkpoint(tmp_path_factory.mktemp("wide"), spec, tokenizer)
