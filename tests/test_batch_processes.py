"""Batch mode as real processes: killed with SIGKILL and restarted, run by two processes under torchrun and
accelerate launch, over 10,000 rows of the mini model, and from the command line.

Each process prints "rank R of N: computed ..." to stderr; the tests read those lines to see that every rank
did work, and the output's metadata ("runs") to see which attempt and rank computed how many rows.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from helpers import ROOT, assert_same_predictions

from xmod_explorer import Explorer
from xmod_explorer.batch import BatchSettings, run_batch
from xmod_explorer.tiny import SAMPLE_SENTENCES

pytestmark = pytest.mark.slow  # separate processes, each loading torch and a model

BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
RANK_LINE = re.compile(r"rank (\d+) of (\d+): computed ([\d,]+) rows")
LANGUAGE_CHOICES = ["en_XX,de_DE", "ja_XX", "fr_XX,ru_RU", "de_DE"]


def write_corpus(path: Path, count: int) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "languages"])
        for n in range(count):
            words = SAMPLE_SENTENCES[n % len(SAMPLE_SENTENCES)].split()
            words[n % len(words)] = "<mask>"
            text = " ".join(words) if n % 97 else "A bad row without a mask."
            writer.writerow([text, LANGUAGE_CHOICES[n % len(LANGUAGE_CHOICES)]])
    return path


def batch_args(corpus: Path, output: Path, model: Path | str, *extra: str) -> list[str]:
    return [
        "batch",
        "predict",
        "--input",
        str(corpus),
        "--output",
        str(output),
        "--model",
        str(model),
        "--top-k",
        "2",
        "--threads",
        "1",
        *extra,
    ]


def python_module(*args: str) -> list[str]:
    return [sys.executable, "-m", "xmod_explorer", *args]


def torchrun(*args: str) -> list[str]:
    return [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "xmod_explorer", *args]


def finish(command: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def ranks(stderr: str) -> dict[tuple[int, int], int]:
    """(rank, processes) -> rows it computed, from each process's closing line."""
    return {(int(r), int(n)): int(rows.replace(",", "")) for r, n, rows in RANK_LINE.findall(stderr)}


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL a process and all its descendants at once, as a crash would: torchrun starts each worker in a
    session of its own, so killing torchrun's process group alone would leave the workers running."""
    try:
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for member in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signal.SIGKILL)
    psutil.wait_procs(tree, timeout=30)
    process.wait(timeout=30)


