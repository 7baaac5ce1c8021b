"""The benchmark runs end to end (in its --quick shape) so that it cannot rot between releases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.bench import QUICK, TARGET_TOKENS, Timing, fourteen_token_text, report
from xmod_explorer.mini.tokenizer import counted_tokenizer
from xmod_explorer.tiny import SAMPLE_SENTENCES

ROOT = Path(__file__).resolve().parent.parent


def run_benchmark(args: list[str], *, timeout: int) -> subprocess.CompletedProcess:
    """python -m <args> from the project's root, as a user runs a benchmark; output captured as text."""
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_benchmark_sentence_has_exactly_fourteen_tokens_and_one_mask():
    tokenizer = counted_tokenizer(SAMPLE_SENTENCES * 3, 400)
    text = fourteen_token_text(tokenizer)
    ids = tokenizer(text)["input_ids"]
    assert len(ids) == TARGET_TOKENS
    assert ids.count(tokenizer.mask_token_id) == 1


@pytest.mark.slow
def test_quick_benchmark_measures_every_case_and_writes_ratios(tmp_path):
    out = tmp_path / "quick.json"
    done = run_benchmark(["benchmarks.bench", "--quick", "--repeats", "1", "--out", str(out)], timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    cases = {(t["case"], t["k"]) for t in result["timings"]}
    for k in (1, 8, 81):
        for case in ("loop", "batched_full_logits", "engine", "encoder_floor"):
            assert (f"predict_masks/{case}", k) in cases
    for k in (8, 81):
        assert ("compare_adapters/engine", k) in cases and ("compare_adapters/encoder_floor", k) in cases
    for k in (1, 8, 81):
        assert ("score_languages/engine", k) in cases
    assert ("score_languages/loop", 8) in cases and ("score_languages/loop", 81) not in cases
    assert "| 81 | " in result["markdown"] and "score_languages" in result["markdown"]
    assert all(t["median_s"] > 0 for t in result["timings"])
    assert all(value > 0 for value in result["ratios"].values()), result["ratios"]
    for run in result["memory_bytes"].values():
        assert run["peak"] >= run["before_load"] > 50 * 2**20
    assert {("load/file_read", None), ("load/mapped_read", None), ("load/from_pretrained", None)} <= cases
    # The printed table is the one written to JSON, with one row per K and the load and memory lines.
    assert result["markdown"] in done.stdout
    assert result["markdown"].count("| predict_masks |") == 3
    assert "Peak memory" in result["markdown"] and "Load:" in result["markdown"]

    # A GPU run adds the same cases per dtype; this machine has none, so the table is checked with the
    # CPU timings relabelled (the formatting is what is under test here, not the numbers).
    timings = [Timing(**t) for t in result["timings"]]
    relabelled = [
        Timing(f"cuda_{dtype}/{t.case}", t.k, t.median_s)
        for dtype in ("float32", "float16", "bfloat16")
        for t in timings
        if t.case.startswith("predict_masks/")
    ]
    table, _ = report(QUICK, timings + relabelled, result["memory_bytes"], result["machine"], 0.01)
    assert sum(line.startswith(("| float32 |", "| float16 |", "| bfloat16 |")) for line in table.splitlines()) == 9


def test_quick_hub_load_benchmark_downloads_loads_and_measures(tmp_path):
    """benchmarks.hub_load in its tiny shape: through the loopback hub, then offline from the cache it left."""
    out = tmp_path / "hub_load.json"
    done = run_benchmark(["benchmarks.hub_load", "--quick", "--out", str(out)], timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    for run in ("download", "cached"):
        measured = result[run]
        assert measured["load_s"] > 0 and measured["parameters"] == result["parameters"]
        assert measured["peak_all_languages"] >= measured["peak_load"] >= measured["before_load"] > 50 * 2**20
        assert "models--facebook--xmod-base" in measured["folder"]
    assert result["markdown"] in done.stdout and "offline from the cache" in result["markdown"]


@pytest.mark.slow
def test_quick_workshop_gives_identical_answers_batched_and_one_at_a_time(tmp_path):
    """benchmarks.workshop in its tiny shape: two real servers (XMOD_BATCH off, then on), the same users, and
    every answer the same to 1e-5 in both."""
    out = tmp_path / "workshop.json"
    done = run_benchmark(["benchmarks.workshop", "--quick", "--out", str(out)], timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    scenario = result["scenario"]
    expected = scenario["users"] * scenario["requests_per_user"]
    assert [p["batch"] for p in result["phases"]] == ["off", "on"]
    assert all(p["requests"] == expected and p["failed"] == 0 for p in result["phases"])
    assert result["mismatches"] == []
    assert result["throughput_ratio"] > 0 and "**0**" in result["markdown"]


@pytest.mark.slow
def test_quick_workshop_on_the_engine_alone_measures_each_way_of_serving(tmp_path):
    """benchmarks.workshop --engine: the room's requests through the engine with no server, in each way of serving,
    with the arithmetic torch's FLOP counter saw and the floor it sets."""
    from benchmarks.workshop import ENGINE_MODES

    out = tmp_path / "engine.json"
    done = run_benchmark(["benchmarks.workshop", "--quick", "--engine", "--out", str(out)], timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    room = json.loads(out.read_text())
    assert [m["name"] for m in room["modes"]] == [name for name, *_ in ENGINE_MODES]
    assert all(m["requests"] == room["requests"] > 0 and m["cpu_ms_per_request"] > 0 for m in room["modes"])
    assert room["gflop_per_request"] > 0 and room["floor_ms_per_request"] > 0
    assert "Arithmetic floor" in room["markdown"]
    profile = room["profile"]  # every kind of product was seen, and the kinds' shares are parts of the products'
    assert all(kind["gflop_per_s"] > 0 for kind in profile["kinds"].values())
    assert sum(kind["share"] for kind in profile["kinds"].values()) == pytest.approx(profile["products_share"])
    assert 0 < profile["products_share"] <= 1


def test_workshop_answers_that_differ_are_found():
    """Guards the test above: the comparison does see another token, and a probability moved by 2e-5."""
    from benchmarks.workshop import differences

    def answer(token, probability):
        return {"masks": [{"predictions": {"en_XX": [{"token_id": token, "probability": probability}]}}]}

    same = {(0, 0): answer(5, 0.5)}
    assert differences(same, {(0, 0): answer(5, 0.500001)}) == []
    assert differences(same, {(0, 0): answer(6, 0.5)}) == ["(0, 0) en_XX"]
    assert differences(same, {(0, 0): answer(5, 0.50002)}) == ["(0, 0) en_XX"]
    assert differences(same, {}) == ["(0, 0): answered by one server only"]


@pytest.mark.slow
def test_quick_efficiency_and_int8_benchmarks_write_their_tables(tmp_path):
    for module, name in (("benchmarks.efficiency", "efficiency.json"), ("benchmarks.int8", "int8.json")):
        out = tmp_path / name
        done = run_benchmark([module, "--quick", "--repeats", "1", "--out", str(out)], timeout=400)
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(out.read_text())
        assert result["markdown"] in done.stdout
    efficiency = json.loads((tmp_path / "efficiency.json").read_text())
    assert [r["rows"] for r in efficiency["rows"]] == [1, 8, 32, 81]
    assert all(r["efficiency"] > 0 and abs(sum(r["shares"].values()) - 1) < 1e-6 for r in efficiency["rows"])
    shared = efficiency["workshop_pass"]  # a workshop's shared pass: 10 requests of 3-5 adapters, padded texts
    assert shared["requests"] == 10 and 30 <= shared["rows"] <= 50 and 1 < shared["languages"] <= shared["rows"]
    assert 0 < shared["padding_share"] < 0.5 and 0 < shared["adapter_share"] < 1 and shared["adapter_calls"] > 0
    assert shared["forward_s"] > 0 and shared["forward_one_language_s"] > 0
    int8 = json.loads((tmp_path / "int8.json").read_text())
    assert 0.9 < int8["agreement"] <= 1 and len(int8["fidelity"]) >= 12
