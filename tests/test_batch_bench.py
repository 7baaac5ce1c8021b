"""The batch benchmark runs end to end (in its --quick shape), so that it cannot rot between measurements."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_batch_benchmark_measures_one_and_two_processes(tmp_path):
    out = tmp_path / "batch.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.batch_bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (measured,) = json.loads(out.read_text())["measurements"]
    assert measured["two_processes_same_as_one"]
    runs = {(run["processes"], run["threads_per_process"]): run for run in measured["runs"]}
    assert set(runs) == {(1, 2), (1, 1), (2, 1)}
    assert [rank["rank"] for rank in runs[(2, 1)]["ranks"]] in ([0, 1], [1, 0])
    assert all(rank["rows"] > 0 for rank in runs[(2, 1)]["ranks"]) and all(r["rows_per_s"] > 0 for r in runs.values())
    assert "| 2 processes x 1 thread |" in done.stdout