def kill_after_blocks(command: list[str], parts: Path, blocks: int) -> int:
    """Start command and SIGKILL it with all its processes once `blocks` block files exist; returns how many
    block files there were after the kill."""
    process = subprocess.Popen(command, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            found = list(parts.glob("block-*.parquet")) if parts.is_dir() else []
            if len(found) >= blocks:
                kill_tree(process)
                return len(list(parts.glob("block-*.parquet")))
            if process.poll() is not None:
                raise AssertionError("the run ended before it could be killed; give it more rows")
            time.sleep(0.02)
        raise AssertionError("no blocks appeared within 300 s")
    finally:
        kill_tree(process)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.csv", 4000)


@pytest.fixture(scope="module")
def uninterrupted(base_dir, corpus, tmp_path_factory) -> Path:
    """The same run in one go, in this process: what every other way of running must reproduce byte for byte."""
    output = tmp_path_factory.mktemp("whole") / "out.csv"
    run_batch(
        BatchSettings("predict", corpus, output, model=str(base_dir), top_k=2, block_rows=40, threads=1, progress=False)
    )
    return output


def test_a_killed_run_resumes_without_redoing_or_losing_a_row(base_dir, corpus, uninterrupted, tmp_path):
    output = tmp_path / "out.csv"
    command = python_module(*batch_args(corpus, output, base_dir, "--block-rows", "40"))
    killed_with = kill_after_blocks(command, tmp_path / "out.csv.parts", 5)
    assert not output.exists()
    done = finish(command)
    assert ranks(done.stderr)[(0, 1)] == 4000 - 40 * killed_with
    assert output.read_bytes() == uninterrupted.read_bytes()  # none lost, none twice, same numbers
    metadata = json.loads((tmp_path / "out.csv.meta.json").read_text())
    first, second = metadata["runs"]
    # Each block is counted under the attempt that wrote it: a block redone would move to attempt 2.
    assert first["attempt"] == 1 and first["rows_by_rank"]["0"] == 40 * killed_with
    assert second["attempt"] == 2 and second["rows_by_rank"]["0"] == 4000 - 40 * killed_with
    assert not (tmp_path / "out.csv.parts").exists()


def test_two_processes_under_torchrun_write_the_same_file_as_one(base_dir, corpus, uninterrupted, tmp_path):
    output = tmp_path / "out.csv"
    done = finish(torchrun(*batch_args(corpus, output, base_dir, "--block-rows", "40")))
    seen = ranks(done.stderr)
    assert set(seen) == {(0, 2), (1, 2)}, done.stderr[-3000:]
    assert seen[(0, 2)] == 2000 and seen[(1, 2)] == 2000  # blocks alternate between the ranks
    assert output.read_bytes() == uninterrupted.read_bytes()
    assert (tmp_path / "out.errors.csv").read_bytes() == uninterrupted.with_name("out.errors.csv").read_bytes()
    run = json.loads((tmp_path / "out.csv.meta.json").read_text())["runs"]
    assert [(r["processes"], r["rows_by_rank"]) for r in run] == [(2, {"0": 2000, "1": 2000})]


def test_a_killed_two_process_run_resumes_with_one(base_dir, corpus, uninterrupted, tmp_path):
    output = tmp_path / "out.csv"
    args = batch_args(corpus, output, base_dir, "--block-rows", "40")
    killed_with = kill_after_blocks(torchrun(*args), tmp_path / "out.csv.parts", 6)
    finish(python_module(*args))
    assert output.read_bytes() == uninterrupted.read_bytes()
    first, second = json.loads((tmp_path / "out.csv.meta.json").read_text())["runs"]
    assert first["processes"] == 2 and sum(first["rows_by_rank"].values()) == 40 * killed_with
    assert second["processes"] == 1 and second["rows_by_rank"] == {"0": 4000 - 40 * killed_with}


def test_accelerate_launch_needs_the_torchrun_launcher_on_a_cpu(base_dir, corpus, uninterrupted, tmp_path):
    """`accelerate launch --multi_gpu` is accelerate's torchrun path, and on a CPU-only machine it starts two gloo
    processes; `--cpu --num_processes 2` starts one process (accelerate wants mpirun for more on the CPU)."""
    if not (BIN / "accelerate").exists():
        pytest.skip("accelerate's command is not installed")
    output = tmp_path / "out.csv"
    launch = [str(BIN / "accelerate"), "launch", "--num_machines", "1", "--mixed_precision", "no"]
    launch += ["--dynamo_backend", "no"]
    two = ["--multi_gpu", "--num_processes", "2", "--main_process_port", "0", "-m", "xmod_explorer"]
    done = finish([*launch, *two, *batch_args(corpus, output, base_dir, "--block-rows", "40")])
    assert set(ranks(done.stderr)) == {(0, 2), (1, 2)}, done.stderr[-3000:]
    assert output.read_bytes() == uninterrupted.read_bytes()
    single = tmp_path / "single.csv"
    cpu = ["--cpu", "--num_processes", "2", "-m", "xmod_explorer"]
    done = finish([*launch, *cpu, *batch_args(corpus, single, base_dir, "--block-rows", "40")])
    assert set(ranks(done.stderr)) == {(0, 1)}
    assert single.read_bytes() == uninterrupted.read_bytes()


def test_the_command_line_shows_progress_and_refuses_a_bad_schema(base_dir, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.csv", 30)
    output = tmp_path / "out.parquet"
    done = finish(python_module(*batch_args(corpus, output, base_dir, "--block-rows", "8")))
    assert "rows/s" in done.stderr and "30/30" in done.stderr  # the bar: rows done of all, rows per second
    written = len(pd.read_parquet(output))
    assert f"wrote {written} result rows for 30 input rows (1 bad rows: out.errors.csv) to {output}" in done.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence\nThe <mask>.\n", encoding="utf-8")
    refused = subprocess.run(
        python_module(*batch_args(bad, tmp_path / "x.csv", base_dir)), env=ENV, capture_output=True, text=True
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "error: " in refused.stderr and "has no column 'text' (columns found: 'sentence')" in refused.stderr
    helped = subprocess.run(python_module("batch", "--help"), env=ENV, capture_output=True, text=True)
    assert helped.returncode == 0 and all(name in helped.stdout for name in ("predict", "compare", "score", "project"))


# ----- 10,000 rows of the mini model ------------------------------------------------------------------------


PEAK = (
    "import resource, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "done = subprocess.run(sys.argv[1:])\n"
    "print(done.returncode, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def measured(command: list[str]) -> tuple[float, int]:
    """(seconds, peak resident KiB) of command, run as the only child of a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK, *command], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=1800
    )
    code, seconds, peak = done.stdout.split()[-3:]
    assert code == "0", done.stderr[-4000:]
    return float(seconds), int(peak)


def test_ten_thousand_rows_of_the_mini_model_in_constant_memory(tmp_path):
    examples = pd.read_csv(ROOT / "assets" / "mini_examples.tsv", sep="\t", keep_default_na=False)
    rows = [(text, codes.split(",")[0]) for text, codes in zip(examples.text, examples.languages)]
    for count in (1000, 10_000):
        with open(tmp_path / f"corpus{count}.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "language"])
            writer.writerows(rows[n % len(rows)] for n in range(count))
    timings = {}
    for count in (1000, 10_000):
        command = python_module(
            "batch", "predict", "--input", str(tmp_path / f"corpus{count}.csv"), "--output",
            str(tmp_path / f"out{count}.parquet"), "--model", "mini", "--threads", "1", "--no-progress",
        )  # fmt: skip
        timings[count] = measured(command)
    (seconds, peak), (_, small_peak) = timings[10_000], timings[1000]
    print(f"10,000 rows: {seconds:.1f} s, peak {peak / 1024:.0f} MiB; 1,000 rows: peak {small_peak / 1024:.0f} MiB")
    assert peak < small_peak * 1.15  # streamed: ten times the rows, about the same memory
    results = pd.read_parquet(tmp_path / "out10000.parquet")
    assert sorted(set(results.row)) == list(range(10_000))
    explorer = Explorer.from_pretrained("mini")
    for n in range(0, 10_000, 409):  # a sample, against the engine the app calls
        text, code = rows[n % len(rows)]
        expected = explorer.predict_masks(text, [code], 5).to_dict()
        got = results[results.row == n]
        assert list(got.language.unique()) == [code]
        predictions = [
            {"position": int(p), "predictions": {code: chosen.to_dict("records")}}
            for p, chosen in got.groupby("position", sort=False)
        ]
        assert_same_predictions({"languages": [code], "masks": predictions}, expected, atol=1e-5)
