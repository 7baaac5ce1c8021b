"""The public server under load at xmod-base's full shape: 30 ordinary clients and one hostile client.

    python -m benchmarks.serve                      # xmod-base shape, 30 clients, 180 s, a 16 GiB Space's budget
    python -m benchmarks.serve --quick              # a small shape, 6 clients, 30 s: checks the scenario runs

Builds a random model of exactly xmod-base's shape (as benchmarks.bench does; cached in --folder), starts
`python app.py --public --memory-budget GIB` on it, and runs for --seconds:
- ordinary clients (gradio_client), each in a loop with think time, mixing every endpoint within the public caps:
  short and 16-language fills, 5- and 16-adapter comparisons, 8- and 40-sentence sets, the transfer lab on the
  bundled set, model_info, and classify (which this masked-LM checkpoint refuses with a message: expected);
- one hostile client: 20 MB JSON bodies, the 476 KB CSV saved by Excel for Mac and a one-line mebibyte through the
  lab's upload and Train button, a long lab job and a long sentence comparison, each abandoned mid-way.
Reports the ordinary clients' latency (p50, p95; short fills on their own), failures (anything but an answer or
an expected refusal), the hostile requests' outcomes, the server's peak resident memory against its budget, whether
it survived, and the machine's load. Writes benchmarks/results/serve-<shape>.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench import FULL, QUICK, Shape, build_model  # noqa: E402
from xmod_explorer import machine  # noqa: E402
from xmod_explorer.datasets import sentiment_test  # noqa: E402

GiB, MiB = 2**30, 2**20
LANGUAGES = ["en_XX", "de_DE", "fr_XX", "es_XX", "ru_RU", "ja_XX", "zh_CN"]  # the sentiment set's languages
CAP_LANGUAGES = 16  # the public cap
EXPECTED = ("no sequence-classification head",)  # answers a client may get that are not failures
THINK = [5.0, 15.0]  # seconds a person reads a result before asking again (--think sets it)
# Ordinary clients' mix: (kind, weight).
MIX = [
    ("fill_short", 40),
    ("fill_16", 8),
    ("compare_5", 14),
    ("compare_16", 4),
    ("sentences_8", 10),
    ("sentences_40", 4),
    ("transfer_lab", 1),
    ("model_info", 12),
    ("classify", 5),
]


@dataclass
class Call:
    client: str
    kind: str
    start: float
    seconds: float
    outcome: str  # ok, expected, failure
    detail: str = ""


def texts() -> dict[str, list[str]]:
    """Real sentences (the bundled sentiment test set, in seven languages) by language."""
    by_language: dict[str, list[str]] = {}
    for example in sentiment_test():
        by_language.setdefault(example.language, []).append(example.text)
    return by_language


def cr_only_csv(size: int) -> bytes:
    """A labelled CSV as Excel for Mac saves it: CR line ends only (one 'line'), quoted cells."""
    lines = ["text,label,language"]
    while sum(len(line) + 1 for line in lines) < size:
        label = "positive" if len(lines) % 2 else "negative"
        lines.append(f'"Review {len(lines)}: the program opens the document, and shows every page",{label},en_XX')
    return ("\r".join(lines) + "\r").encode("utf-8")


def long_lab_csv(corpus: dict[str, list[str]], rows: int = 300) -> bytes:
    """300 English rows of about 900 characters: sentence features for a minute or more at xmod-base's shape."""
    english = corpus["en_XX"]
    buffer = io.StringIO()
    buffer.write("text,label\n")
    for number in range(rows):
        text = " ".join(english[(number + i) % len(english)] for i in range(12))[:900].replace('"', "'")
        buffer.write(f'"{text}",{"positive" if number % 2 else "negative"}\n')
    return buffer.getvalue().encode("utf-8")


