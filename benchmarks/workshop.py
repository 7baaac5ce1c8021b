"""A room of users on one server: fill-mask requests batched across users against one at a time, in one run.

    python -m benchmarks.workshop            # xmod-base's shape (random weights), 30 users
    python -m benchmarks.workshop --quick    # a tiny model, 6 users (the test suite runs this)

Thirty simulated users (one gradio_client each, talking to a real `python app.py` on a real port) each
send fill-mask requests with 3 to 5 adapters on 10-to-20-token sentences, and think for a while between
requests. The same users, with the same sentences, adapters and think times (seeded), meet two servers
in turn: one serving requests one at a time as before (XMOD_BATCH=off), one gathering concurrent
requests into shared forward passes (XMOD_BATCH=on); each server is started fresh and the phases
alternate. Reported per server: requests per second (answered requests over the phase's wall time),
p50 and p95 latency, and whether every answer equals the other server's for the same request.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xmod_explorer import machine  # noqa: E402
from xmod_explorer.defaults import ASSETS  # noqa: E402


@dataclass
class Scenario:
    users: int = 30
    requests_per_user: int = 4
    think_seconds: tuple[float, float] = (0.5, 2.0)
    adapters: tuple[int, int] = (3, 5)
    tokens: tuple[int, int] = (10, 20)
    seed: int = 0


QUICK = Scenario(users=6, requests_per_user=3, think_seconds=(0.05, 0.2))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server(folder: Path, batch: str, log: Path, limit: float = 600):
    """`python app.py --model folder` with XMOD_BATCH=batch on a free port; yields (URL, process) once it answers."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "XMOD_BATCH": batch, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "app.py", "--model", str(folder), "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        start = time.monotonic()
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the app exited ({process.returncode}); see {log}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/gradio_api/info", timeout=5):
                    break
            except OSError:
                if time.monotonic() - start > limit:
                    raise RuntimeError(f"the app did not answer within {limit:.0f} s; see {log}") from None
                time.sleep(0.5)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def sentences(tokenizer, low: int, high: int) -> list[str]:
    """The shipped example sentences (one <mask> each) that are low to high tokens long for this tokenizer."""
    import csv

    chosen = []
    for name in ("mini_heldout.tsv", "mini_examples.tsv"):
        with open(ASSETS / name, encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
                text = row["text"]
                if text.count("<mask>") == 1 and low <= len(tokenizer(text)["input_ids"]) <= high:
                    chosen.append(text)
    if len(chosen) < 10:
        raise RuntimeError(f"only {len(chosen)} example sentences are {low}-{high} tokens long")
    return sorted(set(chosen))


def plan(scenario: Scenario, texts: list[str], languages: list[str]) -> list[list[tuple[str, list[str], float]]]:
    """Per user: (sentence, adapters, think time after it) for each request, the same for every server."""
    rng = random.Random(scenario.seed)
    users = []
    for _ in range(scenario.users):
        steps = []
        for _ in range(scenario.requests_per_user):
            count = rng.randint(*scenario.adapters)
            steps.append((rng.choice(texts), rng.sample(languages, count), rng.uniform(*scenario.think_seconds)))
        users.append(steps)
    return users


@dataclass
class Phase:
    batch: str
    requests: int
    failed: int
    wall_s: float
    requests_per_s: float
    p50_s: float
    p95_s: float
    load_average: float
    server_cpu_s: float  # CPU seconds the server used in the phase: robust to other programs on the machine
    requests_per_cpu_s: float
    clients_cpu_s: float = float("nan")  # CPU seconds the 30 simulated clients (this process) used meanwhile
    machine_cpu_s: float = float("nan")  # the cores' seconds in the phase (wall x cores): what all of it shared


def cpu_seconds(pid: int) -> float:
    """CPU seconds a process has used so far (user + system, all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_phase(url: str, users: list, batch: str, pid: int) -> tuple[Phase, dict]:
    """Every user in its own thread with its own client; returns the phase's figures and each answer."""
    from gradio_client import Client

    clients = [Client(url, verbose=False) for _ in users]
    answers: dict = {}
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(len(users) + 1)

    def user(number: int) -> None:
        rng = random.Random(number)
        start_gate.wait()
        time.sleep(rng.uniform(0, 1.0))  # people do not press the button in the same millisecond
        for step, (text, codes, think) in enumerate(users[number]):
            began = time.perf_counter()
            try:
                result = clients[number].predict(text, codes, 5, api_name="/predict_masks")
            except Exception as exc:
                with lock:
                    failures.append(f"user {number} request {step}: {exc}")
            else:
                with lock:
                    latencies.append(time.perf_counter() - began)
                    answers[(number, step)] = result
            time.sleep(think)

    threads = [threading.Thread(target=user, args=(n,)) for n in range(len(users))]
    for thread in threads:
        thread.start()
    start_gate.wait()
    began, cpu_before, clients_before = time.perf_counter(), cpu_seconds(pid), cpu_seconds(os.getpid())
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    server_cpu = cpu_seconds(pid) - cpu_before
    clients_cpu = cpu_seconds(os.getpid()) - clients_before
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))] if latencies else float("nan")
    phase = Phase(
        batch=batch,
        requests=len(latencies),
        failed=len(failures),
        wall_s=wall,
        requests_per_s=len(latencies) / wall,
        p50_s=statistics.median(latencies) if latencies else float("nan"),
        p95_s=p95,
        load_average=os.getloadavg()[0],
        server_cpu_s=server_cpu,
        requests_per_cpu_s=len(latencies) / server_cpu if server_cpu > 0 else float("nan"),
        clients_cpu_s=clients_cpu,
        machine_cpu_s=wall * (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
    )
    if failures:
        print("\n".join(failures[:5]), file=sys.stderr)
    return phase, answers


def differences(a: dict, b: dict, tolerance: float = 1e-5) -> list[str]:
    """Requests whose answers differ: another token at any rank, or a probability off by more than tolerance."""
    out = []
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            out.append(f"{key}: answered by one server only")
            continue
        for slot_a, slot_b in zip(a[key]["masks"], b[key]["masks"], strict=True):
            for code, guesses in slot_a["predictions"].items():
                other = slot_b["predictions"][code]
                if [g["token_id"] for g in guesses] != [g["token_id"] for g in other] or any(
                    abs(x["probability"] - y["probability"]) > tolerance for x, y in zip(guesses, other)
                ):
                    out.append(f"{key} {code}")
    return out


def report(scenario: Scenario, shape: str, phases: list[Phase], mismatches: list[str], host: dict) -> str:
    def mean(batch: str, field: str) -> float:
        return statistics.mean(getattr(p, field) for p in phases if p.batch == batch)

    lines = [
        f"Workshop: {scenario.users} users x {scenario.requests_per_user} fill-mask requests ({scenario.adapters[0]}-"
        f"{scenario.adapters[1]} adapters, {scenario.tokens[0]}-{scenario.tokens[1]}-token sentences, think time "
        f"{scenario.think_seconds[0]}-{scenario.think_seconds[1]} s) on a {shape} model; {host['threads']} torch "
        f"threads on {host['cpu']}; servers started fresh, phases alternating.",
        "",
        "| serving | phase | requests | failed | wall (s) | requests/s | p50 (s) | p95 (s) | server CPU (s) | "
        "requests per CPU second | clients' CPU (s) | cores' seconds | load average |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for number, p in enumerate(phases, start=1):
        name = "batched across users" if p.batch == "on" else "one at a time"
        lines.append(
            f"| {name} | {number} | {p.requests} | {p.failed} | {p.wall_s:.1f} | {p.requests_per_s:.2f} | "
            f"{p.p50_s:.3f} | {p.p95_s:.3f} | {p.server_cpu_s:.1f} | {p.requests_per_cpu_s:.2f} | "
            f"{p.clients_cpu_s:.1f} | {p.machine_cpu_s:.1f} | {p.load_average:.2f} |"
        )
    throughput = mean("on", "requests_per_s") / mean("off", "requests_per_s")
    lines += [
        "",
        f"Batched over one at a time: **{throughput:.2f}x** the requests per second, "
        f"**{mean('on', 'requests_per_cpu_s') / mean('off', 'requests_per_cpu_s'):.2f}x** the requests per CPU "
        "second of the server; p95 "
        f"{mean('on', 'p95_s'):.3f} s against {mean('off', 'p95_s'):.3f} s; p50 {mean('on', 'p50_s'):.3f} s against "
        f"{mean('off', 'p50_s'):.3f} s. Answers that differ between the two (another token, or a probability off by "
        f"more than 1e-5): **{len(mismatches)}**.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model and 6 users: checks it runs")
    parser.add_argument("--rounds", type=int, default=1, help="phases per serving mode, alternating (default 1)")
    parser.add_argument("--folder", default=None, help="use this model folder instead of building one")
    parser.add_argument("--out", default=None, help="JSON file (default benchmarks/results/workshop-<shape>.json)")
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    from benchmarks.bench import FULL, build_model
    from benchmarks.bench import QUICK as QUICK_SHAPE

    scenario = QUICK if args.quick else Scenario()
    shape = QUICK_SHAPE if args.quick else FULL
    host = machine.describe()
    with tempfile.TemporaryDirectory(prefix="xmod-workshop-") as tmp:
        folder = Path(args.folder) if args.folder else build_model(shape, Path(tmp) / "model")[0]
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        texts = sentences(tokenizer, *scenario.tokens)
        users = plan(scenario, texts, shape.languages)
        phases, answers = [], {}
        for _ in range(args.rounds):
            for batch in ("off", "on"):
                with server(folder, batch, Path(tmp) / f"app-{batch}.log") as (url, process):
                    phase, got = run_phase(url, users, batch, process.pid)
                print(f"{batch}: {phase}", file=sys.stderr, flush=True)
                phases.append(phase)
                answers.setdefault(batch, []).append(got)
    reference = answers["off"][0]
    mismatches = [m for got in answers["on"] + answers["off"][1:] for m in differences(reference, got)]
    table = report(scenario, shape.name, phases, mismatches, host)
    print(table)
    summary = {
        "scenario": asdict(scenario),
        "shape": shape.name,
        "machine": host,
        "phases": [asdict(p) for p in phases],
        "mismatches": mismatches,
        "throughput_ratio": statistics.mean(p.requests_per_s for p in phases if p.batch == "on")
        / statistics.mean(p.requests_per_s for p in phases if p.batch == "off"),
        "cpu_throughput_ratio": statistics.mean(p.requests_per_cpu_s for p in phases if p.batch == "on")
        / statistics.mean(p.requests_per_cpu_s for p in phases if p.batch == "off"),
        "markdown": table,
    }
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"workshop-{shape.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"\nwrote {out}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
