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

    python -m benchmarks.workshop --baseline-root ../old-checkout   # before and after a change, in one run

adds the same two servers from another checkout of the project to each round (the before), phases interleaved.
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
def server(folder: Path, batch: str, log: Path, limit: float = 600, root: Path = ROOT):
    """`python app.py --model folder` (root's app.py) with XMOD_BATCH=batch on a free port; yields (URL, process)
    once it answers."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "XMOD_BATCH": batch, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "app.py", "--model", str(folder), "--port", str(port)],
            cwd=root,
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
    code: str = "this tree"  # which checkout served it: this one, or --baseline-root's
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


# ----- the room on the engine alone: how far from the arithmetic each way of serving is ----------------------------

ENGINE_MODES = (
    # (name, passes at once, threads per pass, requests per pass, shared passes packed (no padding))
    ("one at a time, 2 passes at once, all threads each (before)", 2, None, 1, True),
    ("one at a time, 2 passes at once, 1 thread each", 2, 1, 1, True),
    ("shared passes of 10, 1 at a time, all threads, padded rows (before)", 1, None, 10, False),
    ("shared passes of 5, 2 at once, 1 thread each, padded rows", 2, 1, 5, False),
    ("shared passes of 5, 2 at once, 1 thread each, packed rows", 2, 1, 5, True),
    ("shared passes of 10, 2 at once, 1 thread each, packed rows", 2, 1, 10, True),
)


@dataclass
class EngineMode:
    name: str
    requests: int
    wall_ms_per_request: float
    cpu_ms_per_request: float
    gflop_per_cpu_second: float
    load_average: float


def model_dims(explorer):
    """The loaded model's encoder shape, as benchmarks.efficiency counts it."""
    from benchmarks.efficiency import Dims

    config = explorer.backend.model.config
    adapter = config.hidden_size // config.adapter_reduction_factor
    return Dims(
        config.hidden_size,
        config.num_hidden_layers,
        config.num_attention_heads,
        config.intermediate_size,
        adapter,
        "model",
    )


def request_gflop(explorer, request) -> float:
    """The arithmetic one fill-mask request does alone (the engine's own path: layer 0's shared part once, the last
    layer and the LM head at the masks only), as torch's FLOP counter counts its matrix products."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        explorer.run_mask_request(request)
    return counter.get_total_flops() / 1e9


def product_profile(explorer, requests: list, per_pass: int = 5) -> dict:
    """Where one thread's time goes in the requests' packed shared passes of per_pass: torch's profiler, the matrix
    products grouped by what they compute (the encoder's own layers, the language adapters, the output layer over
    the vocabulary), each group's share of the operator time and its GFLOP/s."""
    from torch.profiler import ProfilerActivity, profile

    config = explorer.backend.model.config
    adapter = config.hidden_size // config.adapter_reduction_factor
    groups = [requests[n : n + per_pass] for n in range(0, len(requests), per_pass)]
    explorer.backend.pack_rows = True
    with machine.pass_threads(1):
        explorer.predict_masks_together(groups[0])  # warm-up
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiled:
            for group in groups:
                explorer.predict_masks_together(group)
    events = profiled.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events)
    kinds = {name: [0.0, 0.0] for name in ("encoder layers", "language adapters", "output layer")}
    for event in events:
        if event.key not in ("aten::addmm", "aten::mm"):
            continue
        shapes = event.input_shapes[1:3] if event.key == "aten::addmm" else event.input_shapes[:2]
        left, right = shapes  # (rows, in) x (in, out); addmm's first input is the bias
        if right[1] == config.vocab_size:
            kind = "output layer"
        elif adapter in (right[0], right[1]):
            kind = "language adapters"
        else:
            kind = "encoder layers"
        kinds[kind][0] += event.self_cpu_time_total
        kinds[kind][1] += 2 * left[0] * left[1] * right[1] * event.count
    return {
        "passes": len(groups),
        "requests_per_pass": per_pass,
        "products_share": sum(t for t, _ in kinds.values()) / total,
        "kinds": {
            name: {"share": t / total, "gflop_per_s": flop / (t / 1e6) / 1e9 if t else 0.0}
            for name, (t, flop) in kinds.items()
        },
    }


