"""Rows per second of `xmod-explorer batch predict` with one process and with two, back to back in one run.

    python -m benchmarks.batch_bench            # the mini model, then a random model of xmod-base's shape
    python -m benchmarks.batch_bench --quick    # a tiny random model, seconds (the test suite runs this)

Each configuration is a real command: one process with 2 and with 1 torch threads, and two processes under
torchrun with 1 thread each (what torchrun sets by default, so that two processes do not oversubscribe two
cores). Throughput is the rows each process computed over the seconds it spent computing them (model loading
excluded), summed over the processes; the whole command's wall time is recorded beside it. The corpus is the
mini model's example sentences, one <mask> or more each, every row with its own language. The machine's load
(/proc/loadavg) is recorded before and after every configuration: on a shared machine it moves the numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench import FULL, QUICK, Shape, build_model  # noqa: E402
from xmod_explorer import machine  # noqa: E402

RANK_LINE = re.compile(
    r"rank (\d+) of (\d+): computed ([\d,]+) rows in [\d,]+ blocks in ([\d.]+) s \([\d,.]+ rows/s, ([\d.]+) s of CPU\)"
)
CONFIGURATIONS = [  # (name, processes, threads per process)
    ("1 process x 2 threads", 1, 2),
    ("1 process x 1 thread", 1, 1),
    ("2 processes x 1 thread", 2, 1),
]


def load() -> str:
    """The 1-, 5- and 15-minute load averages, as `uptime` shows them."""
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "unknown"


def write_corpus(path: Path, rows: int) -> list[str]:
    """rows of the mini model's example sentences, each with its own language; returns the languages used."""
    with open(ROOT / "assets" / "mini_examples.tsv", encoding="utf-8") as handle:
        examples = [(row["text"], row["languages"].split(",")[0]) for row in csv.DictReader(handle, delimiter="\t")]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "language"])
        writer.writerows(examples[n % len(examples)] for n in range(rows))
    return sorted({code for _, code in examples})


def run(
    model: str, corpus: Path, output: Path, processes: int, threads: int, languages: list[str], block_rows: int
) -> dict:
    arguments = ["batch", "predict", "--input", str(corpus), "--output", str(output), "--model", model]
    arguments += ["--threads", str(threads), "--load-languages", ",".join(languages), "--no-progress", "--overwrite"]
    arguments += ["--block-rows", str(block_rows)]
    if processes == 1:
        command = [sys.executable, "-m", "xmod_explorer", *arguments]
    else:
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
        command = [*torchrun, "-m", "xmod_explorer", *arguments]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    before = load()
    start = time.perf_counter()
    done = subprocess.run(command, env=environment, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed:\n{done.stderr[-4000:]}")
    ranks = [
        {"rank": int(r), "rows": int(rows.replace(",", "")), "seconds": float(s), "cpu_seconds": float(c)}
        for r, _, rows, s, c in RANK_LINE.findall(done.stderr)
    ]
    if len(ranks) != processes or not all(rank["rows"] for rank in ranks):
        raise RuntimeError(f"expected {processes} ranks that all computed rows, got {ranks}:\n{done.stderr[-4000:]}")
    return {
        "processes": processes,
        "threads_per_process": threads,
        "ranks": ranks,
        "rows_per_s": sum(r["rows"] / r["seconds"] for r in ranks if r["seconds"] > 0),
        # Cores this command got while computing (CPU seconds over wall seconds, summed over its processes), and
        # rows per CPU second: what the machine's other load cannot change much.
        "cores_used": sum(r["cpu_seconds"] / r["seconds"] for r in ranks if r["seconds"] > 0),
        "rows_per_cpu_s": sum(r["rows"] for r in ranks) / max(1e-9, sum(r["cpu_seconds"] for r in ranks)),
        "wall_s": wall,
        "load_before": before,
        "load_after": load(),
    }


def measure(name: str, model: str, rows: int, folder: Path) -> dict:
    corpus = folder / f"{name}.csv"
    languages = write_corpus(corpus, rows)
    results = []
    for label, processes, threads in CONFIGURATIONS:
        output = folder / f"{name}-{processes}x{threads}.csv"
        # Eight blocks: enough for two processes to share the work evenly, the same blocks in every configuration.
        result = run(model, corpus, output, processes, threads, languages, max(1, rows // 8))
        result["configuration"] = label
        results.append(result)
        print(f"{name}: {label}: {result['rows_per_s']:.1f} rows/s (wall {result['wall_s']:.1f} s)", file=sys.stderr)

    def output(processes: int, threads: int) -> bytes:
        return (folder / f"{name}-{processes}x{threads}.csv").read_bytes()

    return {
        "model": name,
        "rows": rows,
        # Byte for byte: two processes against one at the same threads per process. Another thread count may
        # change the last bits of a float (the order of a matrix product's sums), so that is recorded apart.
        "two_processes_same_as_one": output(2, 1) == output(1, 1),
        "same_with_2_threads_as_with_1": output(1, 2) == output(1, 1),
        "runs": results,
    }


def table(measurements: list[dict]) -> str:
    lines = [
        "| model | rows | configuration | rows/s | cores used | rows per CPU s | wall (s) | load before -> after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for measured in measurements:
        for run_ in measured["runs"]:
            lines.append(
                f"| {measured['model']} | {measured['rows']:,} | {run_['configuration']} | {run_['rows_per_s']:.1f} | "
                f"{run_['cores_used']:.2f} | {run_['rows_per_cpu_s']:.1f} | {run_['wall_s']:.1f} | "
                f"{run_['load_before']} -> {run_['load_after']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny random model and a small corpus")
    parser.add_argument("--mini-rows", type=int, default=2000)
    parser.add_argument("--base-rows", type=int, default=240)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "batch.json")
    args = parser.parse_args(argv)
    measurements = []
    with tempfile.TemporaryDirectory(prefix="xmod-batch-bench-") as temporary:
        folder = Path(temporary)
        if args.quick:
            shapes: list[tuple[str, Shape | None, int]] = [("quick", QUICK, 60)]
        else:
            shapes = [("xmod-mini", None, args.mini_rows), ("xmod-base shape", FULL, args.base_rows)]
        for name, shape, rows in shapes:
            model = "mini"
            if shape is not None:
                model = str(build_model(shape, folder / shape.name)[0])
            measurements.append(measure(name, model, rows, folder))
    result = {
        "machine": machine.describe(),
        "torch": torch.__version__,
        "measurements": measurements,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(table(measurements))
    return 0


if __name__ == "__main__":
    sys.exit(main())