def masked(sentence: str) -> str:
    words = sentence.split()
    words[len(words) // 2] = "<mask>"
    return " ".join(words)


# ----- the server ------------------------------------------------------------------------------------------------


def start_server(folder: Path, budget_gib: float, log: Path, root: Path = ROOT) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "app.py", "--model", str(folder), "--public", "--port", str(port)]
    command += ["--memory-budget", str(budget_gib)]
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    while time.monotonic() - start < 600:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/gradio_api/info", timeout=5).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError("the app did not start")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sampler(threading.Thread):
    """The server's resident memory every 0.2 s."""

    def __init__(self, process: psutil.Process):
        super().__init__(daemon=True)
        self.process = process
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.samples.append((time.monotonic(), self.process.memory_info().rss))
            except psutil.Error:
                return
            time.sleep(0.2)


# ----- Gradio's protocol, as the page speaks it -----------------------------------------------------------------


def event_index(config: dict, elem_id: str) -> int:
    ids = [c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id]
    return next(d["id"] for d in config["dependencies"] if [ids[0], "click"] in d.get("targets", []))


def upload(url: str, name: str, data: bytes) -> dict:
    response = httpx.post(f"{url}/gradio_api/upload", files={"files": (name, data)}, timeout=60)
    response.raise_for_status()
    return {"path": response.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def page_event(url: str, fn_index: int, data: list, *, abandon_after: float | None = None) -> tuple[str, str]:
    """Run a page event through /queue/join and /queue/data; with abandon_after, walk away after that many
    seconds. Returns (outcome, detail)."""
    session = uuid.uuid4().hex
    body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None}
    httpx.post(f"{url}/gradio_api/queue/join", json=body, timeout=60).raise_for_status()
    start = time.monotonic()
    with (
        httpx.Client(timeout=300) as http,
        http.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}) as stream,
    ):
        for line in stream.iter_lines():
            if abandon_after is not None and time.monotonic() - start > abandon_after:
                return "abandoned", f"after {time.monotonic() - start:.1f} s"
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("msg") == "process_completed":
                if message.get("success"):
                    return "ok", ""
                return "refused", str(message.get("output", {}).get("error", ""))[:160]
    return "closed", ""


# ----- the clients ---------------------------------------------------------------------------------------------