def engine_room(folder: Path, scenario: Scenario, count: int = 60) -> dict:
    """The workshop's first `count` requests through the engine with no server, in each of ENGINE_MODES (the
    modes taken in turn, twice), against plain products of the encoder's shapes on one and on all threads."""
    import resource

    import torch
    from transformers import AutoTokenizer

    from benchmarks.bench import FULL
    from benchmarks.efficiency import encoder_flops, interleaved, matmul_case
    from xmod_explorer.engine import Explorer

    explorer = Explorer.from_pretrained(str(folder))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    users = plan(scenario, sentences(tokenizer, *scenario.tokens), FULL.languages)
    requests = [explorer.check_mask_request(text, codes, 5) for steps in users for text, codes, _ in steps][:count]
    gflop = sum(request_gflop(explorer, r) for r in requests)

    def padding(per_pass: int) -> float:
        """The share of a shared pass's row tokens that are padding, over the requests in passes of per_pass."""
        groups = [requests[n : n + per_pass] for n in range(0, len(requests), per_pass)]
        real = sum(len(r.languages) * len(r.ids) for group in groups for r in group)
        padded = sum(sum(len(r.languages) for r in group) * max(len(r.ids) for r in group) for group in groups)
        return 1 - real / padded

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def serve(workers: int, threads: int | None, per_pass: int, packed: bool = True) -> None:
        explorer.backend.pack_rows = packed

        def worker(part: list) -> None:
            with machine.pass_threads(threads or machine.torch_threads()):
                for start in range(0, len(part), per_pass):
                    group = part[start : start + per_pass]
                    if per_pass == 1:
                        explorer.run_mask_request(group[0])
                    else:
                        explorer.predict_masks_together(group)

        threads_ = [threading.Thread(target=worker, args=(requests[n::workers],)) for n in range(workers)]
        for thread in threads_:
            thread.start()
        for thread in threads_:
            thread.join()

    serve(1, None, 1)  # warm-up
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name, *_ in ENGINE_MODES}
    for _ in range(2):
        for name, workers, threads, per_pass, packed in ENGINE_MODES:
            wall, used = time.perf_counter(), cpu()
            serve(workers, threads, per_pass, packed)
            figures[name].append((time.perf_counter() - wall, cpu() - used, os.getloadavg()[0]))
    modes = []
    for name, *_ in ENGINE_MODES:
        wall, used, load = min(figures[name])  # the quieter of the two runs
        modes.append(
            EngineMode(
                name,
                len(requests),
                1000 * wall / len(requests),
                1000 * used / len(requests),
                gflop / used,
                load,
            )
        )
    dims = model_dims(explorer)
    products = {}
    for threads in sorted({1, machine.torch_threads()}):
        with machine.pass_threads(threads):
            case = matmul_case(dims, 600)  # 10 requests' worth of rows
            _, linear = encoder_flops(dims, 600, 1)
            best = min(interleaved({"products": case}, 5)["products"])
            products[threads] = linear / best / 1e9
    cores = machine.torch_threads()
    floor_ms = 1000 * gflop / len(requests) / (products[1] * cores)  # every core running one-thread products
    return {
        "requests": len(requests),
        "gflop_per_request": gflop / len(requests),
        "products_gflop_per_s": {str(k): v for k, v in products.items()},
        "floor_ms_per_request": floor_ms,
        "padding_share": {str(n): padding(n) for n in sorted({per_pass for *_, per_pass, _ in ENGINE_MODES} - {1})},
        "modes": [asdict(m) for m in modes],
        "profile": product_profile(explorer, requests),
        "torch": torch.__version__,
    }


