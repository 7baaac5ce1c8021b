"""GPU path: float16 on CUDA against float32 on the CPU. Runs only with `pytest -m cuda` on a CUDA machine."""

from __future__ import annotations

import pytest
import torch

from xmod_explorer import Explorer

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def pair(base_dir):
    if not torch.cuda.is_available():
        pytest.fail("pytest -m cuda was asked for, but no CUDA device is visible")
    return Explorer.from_pretrained(str(base_dir), device="cpu"), Explorer.from_pretrained(str(base_dir), device="cuda")


def test_auto_dtype_on_gpu_is_half(pair):
    _, gpu = pair
    assert gpu.info().device.startswith("cuda") and gpu.info().dtype == "float16"


@pytest.mark.parametrize("backend", ["transformers", "adapters"])
def test_float16_predictions_track_float32(base_dir, backend):
    cpu = Explorer.from_pretrained(str(base_dir), device="cpu", backend=backend)
    gpu = Explorer.from_pretrained(str(base_dir), device="cuda", backend=backend)
    text = "Der <mask> jeder Sprache sitzt in jeder <mask>."
    codes = ["ru_RU", "en_XX", "de_DE"]
    a = cpu.predict_masks(text, codes, 5).to_dict()
    b = gpu.predict_masks(text, codes, 5).to_dict()
    for slot_a, slot_b in zip(a["masks"], b["masks"]):
        for code in codes:
            top_a = slot_a["predictions"][code][0]
            probabilities_b = {g["token_id"]: g["probability"] for g in slot_b["predictions"][code]}
            assert top_a["token_id"] in probabilities_b
            assert probabilities_b[top_a["token_id"]] == pytest.approx(top_a["probability"], abs=2e-2)
    ca = cpu.compare_adapters("Every layer holds an adapter.", codes)
    cb = gpu.compare_adapters("Every layer holds an adapter.", codes)
    assert torch.allclose(ca.pooled_cosine, cb.pooled_cosine, atol=1e-2)