def ordinary_client(name: str, url: str, until: float, calls: list[Call], lock: threading.Lock, seed: int) -> None:
    from gradio_client import Client

    rng = random.Random(seed)
    corpus = texts()
    client = Client(url, verbose=False)
    languages = client.predict(api_name="/model_info")["languages"]
    kinds, weights = zip(*MIX)
    while time.monotonic() < until:
        kind = rng.choices(kinds, weights)[0]
        language = rng.choice(LANGUAGES)
        sentence = rng.choice(corpus[language])
        start = time.monotonic()
        try:
            if kind == "fill_short":
                client.predict(masked(sentence), rng.sample(LANGUAGES, rng.randint(3, 5)), 5, api_name="/predict_masks")
            elif kind == "fill_16":
                client.predict(masked(sentence), rng.sample(languages, CAP_LANGUAGES), 5, api_name="/predict_masks")
            elif kind == "compare_5":
                client.predict(sentence, rng.sample(LANGUAGES, 5), None, api_name="/compare_adapters")
            elif kind == "compare_16":
                client.predict(sentence, rng.sample(languages, CAP_LANGUAGES), None, api_name="/compare_adapters")
            elif kind in ("sentences_8", "sentences_40"):
                rows = 8 if kind == "sentences_8" else 40
                chosen = rng.sample(LANGUAGES, 4)
                pairs = [[code, corpus[code][i % len(corpus[code])]] for i in range(rows // 4) for code in chosen]
                client.predict(pairs, api_name="/compare_sentences")
            elif kind == "transfer_lab":
                client.predict("en_XX", rng.sample(LANGUAGES[1:], 2), api_name="/transfer_lab")
            elif kind == "model_info":
                client.predict(api_name="/model_info")
            else:
                client.predict(sentence, rng.sample(LANGUAGES, 3), api_name="/classify")
            outcome, detail = "ok", ""
        except Exception as exc:  # every answer is sorted into expected refusals and failures below
            detail = str(exc)[:200]
            outcome = "expected" if any(text in detail for text in EXPECTED) else "failure"
        with lock:
            calls.append(Call(name, kind, start, time.monotonic() - start, outcome, detail))
        time.sleep(rng.uniform(*THINK))


def hostile_client(url: str, until: float, calls: list[Call], lock: threading.Lock) -> None:
    config = httpx.get(f"{url}/config", timeout=30).json()
    train = event_index(config, "classify-train")
    corpus = texts()
    long_pairs = [[code, " ".join(corpus[code][:12])[:1000]] for code in LANGUAGES[:4] for _ in range(10)]
    actions = ["huge body", "mac csv", "one-line csv", "long lab job", "long sentences"]
    number = 0
    while time.monotonic() < until:
        action = actions[number % len(actions)]
        number += 1
        start = time.monotonic()
        try:
            if action == "huge body":
                body = b'{"data": ["' + b"x" * (20 * MiB) + b'"], "fn_index": 0, "session_hash": "h"}'
                response = httpx.post(
                    f"{url}/gradio_api/queue/join", content=body, headers={"content-type": "application/json"}
                )
                outcome, detail = ("refused", "413") if response.status_code == 413 else ("failure", response.text)
            elif action in ("mac csv", "one-line csv"):
                data = cr_only_csv(476 * 1024) if action == "mac csv" else b"text,label," + b"x" * (MiB - 11)
                file_data = upload(url, "upload.csv", data)
                outcome, detail = page_event(url, train, ["My CSV file", file_data, "en_XX", ["de_DE"], False, ""])
            elif action == "long lab job":
                file_data = upload(url, "long.csv", long_lab_csv(corpus))
                outcome, detail = page_event(
                    url, train, ["My CSV file", file_data, "en_XX", ["de_DE"], False, ""], abandon_after=10
                )
            else:
                with httpx.Client(timeout=60) as http:
                    event = http.post(f"{url}/gradio_api/call/compare_sentences", json={"data": [long_pairs]}).json()
                    with http.stream("GET", f"{url}/gradio_api/call/compare_sentences/{event['event_id']}"):
                        time.sleep(5)
                outcome, detail = "abandoned", "after 5 s"
        except Exception as exc:  # reported, never fatal to the scenario
            outcome, detail = "failure", repr(exc)[:200]
        with lock:
            calls.append(Call("hostile", action, start, time.monotonic() - start, outcome, detail))
        time.sleep(1)


# ----- the report -------------------------------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * (len(ordered) - 1)))] if ordered else float("nan")


def report(shape: Shape, calls: list[Call], sampler: Sampler, idle_rss: int, budget: float, extra: dict) -> dict:
    ordinary = [c for c in calls if c.client != "hostile"]
    hostile = [c for c in calls if c.client == "hostile"]
    latencies = [c.seconds for c in ordinary if c.outcome != "failure"]
    short = [c.seconds for c in ordinary if c.kind == "fill_short" and c.outcome == "ok"]
    by_kind = {}
    for kind, _ in MIX:
        these = [c.seconds for c in ordinary if c.kind == kind and c.outcome != "failure"]
        if these:
            by_kind[kind] = {"n": len(these), "p50": statistics.median(these), "p95": percentile(these, 0.95)}
    peak = max((rss for _, rss in sampler.samples), default=0)
    hostile_outcomes = {}
    for call in hostile:
        hostile_outcomes.setdefault(call.kind, {}).setdefault(call.outcome, 0)
        hostile_outcomes[call.kind][call.outcome] += 1
    return {
        "shape": shape.name,
        "ordinary_requests": len(ordinary),
        "failures": [asdict(c) for c in ordinary if c.outcome == "failure"],
        "expected_refusals": sum(c.outcome == "expected" for c in ordinary),
        "p50_s": statistics.median(latencies) if latencies else None,
        "p95_s": percentile(latencies, 0.95),
        "short_fill_p50_s": statistics.median(short) if short else None,
        "short_fill_p95_s": percentile(short, 0.95),
        "by_kind": by_kind,
        "hostile": hostile_outcomes,
        "hostile_calls": [asdict(c) for c in hostile],
        "calls": [asdict(c) for c in ordinary],  # every ordinary call, to see what ran beside a slow one
        "idle_rss_gib": idle_rss / GiB,
        "peak_rss_gib": peak / GiB,
        "peak_over_idle_gib": (peak - idle_rss) / GiB,
        "budget_gib": budget,
        **extra,
    }


def markdown(summary: dict) -> str:
    lines = [
        f"Shape: {summary['shape']}; {summary['clients']} clients for {summary['seconds']:.0f} s plus one hostile "
        f"client; think time {summary['think_s'][0]:.0f}-{summary['think_s'][1]:.0f} s; budget "
        f"{summary['budget_gib']:.1f} GiB; load average {summary['load_before']} before, "
        f"{summary['load_after']} after, on {summary['machine']['cores']} cores ({summary['machine']['cpu']}).",
        "",
        "| requests | p50 (s) | p95 (s) |",
        "|---|---|---|",
        f"| all ordinary ({summary['ordinary_requests']}) | {summary['p50_s']:.2f} | {summary['p95_s']:.2f} |",
    ]
    for kind, figures in summary["by_kind"].items():
        lines.append(f"| {kind} ({figures['n']}) | {figures['p50']:.2f} | {figures['p95']:.2f} |")
    lines += [
        "",
        f"Failures: {len(summary['failures'])}; expected refusals: {summary['expected_refusals']}. Server alive at the "
        f"end: {summary['alive']}. Resident memory: {summary['idle_rss_gib']:.2f} GiB idle after loading, peak "
        f"{summary['peak_rss_gib']:.2f} GiB ({summary['peak_over_idle_gib']:.2f} GiB above idle, budget "
        f"{summary['budget_gib']:.1f} GiB).",
        f"Hostile client: {json.dumps(summary['hostile'])}; requests stopped because their client went away: "
        f"{summary['stopped_when_gone']}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shape, 6 clients, 30 s")
    parser.add_argument("--seconds", type=float, default=None, help="how long the clients run (default 180)")
    parser.add_argument("--clients", type=int, default=None, help="ordinary clients (default 30)")
    parser.add_argument(
        "--memory-budget", type=float, default=9.2, help="the server's budget in GiB (default: a 16 GiB CPU Space's)"
    )
    parser.add_argument("--think", default=None, help="think time between a client's requests, MIN,MAX seconds")
    parser.add_argument("--folder", default=None, help="where the random model is built (kept for the next run)")
    parser.add_argument("--app-root", default=None, help="serve another checkout's app.py (a before, to compare)")
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    shape = QUICK if args.quick else FULL
    if args.think:
        THINK[:] = [float(part) for part in args.think.split(",")]
    seconds = args.seconds or (30 if args.quick else 180)
    clients = args.clients or (6 if args.quick else 30)
    folder = Path(args.folder or Path(tempfile.gettempdir()) / f"xmod-serve-{shape.name}")
    if not (folder / "model.safetensors").exists():
        print(f"building a random {shape.name} in {folder}", file=sys.stderr)
        build_model(shape, folder)
    log = folder.parent / f"xmod-serve-{shape.name}.log"
    load_before = os.getloadavg()
    root = Path(args.app_root).resolve() if args.app_root else ROOT
    process, url = start_server(folder, args.memory_budget, log, root)
    server = psutil.Process(process.pid)
    try:
        time.sleep(3)
        idle_rss = server.memory_info().rss
        sampler = Sampler(server)
        sampler.start()
        calls: list[Call] = []
        lock = threading.Lock()
        until = time.monotonic() + seconds
        threads = [
            threading.Thread(target=ordinary_client, args=(f"c{i}", url, until, calls, lock, i)) for i in range(clients)
        ]
        threads.append(threading.Thread(target=hostile_client, args=(url, until, calls, lock)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(seconds + 600)
        sampler.stop.set()
        alive = process.poll() is None
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
    text = log.read_text()
    extra = {
        "clients": clients,
        "think_s": list(THINK),
        "seconds": seconds,
        "alive": alive,
        "stopped_when_gone": len(re.findall(r"went away; stopping its", text)),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "machine": machine.describe(),
        "app_root": str(root),
        "batch": os.environ.get("XMOD_BATCH", "default"),
    }
    summary = report(shape, calls, sampler, idle_rss, args.memory_budget, extra)
    table = markdown(summary)
    summary["markdown"] = table
    print(table)
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"serve-{shape.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str))
    print(f"\nwrote {out}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