def engine_report(room: dict) -> str:
    before = room["modes"][0]["wall_ms_per_request"]
    lines = [
        f"The room on the engine alone ({room['requests']} of the workshop's requests, about "
        f"{room['gflop_per_request']:.1f} GFLOP each; plain products of the encoder's shapes: "
        + ", ".join(f"{v:.0f} GFLOP/s on {k} thread{'s' * (k != '1')}" for k, v in room["products_gflop_per_s"].items())
        + ").",
        "",
        "| serving | wall per request (ms) | CPU per request (ms) | GFLOP per CPU second | requests/s over the first "
        "row's | load average |",
        "|---|---|---|---|---|---|",
    ]
    for m in room["modes"]:
        lines.append(
            f"| {m['name']} | {m['wall_ms_per_request']:.1f} | {m['cpu_ms_per_request']:.1f} | "
            f"{m['gflop_per_cpu_second']:.1f} | {before / m['wall_ms_per_request']:.2f}x | {m['load_average']:.2f} |"
        )
    lines += [
        "",
        f"Arithmetic floor: {room['floor_ms_per_request']:.1f} ms a request with every core running one-thread "
        f"products at full speed, {before / room['floor_ms_per_request']:.2f}x the first row's throughput: the most "
        "any batching could give on this machine without doing less arithmetic. Padding, of a shared pass's row "
        "tokens, in passes of "
        + ", ".join(f"{k}: {100 * v:.0f} %" for k, v in room["padding_share"].items())
        + " (packed rows skip it).",
    ]
    profile = room["profile"]
    lines += [
        "",
        f"Profile of {profile['passes']} packed shared passes of {profile['requests_per_pass']} on one thread: "
        f"matrix products {100 * profile['products_share']:.0f} % of the operator time; "
        + "; ".join(
            f"{name} {100 * kind['share']:.0f} % at {kind['gflop_per_s']:.0f} GFLOP/s"
            for name, kind in profile["kinds"].items()
        )
        + ".",
    ]
    return "\n".join(lines)


def ratios(phases: list[Phase], code: str = "this tree") -> dict:
    """Batched over one at a time for one checkout's phases: throughput, per server CPU second, p50 and p95."""

    def mean(batch: str, field: str) -> float:
        return statistics.mean(getattr(p, field) for p in phases if p.batch == batch and p.code == code)

    return {
        "throughput": mean("on", "requests_per_s") / mean("off", "requests_per_s"),
        "per_cpu_second": mean("on", "requests_per_cpu_s") / mean("off", "requests_per_cpu_s"),
        **{f"{field}_{batch}": mean(batch, f"{field}_s") for field in ("p50", "p95") for batch in ("on", "off")},
        **{f"requests_per_s_{batch}": mean(batch, "requests_per_s") for batch in ("on", "off")},
    }


