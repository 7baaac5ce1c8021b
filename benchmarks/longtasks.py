"""How long the browser's main thread is held once a result arrives, per tab, with every adapter of a model.

    python -m benchmarks.longtasks                       # the embedded mini model (all its languages)
    python -m benchmarks.longtasks --random81            # a random model with all 81 xmod-base languages
    python -m benchmarks.longtasks --app-url URL         # an app already running (for example an older version)
    python -m benchmarks.longtasks --random81 --baseline-url URL   # before and after in one run, tab by tab
    python -m benchmarks.longtasks --random81 --layers 2  # fewer layers: a smaller model, quicker to build and run

Opens each analysis tab's deep link with every language the model has (the link fills the tab and runs it) in
Chromium and records, with the Long Tasks API, every main-thread task over 50 ms from the run's start until the
page has been quiet for 1.5 s; reports the longest per tab with the machine's load average, and writes
benchmarks/results/longtasks-<model>.json. With --baseline-url (an older version of the app serving the same model,
started by hand), each tab is measured there first and then here, so both see the same load; the JSON keeps the
baseline's figures under "before". --random81 builds xmod-base's 12 layers and 81 languages in xmod-base's
order with a small hidden size (64) and the tests' small tokenizer: what the browser draws depends on the number of
languages, layers, tokens and sentences, not on the hidden size.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) window.__longTasks.push([entry.startTime, entry.duration]);
}).observe({type: "longtask", buffered: true});
"""
GENERIC = [
    "Click the button to save the document.",
    "The table shows every value of the selected cells.",
    "Choose a language for the whole text.",
    "This command opens a new window.",
]


def sentences(codes: list[str]) -> str:
    """Four sentences per language as a rows= parameter: the mini model's held-out ones where it has them."""
    from xmod_explorer.defaults import ASSETS

    own: dict[str, list[str]] = {}
    path = ASSETS / "mini_heldout.tsv"
    if path.exists():
        with open(path, encoding="utf-8", newline="") as handle:
            for record in csv.DictReader(handle, delimiter="\t"):
                own.setdefault(record["language"], []).append(record["text"].replace("<mask>", record["answer"]))
    lines = []
    for code in codes:
        for text in (own.get(code) or GENERIC)[:4]:
            lines.append(f"{code}\t{text}")
    return "\n".join(lines)


def links(codes: list[str]) -> dict[str, tuple[str, str]]:
    every = ",".join(codes)
    masked = "Click the <mask> to save the <mask>."
    plain = "The file is new."
    return {
        "fill": (urlencode({"tab": "fill", "text": masked, "languages": every}), "#fill-chart"),
        "compare": (urlencode({"tab": "compare", "text": plain, "languages": every}), "#compare-tokens"),
        "sentences": (urlencode({"tab": "sentences", "rows": sentences(codes)}), "#sentences-cka"),
        "lens": (urlencode({"tab": "lens", "text": masked, "languages": every}), "#lens-lines"),
        "identify": (urlencode({"tab": "identify", "text": plain, "languages": every}), "#identify-chart"),
        "mix": (urlencode({"tab": "mix", "text": masked, "a": codes[0], "b": codes[-1], "steps": 11}), "#mix-chart"),
        "map": (urlencode({"tab": "map", "mode": "sentences", "rows": sentences(codes)}), "#map-chart"),
        "classify": (
            urlencode({"tab": "classify", "text": plain, "languages": every, "targets": every}),
            "#classify-chart",
        ),
    }


