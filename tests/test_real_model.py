"""The real facebook/xmod-base against transformers' own reference values.

Runs only with `pytest -m real_model`, where the checkpoint is in the Hugging Face cache or XMOD_BASE_PATH
points to a local copy; nothing is downloaded.
"""

from __future__ import annotations

import os

import pytest
import torch

from xmod_explorer import Explorer, ExplorerError

pytestmark = pytest.mark.real_model

EN_IDS = [0, 581, 10269, 83, 99942, 136, 60742, 23, 70, 80583, 18276, 2]
EN_EXPECTED = [-0.2394, -0.0036, 0.1252, -0.0087, 0.1325, 0.0580, -0.2049, -0.1978, -0.1223, 0.0648, -0.2599, -0.3724]
DE_IDS = [0, 1310, 49083, 443, 269, 71, 5486, 165, 60429, 660, 23, 2315, 58761, 18391, 5, 2]
DE_EXPECTED = [
    0.0162,
    0.0075,
    -0.1882,
    0.2335,
    -0.0952,
    -0.3994,
    -0.0317,
    -0.1174,
    0.0177,
    0.4280,
    -0.0240,
    -0.2138,
    0.0785,
    -0.1045,
    -0.2811,
    -0.3220,
]


@pytest.fixture(scope="module")
def explorer():
    reference = os.environ.get("XMOD_BASE_PATH", "facebook/xmod-base")
    try:
        return Explorer.from_pretrained(reference, device="cpu")
    except ExplorerError as exc:
        pytest.fail(f"pytest -m real_model needs facebook/xmod-base in the cache or XMOD_BASE_PATH: {exc}")


@pytest.mark.parametrize("code, ids, expected", [("en_XX", EN_IDS, EN_EXPECTED), ("de_DE", DE_IDS, DE_EXPECTED)])
def test_hidden_states_match_reference_values(explorer, code, ids, expected):
    input_ids = torch.tensor([ids])
    encoded = explorer.backend.encode_rows(input_ids, torch.ones_like(input_ids), [code])
    assert torch.allclose(encoded.last[0, :, -1], torch.tensor(expected), atol=1e-3)


@pytest.mark.parametrize("text, answer", [("Hello, my dog is a little <mask>.", "girl"), ("Hi <mask>!", "everyone")])
def test_mask_filling_matches_reference(explorer, text, answer):
    prediction = explorer.predict_masks(text, ["en_XX"], top_k=1)
    assert prediction.masks[0].predictions["en_XX"][0].token == answer