def report(scenario: Scenario, shape: str, phases: list[Phase], mismatches: list[str], host: dict) -> str:
    lines = [
        f"Workshop: {scenario.users} users x {scenario.requests_per_user} fill-mask requests ({scenario.adapters[0]}-"
        f"{scenario.adapters[1]} adapters, {scenario.tokens[0]}-{scenario.tokens[1]}-token sentences, think time "
        f"{scenario.think_seconds[0]}-{scenario.think_seconds[1]} s) on a {shape} model; {host['threads']} torch "
        f"threads on {host['cpu']}; servers started fresh, phases alternating.",
        "",
        "| code | serving | phase | requests | failed | wall (s) | requests/s | p50 (s) | p95 (s) | server CPU (s) | "
        "requests per CPU second | clients' CPU (s) | cores' seconds | load average |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for number, p in enumerate(phases, start=1):
        name = "batched across users" if p.batch == "on" else "one at a time"
        lines.append(
            f"| {p.code} | {name} | {number} | {p.requests} | {p.failed} | {p.wall_s:.1f} | {p.requests_per_s:.2f} | "
            f"{p.p50_s:.3f} | {p.p95_s:.3f} | {p.server_cpu_s:.1f} | {p.requests_per_cpu_s:.2f} | "
            f"{p.clients_cpu_s:.1f} | {p.machine_cpu_s:.1f} | {p.load_average:.2f} |"
        )
    for code in sorted({p.code for p in phases}, key=lambda c: c != "this tree"):
        r = ratios(phases, code)
        lines += [
            "",
            f"{code}: batched over one at a time: **{r['throughput']:.2f}x** the requests per second, "
            f"**{r['per_cpu_second']:.2f}x** the requests per CPU second of the server; p95 {r['p95_on']:.3f} s "
            f"against {r['p95_off']:.3f} s; p50 {r['p50_on']:.3f} s against {r['p50_off']:.3f} s.",
        ]
    if len({p.code for p in phases}) > 1:
        new, old = ratios(phases), ratios(phases, "baseline")
        lines += [
            "",
            "This tree over the baseline, requests per second: one at a time "
            f"**{new['requests_per_s_off'] / old['requests_per_s_off']:.2f}x**, batched "
            f"**{new['requests_per_s_on'] / old['requests_per_s_on']:.2f}x**; this tree batched over the baseline's "
            f"one at a time: **{new['requests_per_s_on'] / old['requests_per_s_off']:.2f}x**.",
        ]
    lines += [
        "",
        "Answers that differ from the first one-at-a-time phase's (another token, or a probability off by more than "
        f"1e-5): **{len(mismatches)}**.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model and 6 users: checks it runs")
    parser.add_argument("--rounds", type=int, default=1, help="phases per serving mode, alternating (default 1)")
    parser.add_argument("--folder", default=None, help="use this model folder instead of building one")
    parser.add_argument("--baseline-root", default=None, help="another checkout whose app.py also serves each round")
    parser.add_argument("--engine", action="store_true", help="only the room on the engine alone, no server")
    parser.add_argument("--out", default=None, help="JSON file (default benchmarks/results/workshop-<shape>.json)")
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    from benchmarks.bench import FULL, build_model
    from benchmarks.bench import QUICK as QUICK_SHAPE

    scenario = QUICK if args.quick else Scenario()
    shape = QUICK_SHAPE if args.quick else FULL
    host = machine.describe()
    if args.engine:
        with tempfile.TemporaryDirectory(prefix="xmod-workshop-") as tmp:
            folder = Path(args.folder) if args.folder else build_model(shape, Path(tmp) / "model")[0]
            room = engine_room(folder, scenario)
        table = engine_report(room)
        print(table)
        out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"workshop-engine-{shape.name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**room, "shape": shape.name, "machine": host, "markdown": table}, indent=2))
        return room
    servers = [("this tree", ROOT)] + ([("baseline", Path(args.baseline_root).resolve())] if args.baseline_root else [])
    with tempfile.TemporaryDirectory(prefix="xmod-workshop-") as tmp:
        folder = Path(args.folder) if args.folder else build_model(shape, Path(tmp) / "model")[0]
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        texts = sentences(tokenizer, *scenario.tokens)
        users = plan(scenario, texts, shape.languages)
        phases, answers = [], []
        for round_number in range(args.rounds):
            order = servers if round_number % 2 == 0 else servers[::-1]
            for code, root in order:
                for batch in ("off", "on"):
                    with server(folder, batch, Path(tmp) / f"app-{batch}.log", root=root) as (url, process):
                        phase, got = run_phase(url, users, batch, process.pid)
                    phase.code = code
                    print(f"{code} {batch}: {phase}", file=sys.stderr, flush=True)
                    phases.append(phase)
                    answers.append((code, batch, got))
    reference = next(got for code, batch, got in answers if code == "this tree" and batch == "off")
    mismatches = [m for _, _, got in answers if got is not reference for m in differences(reference, got)]
    table = report(scenario, shape.name, phases, mismatches, host)
    print(table)
    this = ratios(phases)
    summary = {
        "scenario": asdict(scenario),
        "shape": shape.name,
        "machine": host,
        "phases": [asdict(p) for p in phases],
        "mismatches": mismatches,
        "throughput_ratio": this["throughput"],
        "cpu_throughput_ratio": this["per_cpu_second"],
        "baseline": ratios(phases, "baseline") if args.baseline_root else None,
        "markdown": table,
    }
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"workshop-{shape.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"\nwrote {out}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