def measure(browser, url: str, query: str, chart: str, limit_s: float = 300) -> dict:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.add_init_script(LONG_TASKS)
    start = time.monotonic()
    page.goto(f"{url}/?{query}")
    page.wait_for_function("performance.getEntriesByName('xmod-link-run').length > 0", timeout=limit_s * 1000)
    page.wait_for_selector(f"{chart} .js-plotly-plot .main-svg", timeout=limit_s * 1000)
    shown = time.monotonic() - start
    page.wait_for_function(
        """() => {
            const last = Math.max(0, ...window.__longTasks.map(([start, duration]) => start + duration));
            return performance.now() - last > 1500;
        }""",
        timeout=limit_s * 1000,
        polling=250,
    )
    started = page.evaluate("performance.getEntriesByName('xmod-link-run')[0].startTime")
    tasks = [[round(s - started), round(d)] for s, d in page.evaluate("window.__longTasks") if s >= started]
    page.close()
    return {
        "longest_task_ms": max((d for _, d in tasks), default=0),
        "long_tasks": tasks,
        "seconds_to_chart": round(shown, 1),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def wait_until_serving(url: str, process: subprocess.Popen, limit: float = 180) -> None:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if process.poll() is not None:
            raise RuntimeError("the app exited")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/gradio_api/info", timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.5)
    raise RuntimeError("the app did not answer")


@contextlib.contextmanager
def app(model: str, port: int):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "app.py", "--model", model, "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=log
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_serving(url, process)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)


def random81(folder: Path, layers: int = 12) -> Path:
    from xmod_explorer.languages import LANGUAGE_NAMES
    from xmod_explorer.tiny import TinySpec, build_random_checkpoint

    config = folder / "config.json"
    if config.exists() and json.loads(config.read_text()).get("num_hidden_layers") == layers:
        return folder
    spec = TinySpec(
        languages=list(LANGUAGE_NAMES), hidden_size=64, num_layers=layers, num_heads=4, intermediate_size=128
    )
    return build_random_checkpoint(folder, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--random81", action="store_true", help="a random model with all 81 xmod-base languages")
    parser.add_argument("--layers", type=int, default=12, help="layers of the --random81 model (xmod-base: 12)")
    parser.add_argument("--folder", help="where the --random81 model is kept (default: the temporary folder)")
    parser.add_argument("--app-url", help="measure an app already running at this address")
    parser.add_argument("--baseline-url", help="an older app serving the same model: each tab measured there first")
    parser.add_argument("--tabs", default="", help="comma-separated tab names (default: all)")
    parser.add_argument("--port", type=int, default=7951)
    parser.add_argument("--out", help="JSON file (default benchmarks/results/longtasks-<model>.json)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    folder = Path(args.folder or Path(tempfile.gettempdir()) / f"xmod-random81-{args.layers}layers")
    model = str(random81(folder, args.layers)) if args.random81 else "mini"
    codes = json.loads((Path(model if args.random81 else _mini()) / "config.json").read_text())["languages"]
    chosen = {name: link for name, link in links(codes).items() if not args.tabs or name in args.tabs.split(",")}
    results = {}
    with contextlib.ExitStack() as stack:
        url = args.app_url or stack.enter_context(app(model, args.port))
        playwright = stack.enter_context(sync_playwright())
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        for name, (query, chart) in chosen.items():
            before = measure(browser, args.baseline_url, query, chart) if args.baseline_url else None
            results[name] = measure(browser, url, query, chart)
            if before is not None:
                results[name]["before"] = before
                print(f"{name} before: longest task {before['longest_task_ms']} ms, load {before['load_average']}")
            print(
                f"{name}: longest task {results[name]['longest_task_ms']} ms, chart after "
                f"{results[name]['seconds_to_chart']} s, load {results[name]['load_average']}",
                flush=True,
            )
        browser.close()
    label = f"random81-{args.layers}layers" if args.random81 else "mini"
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"longtasks-{label}.json")
    out.write_text(
        json.dumps({"model": label, "languages": len(codes), "cpus": os.cpu_count(), "tabs": results}, indent=1)
    )
    print(f"wrote {out}")


def _mini() -> Path:
    from xmod_explorer.defaults import MINI_PATH

    return MINI_PATH


if __name__ == "__main__":
    main()
