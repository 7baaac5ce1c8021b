"""Measure the engine against the documented way and against the encoder-only floor, in one run.

    python -m benchmarks.bench            # xmod-base shape: 81 languages, vocab 250002, 12 x 768
    python -m benchmarks.bench --quick    # tiny shape, seconds (the test suite runs this)

Builds a randomly initialised model of the chosen shape (random weights cost what real ones do),
saves it as safetensors to a temporary folder, loads it through the real loader, and times each
case as the median of several repeats after a warm-up. Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xmod_explorer import Explorer, machine  # noqa: E402
from xmod_explorer.languages import LANGUAGE_NAMES  # noqa: E402
from xmod_explorer.mini.tokenizer import counted_tokenizer  # noqa: E402
from xmod_explorer.tiny import SAMPLE_SENTENCES, TinySpec, build_random_checkpoint  # noqa: E402

XMOD_BASE_LANGUAGES = list(LANGUAGE_NAMES)  # xmod-base's own order
SENTENCE_WORDS = [
    "After",
    "the",
    "update",
    "the",
    "<mask>",
    "opens",
    "every",
    "saved",
    "file",
    "much",
    "faster",
    "than",
    "the",
    "old",
    "version",
    "did",
]
TARGET_TOKENS = 14


@dataclass
class Shape:
    """Model shape for the benchmark."""

    name: str
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    languages: list[str]
    ks: list[int]
    repeats: int


FULL = Shape("xmod-base", 768, 12, 12, 3072, 250002, XMOD_BASE_LANGUAGES, [1, 8, 81], 5)
QUICK = Shape("quick", 64, 2, 4, 128, 16000, XMOD_BASE_LANGUAGES, [1, 8, 81], 2)


@dataclass
class Timing:
    case: str
    k: int | None
    median_s: float
    runs_s: list[float] = field(default_factory=list)


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of fn over repeats, after warm-up runs."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), runs


def fourteen_token_text(tokenizer) -> str:
    """A sentence with one <mask> that is exactly 14 tokens (with <s> and </s>) for this tokenizer."""

    def count(words: list[str]) -> int:
        return len(tokenizer(" ".join(words))["input_ids"])

    words = list(SENTENCE_WORDS)
    while count(words) > TARGET_TOKENS and len(words) > 5:
        words.pop()
    if count(words) != TARGET_TOKENS:  # a small tokenizer splits words into pieces: pad with one-token words
        filler = next(
            w
            for w in ["the", "a", "file", "is", *SENTENCE_WORDS]
            if len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1
        )
        words = ["<mask>"]
        while count(words) < TARGET_TOKENS:
            words.insert(0 if len(words) < 5 else len(words), filler)
    text = " ".join(words)
    if count(words) != TARGET_TOKENS:
        raise RuntimeError(f"could not build a {TARGET_TOKENS}-token sentence (got {count(words)}: {text!r})")
    return text


def build_model(shape: Shape, folder: Path) -> tuple[Path, str]:
    """Save a random model of shape with a tokenizer (the mini model's if present); return it and a 14-token text."""
    from transformers import AutoTokenizer

    mini = ROOT / "assets" / "xmod-mini"
    if (mini / "tokenizer.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(str(mini))
    else:
        tokenizer = counted_tokenizer(SAMPLE_SENTENCES * 3, 400)
    text = fourteen_token_text(tokenizer)
    spec = TinySpec(
        languages=shape.languages,
        hidden_size=shape.hidden,
        num_layers=shape.layers,
        num_heads=shape.heads,
        intermediate_size=shape.ffn,
        vocab_size=max(shape.vocab, len(tokenizer)),
        initializer_range=0.02,
        adapter_scale=0.0,
    )
    build_random_checkpoint(folder, spec, tokenizer)
    return folder, text


def reference_model(folder: Path):
    from transformers import XmodForMaskedLM

    return XmodForMaskedLM.from_pretrained(str(folder)).eval()


def bench_masks(
    shape: Shape, model, text: str, explorer: Explorer, prefix: str = "", sync: Callable[[], object] = lambda: None
) -> list[Timing]:
    """Case (a) loop, (b) batched full logits, (c) the engine, (d) the encoder-only floor.

    model is a plain XmodForMaskedLM on the explorer's device and dtype; sync waits for the device."""
    tokenizer = explorer.tokenizer
    ids = tokenizer(text, return_tensors="pt").input_ids.to(model.device)
    mask_at = (ids[0] == tokenizer.mask_token_id).nonzero().flatten()
    results = []
    for k in shape.ks:
        codes = shape.languages[:k]
        lang_ids = torch.arange(k, device=model.device)

        @torch.inference_mode()
        def loop():
            for code in codes:
                model.set_default_language(code)
                model(input_ids=ids).logits[0, mask_at].softmax(-1).topk(5)
            sync()

        @torch.inference_mode()
        def batched():
            model(input_ids=ids.expand(k, -1), lang_ids=lang_ids).logits[:, mask_at].softmax(-1).topk(5)
            sync()

        @torch.inference_mode()
        def floor():
            model.roberta(input_ids=ids.expand(k, -1), lang_ids=lang_ids)
            sync()

        def engine():
            explorer.predict_masks(text, codes, top_k=5)
            sync()

        repeats = max(2, shape.repeats - 2) if k == 81 and shape.name != "quick" else shape.repeats
        for case, fn in (
            ("loop", loop),
            ("batched_full_logits", batched),
            ("engine", engine),
            ("encoder_floor", floor),
        ):
            median, runs = median_time(fn, repeats)
            results.append(Timing(f"{prefix}predict_masks/{case}", k, median, runs))
    model.config.default_language = None
    return results


def bench_compare(shape: Shape, model, text: str, explorer: Explorer) -> list[Timing]:
    ids = explorer.tokenizer(text.replace("<mask>", "file"), return_tensors="pt").input_ids
    results = []
    for k in [k for k in shape.ks if k > 1]:
        codes = shape.languages[:k]

        @torch.inference_mode()
        def floor():
            model.roberta(input_ids=ids.expand(k, -1), lang_ids=torch.arange(k))

        def engine():
            explorer.compare_adapters(text.replace("<mask>", "file"), codes)

        for case, fn in (("engine", engine), ("encoder_floor", floor)):
            median, runs = median_time(fn, shape.repeats)
            results.append(Timing(f"compare_adapters/{case}", k, median, runs))
    return results


def bench_score(shape: Shape, text: str, explorer: Explorer, model=None) -> list[Timing]:
    """Pseudo-log-likelihood of the sentence (its mask filled in) under K adapters: the engine (batched rows of
    (adapter, masked token), chunked), and for small K the plain way: one full forward per masked token per
    language with set_default_language. Timing.k is K; the rows are K x scored tokens."""
    sentence = text.replace("<mask>", "file")
    tokenizer = explorer.tokenizer
    ids = tokenizer(sentence, return_tensors="pt").input_ids
    special = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    scored = [i for i, token in enumerate(ids[0].tolist()) if token not in special]
    results = []
    for k in shape.ks:
        codes = shape.languages[:k]

        def engine():
            explorer.score_languages(sentence, codes)

        @torch.inference_mode()
        def loop():
            for code in codes:
                model.set_default_language(code)
                for position in scored:
                    masked = ids.clone()
                    masked[0, position] = tokenizer.mask_token_id
                    model(input_ids=masked).logits[0, position].log_softmax(-1)[ids[0, position]]

        repeats = max(2, shape.repeats - 2) if k == 81 and shape.name != "quick" else shape.repeats
        median, runs = median_time(engine, repeats)
        results.append(Timing("score_languages/engine", k, median, runs))
        if model is not None and k <= 8:
            median, runs = median_time(loop, max(1, repeats - 2), warmup=0)
            results.append(Timing("score_languages/loop", k, median, runs))
    results.append(Timing("score_languages/scored_tokens", None, float(len(scored)), []))
    if model is not None:
        model.config.default_language = None
    return results


def score_report(shape: Shape, timings: list[Timing]) -> list[str]:
    """Markdown rows for the pseudo-log-likelihood cases, if the run measured them."""
    table = {(t.case, t.k): t.median_s for t in timings}
    if ("score_languages/scored_tokens", None) not in table:
        return []
    tokens = int(table[("score_languages/scored_tokens", None)])
    lines = [
        "",
        f"Which adapter fits (`score_languages`, pseudo-log-likelihood of the {TARGET_TOKENS}-token sentence with its "
        f"mask filled in: {tokens} scored tokens, so K x {tokens} forward rows):",
        "",
        "| K | forward rows | one forward per row (s) | engine (s) | engine per row (ms) | loop / engine |",
        "|---|---|---|---|---|---|",
    ]
    for k in shape.ks:
        engine = table[("score_languages/engine", k)]
        loop = table.get(("score_languages/loop", k))
        rows = k * tokens
        shown = f"{loop:.2f}" if loop is not None else ""
        ratio = f"{loop / engine:.1f}x" if loop is not None else ""
        lines.append(f"| {k} | {rows:,} | {shown} | {engine:.2f} | {1000 * engine / rows:.1f} | {ratio} |")
    mini = [t for t in timings if t.case == "mini/score_languages"]
    if mini:
        lines.append(
            f"Embedded mini model: `score_languages` over its {mini[0].k} languages, median per held-out sentence "
            f"(answer filled in): {mini[0].median_s:.2f} s."
        )
    return lines


def bench_mini_score(repeats: int) -> list[Timing]:
    """The embedded model: score_languages over all its languages, per held-out sentence (median of one sentence per
    language)."""
    import csv

    from xmod_explorer.defaults import ASSETS, mini_available

    if not mini_available():
        return []
    explorer = Explorer.from_pretrained("mini")
    with open(ASSETS / "mini_heldout.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    sentences = [row["text"].replace("<mask>", row["answer"]) for row in rows]
    explorer.score_languages(sentences[0])  # warm-up
    runs = []
    for sentence in sentences[::4]:  # one per language (the file holds four per language, grouped)
        start = time.perf_counter()
        explorer.score_languages(sentence)
        runs.append(time.perf_counter() - start)
    return [Timing("mini/score_languages", len(explorer.languages), statistics.median(runs), runs)]


def bench_load(shape: Shape, folder: Path) -> list[Timing]:
    """Explorer.from_pretrained against two ways of just reading the weights file."""
    from safetensors.torch import load_file

    weights = folder / "model.safetensors"
    buffer = bytearray(weights.stat().st_size)

    def file_read():  # every byte into memory, as `cat` would
        with weights.open("rb", buffering=0) as handle:
            view, done = memoryview(buffer), 0
            while done < len(buffer):
                done += handle.readinto(view[done:])

    def mapped_read():  # safetensors' memory map, then every tensor read once
        for tensor in load_file(str(weights)).values():
            tensor.sum()

    def load():
        Explorer.from_pretrained(str(folder))

    results = []
    for case, fn in (("file_read", file_read), ("mapped_read", mapped_read), ("from_pretrained", load)):
        median, runs = median_time(fn, max(3, shape.repeats - 2))
        results.append(Timing(f"load/{case}", None, median, runs))
    return results


PEAK_SCRIPT = """
import sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads({threads})
from xmod_explorer import Explorer

def high_water():
    # VmHWM belongs to this process image; ru_maxrss would carry over the parent's peak through fork + exec.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

before = high_water()
explorer = Explorer.from_pretrained({folder!r}, languages={languages!r})
explorer.predict_masks({text!r}, explorer.languages, top_k=5)  # every loaded adapter in use
print(before, high_water())
"""


def peak_memory(folder: Path, text: str, languages: list[str] | None) -> dict:
    """Peak resident memory (bytes) of a fresh process that loads the model and fills one mask with
    every loaded language, and that process's peak before loading (interpreter, torch, transformers)."""
    script = PEAK_SCRIPT.format(
        root=str(ROOT), threads=torch.get_num_threads(), languages=languages, folder=str(folder), text=text
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    before, peak = (int(v) for v in done.stdout.strip().splitlines()[-1].split())
    return {"peak": peak, "before_load": before}


def bench_cuda(shape: Shape, folder: Path, text: str) -> list[Timing]:
    """The predict_masks cases on the GPU in float32, float16 and bfloat16, where one is present."""
    if not torch.cuda.is_available():
        return []
    results = []
    for dtype in ("float32", "float16", "bfloat16"):
        explorer = Explorer.from_pretrained(str(folder), device="cuda", dtype=dtype)
        # The explorer's own model is a plain XmodForMaskedLM: the reference cases run on it too.
        results += bench_masks(shape, explorer.backend.model, text, explorer, f"cuda_{dtype}/", torch.cuda.synchronize)
        del explorer
        torch.cuda.empty_cache()
    return results


def bench_mini(repeats: int) -> list[Timing]:
    """The embedded model: 12-language predict_masks, and python app.py to its first answer."""
    from xmod_explorer.defaults import mini_available

    if not mini_available():
        return []
    explorer = Explorer.from_pretrained("mini")
    codes = explorer.languages[:12]
    text = "Click the <mask> to save the document."
    median, runs = median_time(lambda: explorer.predict_masks(text, codes, top_k=5), max(repeats, 10))
    results = [Timing("mini/predict_masks", len(codes), median, runs)]
    starts = [app_first_answer() for _ in range(max(1, repeats // 2))]
    results.append(Timing("mini/app_first_answer", None, statistics.median(starts), starts))
    return results


def app_first_answer(limit: float = 120) -> float:
    """Seconds from launching `python app.py` (offline, so the embedded model) to its first answer."""
    import socket

    from gradio_client import Client

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "XMOD_PORT": str(port)}
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while time.perf_counter() - start < limit:
            try:
                client = Client(f"http://127.0.0.1:{port}", verbose=False)
                client.predict("Click the <mask> to save.", ["en_XX", "de_DE"], 5, api_name="/predict_masks")
                return time.perf_counter() - start
            except Exception:
                time.sleep(0.1)
        raise RuntimeError("the app gave no answer")
    finally:
        process.terminate()
        process.wait(timeout=30)


def ratio(timings: dict, a: str, b: str, k) -> float | None:
    return timings[(a, k)] / timings[(b, k)] if (a, k) in timings and (b, k) in timings else None


def report(shape: Shape, timings: list[Timing], memory: dict, machine: dict, weights_gib: float) -> tuple[str, dict]:
    """Markdown table and JSON with ratios taken from the same run."""
    table = {(t.case, t.k): t.median_s for t in timings}
    lines = [
        f"Shape: {shape.name} ({shape.layers} x {shape.hidden}, vocab {shape.vocab:,}, {len(shape.languages)} "
        "languages); "
        f"{machine['threads']} torch threads on {machine['cpu']}; median of repeats after a warm-up.",
        "",
        "| case | K | loop (s) | batched, full logits (s) | engine (s) | encoder floor (s) | loop / engine | engine / "
        "floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k in shape.ks:
        loop = table.get(("predict_masks/loop", k))
        batched = table.get(("predict_masks/batched_full_logits", k))
        engine = table[("predict_masks/engine", k)]
        floor = table[("predict_masks/encoder_floor", k)]
        lines.append(
            f"| predict_masks | {k} | {loop:.3f} | {batched:.3f} | {engine:.3f} | {floor:.3f} | {loop / engine:.1f}x | "
            f"{engine / floor:.2f} |"
        )
    for k in [k for k in shape.ks if k > 1]:
        engine = table[("compare_adapters/engine", k)]
        floor = table[("compare_adapters/encoder_floor", k)]
        lines.append(f"| compare_adapters | {k} | | | {engine:.3f} | {floor:.3f} | | {engine / floor:.2f} |")
    raw, mapped, load = (table[(f"load/{case}", None)] for case in ("file_read", "mapped_read", "from_pretrained"))
    all_peak, subset_peak = memory["all"]["peak"], memory["subset"]["peak"]
    baseline = min(memory["all"]["before_load"], memory["subset"]["before_load"])
    lines += [
        "",
        f"Load: `Explorer.from_pretrained` {load:.2f} s; reading the {weights_gib:.2f} GiB safetensors file into "
        "memory "
        f"{raw:.2f} s (**{load / raw:.2f}x**); memory-mapping it and reading each tensor once {mapped:.2f} s "
        f"(**{load / mapped:.2f}x**). Both reads come from the page cache (warm runs).",
        f"Peak memory, filling a mask with every loaded language: all {len(shape.languages)} languages "
        f"{all_peak / 2**30:.2f} GiB, 5-language subset {subset_peak / 2**30:.2f} GiB: "
        f"**{subset_peak / all_peak:.0%}** "
        f"of the full model's peak; without the {baseline / 2**30:.2f} GiB the process holds before loading "
        f"(Python, torch, transformers): **{(subset_peak - baseline) / (all_peak - baseline):.0%}**.",
    ]
    mini = {t.case: t for t in timings if t.case.startswith("mini/")}
    if mini:
        lines.append(
            f"Embedded mini model: {mini['mini/predict_masks'].k}-language predict_masks "
            f"{mini['mini/predict_masks'].median_s * 1000:.0f} ms; `python app.py` to its first answer "
            f"{mini['mini/app_first_answer'].median_s:.1f} s."
        )
    lines += score_report(shape, timings)
    cuda = [t for t in timings if t.case.startswith("cuda_")]
    if cuda:
        lines += [
            "",
            "| CUDA | K | loop (ms) | batched, full logits (ms) | engine (ms) | encoder floor (ms) | loop / engine | "
            "engine / floor |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for dtype in ("float32", "float16", "bfloat16"):
            for k in shape.ks:
                ms = [
                    table[(f"cuda_{dtype}/predict_masks/{case}", k)] * 1000
                    for case in ("loop", "batched_full_logits", "engine", "encoder_floor")
                ]
                lines.append(
                    f"| {dtype} | {k} | {ms[0]:.1f} | {ms[1]:.1f} | {ms[2]:.1f} | {ms[3]:.1f} | {ms[0] / ms[2]:.1f}x | "
                    f"{ms[2] / ms[3]:.2f} |"
                )
    k_max = max(shape.ks)
    summary = {
        "shape": asdict(shape),
        "machine": machine,
        "timings": [asdict(t) for t in timings],
        "ratios": {
            "predict_masks_loop_over_engine_k81": ratio(table, "predict_masks/loop", "predict_masks/engine", k_max),
            "predict_masks_engine_over_floor_k81": ratio(
                table, "predict_masks/engine", "predict_masks/encoder_floor", k_max
            ),
            "compare_adapters_engine_over_floor_k81": ratio(
                table, "compare_adapters/engine", "compare_adapters/encoder_floor", k_max
            ),
            "load_over_file_read": load / raw,
            "load_over_mapped_read": load / mapped,
            "subset_memory_fraction": subset_peak / all_peak,
            "subset_memory_fraction_without_baseline": (subset_peak - baseline) / (all_peak - baseline),
        },
        "memory_bytes": memory,
    }
    return "\n".join(lines), summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shape: checks the benchmark runs, in seconds")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case (default 5, quick 3)")
    parser.add_argument("--out", default=None, help="JSON file to write (default benchmarks/results/<shape>.json)")
    parser.add_argument(
        "--only-score",
        action="store_true",
        help="only the pseudo-log-likelihood cases (default output benchmarks/results/<shape>-score.json)",
    )
    args = parser.parse_args(argv)
    shape = QUICK if args.quick else FULL
    if args.repeats:
        shape.repeats = args.repeats
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    host = machine.describe()
    if args.only_score:
        return main_score(shape, host, args.out)
    with tempfile.TemporaryDirectory(prefix="xmod-bench-") as tmp:
        folder, text = build_model(shape, Path(tmp) / "model")
        print(f"built {shape.name} in {folder}; text: {text!r}", file=sys.stderr)
        explorer = Explorer.from_pretrained(str(folder))
        model = reference_model(folder)
        timings = bench_masks(shape, model, text, explorer)
        timings += bench_compare(shape, model, text, explorer)
        timings += bench_score(shape, text, explorer, model)
        del explorer, model
        gc.collect()
        timings += bench_load(shape, folder)
        weights_gib = (folder / "model.safetensors").stat().st_size / 2**30
        memory = {"all": peak_memory(folder, text, None), "subset": peak_memory(folder, text, shape.languages[:5])}
        timings += bench_cuda(shape, folder, text)
    if not args.quick:
        timings += bench_mini(shape.repeats) + bench_mini_score(shape.repeats)
    table, summary = report(shape, timings, memory, host, weights_gib)
    print(table)
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"{shape.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    summary["markdown"] = table
    out.write_text(json.dumps(summary, indent=2))
    print(f"\nwrote {out}", file=sys.stderr)
    return summary


def main_score(shape: Shape, host: dict, out: str | None) -> dict:
    """The pseudo-log-likelihood cases alone, written to their own JSON."""
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="xmod-bench-") as tmp:
        folder, text = build_model(shape, Path(tmp) / "model")
        explorer = Explorer.from_pretrained(str(folder))
        timings = bench_score(shape, text, explorer, reference_model(folder))
    if shape.name != "quick":
        timings += bench_mini_score(shape.repeats)
    host = {**host, "load_average_before": load_before, "load_average_after": os.getloadavg()}
    header = (
        f"Shape: {shape.name} ({shape.layers} x {shape.hidden}, vocab {shape.vocab:,}, {len(shape.languages)} "
        f"languages); {host['threads']} torch threads on {host['cpu']}; median of repeats after a warm-up."
    )
    table = "\n".join([header, *score_report(shape, timings)])
    print(table)
    path = Path(out) if out else ROOT / "benchmarks" / "results" / f"{shape.name}-score.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = {"shape": asdict(shape), "machine": host, "timings": [asdict(t) for t in timings], "markdown": table}
    path.write_text(json.dumps(summary, indent=2))
    print(f"\nwrote {path}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
