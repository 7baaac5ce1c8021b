"""How close one encoder forward comes to what this CPU's matrix units can do, in one run.

    python -m benchmarks.efficiency           # xmod-base's shape: 12 x 768, FFN 3072, adapters 384, 81 languages
    python -m benchmarks.efficiency --quick   # a tiny shape, seconds (the test suite runs this)

For each batch (1, 8, 32, 81 rows of a 14-token sentence, each row under a different language, as when
one sentence is filled under K adapters or K users' rows share a pass) it counts the floating-point
operations of the layers and adapters, times the engine's encoder pass (``Backend.encode_rows``), and
times plain ``torch.matmul`` products of the same dimensions as the encoder's linear layers, on the
same threads, alternating with the forward so both see the same machine. The ratio of the two rates
is the efficiency; a profile of one forward says where the rest goes (matrix products, GELU,
LayerNorm, attention's small steps, copies). The vocabulary is small: the encoder's cost does not
depend on it, and the output layer is not part of an encoder pass.

It then times a workshop's shared pass (``Backend.encode_texts``, the encoder pass of the web batcher's
``predict_masks_together``): 10 requests of 3 to 5 adapters drawn from all 81 on 10-to-20-token texts,
padded to the longest, against the same rows all under one language, and says what share of its operator
time the language adapters' products and GELU take and how many of its tokens are padding.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xmod_explorer import machine  # noqa: E402
from xmod_explorer.backends import NativeBackend  # noqa: E402
from xmod_explorer.languages import LANGUAGE_NAMES  # noqa: E402
from xmod_explorer.tiny import xmod_config  # noqa: E402

TOKENS = 14
ROWS = [1, 8, 32, 81]


@dataclass
class Dims:
    hidden: int
    layers: int
    heads: int
    ffn: int
    adapter: int
    name: str


FULL = Dims(768, 12, 12, 3072, 384, "xmod-base")
QUICK = Dims(64, 2, 4, 128, 32, "quick")


def linear_shapes(d: Dims) -> list[tuple[int, int]]:
    """(in, out) of every linear layer one token meets in one encoder layer: query, key, value, attention
    output, the feed-forward block's two, the language adapter's two."""
    h = d.hidden
    return [(h, h)] * 4 + [(h, d.ffn), (d.ffn, h), (h, d.adapter), (d.adapter, h)]


def encoder_flops(d: Dims, rows: int, tokens: int) -> tuple[float, float]:
    """Floating-point operations of one encoder pass over rows x tokens: (all, linear layers only).
    A multiply-add counts two. Attention adds scores and their weighted sum, 2 x tokens^2 x hidden each."""
    linear = 2.0 * rows * tokens * sum(i * o for i, o in linear_shapes(d)) * d.layers
    attention = 2.0 * rows * 2 * tokens * tokens * d.hidden * d.layers
    return linear + attention, linear


def build_backend(d: Dims, languages: list[str]) -> NativeBackend:
    """A random XmodModel of shape d (float32, eval mode) behind the engine's native backend."""
    from transformers import XmodForMaskedLM

    torch.manual_seed(0)
    config = xmod_config(
        vocab_size=1000,
        hidden_size=d.hidden,
        num_layers=d.layers,
        num_heads=d.heads,
        intermediate_size=d.ffn,
        languages=languages,
        adapter_reduction_factor=d.hidden // d.adapter,
        initializer_range=0.02,
    )
    return NativeBackend(XmodForMaskedLM(config).eval(), languages)


def interleaved(
    cases: dict[str, Callable[[], object]], repeats: int, cpu: dict[str, list[float]] | None = None
) -> dict[str, list[float]]:
    """Wall times of each case, the cases taken in turn within each repeat (after one warm-up each), so a
    busy machine slows all of them alike; cpu, if given, receives each run's CPU seconds (this process, all
    threads), which do not count the time other programs had the cores."""
    for fn in cases.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            gc.collect()
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - start)
            if cpu is not None:
                cpu.setdefault(name, []).append(time.process_time() - start_cpu)
    return times


def matmul_case(d: Dims, m: int) -> Callable[[], None]:
    """One encoder's worth of plain products: each linear shape, m rows of input, as many times as layers,
    weights laid out as nn.Linear keeps them (out, in)."""
    operands = [(torch.randn(m, i), torch.randn(o, i)) for i, o in linear_shapes(d)]

    def run() -> None:
        for _ in range(d.layers):
            for x, w in operands:
                torch.matmul(x, w.t())

    return run


CATEGORIES = {
    "matrix products": ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::baddbmm"),
    "GELU": ("aten::gelu",),
    "LayerNorm": ("aten::native_layer_norm", "aten::layer_norm"),
    "softmax, scaling, masking": ("aten::_softmax", "aten::softmax", "aten::div", "aten::add", "aten::add_"),
    "copies (reshapes, cat, split)": ("aten::copy_", "aten::cat", "aten::clone", "aten::contiguous"),
}


def profile_shares(fn: Callable[[], object]) -> dict[str, float]:
    """Share of one call's operator time per category (self time, so nested calls count once)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    totals = dict.fromkeys(CATEGORIES, 0.0)
    overall = 0.0
    for event in prof.key_averages():
        overall += event.self_cpu_time_total
        for name, ops in CATEGORIES.items():
            if event.key in ops:
                totals[name] += event.self_cpu_time_total
    shares = {name: value / overall for name, value in totals.items()} if overall else totals
    shares["everything else"] = max(0.0, 1.0 - sum(shares.values()))
    return shares


@dataclass
class Row:
    rows: int
    gflop: float
    forward_s: float
    forward_one_language_s: float
    matmul_s: float
    forward_gflops: float
    matmul_gflops: float
    efficiency: float
    efficiency_one_language: float
    efficiency_cpu_time: float
    efficiency_one_language_cpu_time: float
    shares: dict


def measure(d: Dims, rows_list: list[int], repeats: int, tokens: int = TOKENS) -> list[Row]:
    """The efficiency table: one row per batch size, every number from this run."""
    languages = list(LANGUAGE_NAMES)
    backend = build_backend(d, languages)
    out = []
    for rows in rows_list:
        generator = torch.Generator().manual_seed(rows)
        ids = torch.randint(5, 1000, (1, tokens), generator=generator).expand(rows, -1)
        attention = torch.ones_like(ids)
        mixed = languages[:rows]  # one language per row: the adapter runs once per language and layer
        single = languages[:1] * rows

        @torch.inference_mode()
        def forward(codes=mixed, ids=ids, attention=attention):
            backend.encode_rows(ids, attention, codes)

        @torch.inference_mode()
        def forward_one(ids=ids, attention=attention):
            backend.encode_rows(ids, attention, single)

        cpu: dict[str, list[float]] = {}
        times = interleaved(
            {"forward": forward, "forward_one": forward_one, "matmul": matmul_case(d, rows * tokens)}, repeats, cpu
        )
        flops, linear = encoder_flops(d, rows, tokens)
        med = {name: statistics.median(values) for name, values in times.items()}
        # Pairwise ratios from the same repeat, then their median: robust to a neighbour's burst.
        efficiency = statistics.median(
            (flops / f) / (linear / m) for f, m in zip(times["forward"], times["matmul"], strict=True)
        )
        efficiency_one = statistics.median(
            (flops / f) / (linear / m) for f, m in zip(times["forward_one"], times["matmul"], strict=True)
        )
        efficiency_cpu = statistics.median(
            (flops / f) / (linear / m) for f, m in zip(cpu["forward"], cpu["matmul"], strict=True)
        )
        efficiency_one_cpu = statistics.median(
            (flops / f) / (linear / m) for f, m in zip(cpu["forward_one"], cpu["matmul"], strict=True)
        )
        with torch.inference_mode():
            shares = profile_shares(forward)
        out.append(
            Row(
                rows=rows,
                gflop=flops / 1e9,
                forward_s=med["forward"],
                forward_one_language_s=med["forward_one"],
                matmul_s=med["matmul"],
                forward_gflops=flops / med["forward"] / 1e9,
                matmul_gflops=linear / med["matmul"] / 1e9,
                efficiency=efficiency,
                efficiency_one_language=efficiency_one,
                efficiency_cpu_time=efficiency_cpu,
                efficiency_one_language_cpu_time=efficiency_one_cpu,
                shares=shares,
            )
        )
        print(f"rows {rows}: {out[-1].efficiency:.0%}", file=sys.stderr, flush=True)
    return out


@dataclass
class WorkshopPass:
    requests: int
    rows: int
    languages: int  # distinct adapters in the pass
    padded_tokens: int  # rows x the longest text
    padding_share: float  # of the padded tokens
    forward_s: float  # median wall time of the pass, a language per request's adapter as asked
    forward_one_language_s: float  # the same rows all under one language
    forward_cpu_s: float
    forward_one_language_cpu_s: float
    adapter_share: float  # of the pass's operator time: the adapters' matrix products and GELU
    adapter_calls: int  # operator calls of those kinds in one pass


def adapter_share(fn: Callable[[], object], d: Dims) -> tuple[float, int]:
    """Share of one call's operator time in the language adapters' products and GELU (recognised by the
    adapter's width in their shapes), and how many such operator calls it made."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    overall, adapter, calls = 0.0, 0.0, 0
    kinds = CATEGORIES["matrix products"] + CATEGORIES["GELU"]
    for event in prof.key_averages(group_by_input_shape=True):
        overall += event.self_cpu_time_total
        shapes = [shape for shape in event.input_shapes if shape]
        if event.key in kinds and any(shape[-1] == d.adapter for shape in shapes):
            adapter += event.self_cpu_time_total
            calls += event.count
    return (adapter / overall if overall else 0.0), calls


def workshop_pass(d: Dims, repeats: int, requests: int = 10, seed: int = 0) -> WorkshopPass:
    """A workshop's shared pass: requests of 3-5 adapters (drawn from every language) on 10-20-token texts."""
    languages = list(LANGUAGE_NAMES)
    backend = build_backend(d, languages)
    rng = random.Random(seed)
    lengths = [rng.randint(10, 20) for _ in range(requests)]
    longest = max(lengths)
    ids = torch.randint(5, 1000, (requests, longest), generator=torch.Generator().manual_seed(seed))
    attention = torch.zeros_like(ids)
    for text, length in enumerate(lengths):
        attention[text, :length] = 1
    rows_text, rows_language = [], []
    for text in range(requests):
        for code in rng.sample(languages, rng.randint(3, 5)):
            rows_text.append(text)
            rows_language.append(code)
    positions = torch.tensor([[min(3, lengths[t] - 2)] for t in rows_text])  # one mask per row
    single = languages[:1] * len(rows_text)

    @torch.inference_mode()
    def forward(codes=rows_language):
        backend.encode_texts(ids, attention, rows_text, codes, positions)

    cpu: dict[str, list[float]] = {}
    times = interleaved({"forward": forward, "forward_one": lambda: forward(single)}, repeats, cpu)
    share, calls = adapter_share(forward, d)
    padded = len(rows_text) * longest
    real = sum(lengths[t] for t in rows_text)
    return WorkshopPass(
        requests=requests,
        rows=len(rows_text),
        languages=len(set(rows_language)),
        padded_tokens=padded,
        padding_share=1 - real / padded,
        forward_s=statistics.median(times["forward"]),
        forward_one_language_s=statistics.median(times["forward_one"]),
        forward_cpu_s=statistics.median(cpu["forward"]),
        forward_one_language_cpu_s=statistics.median(cpu["forward_one"]),
        adapter_share=share,
        adapter_calls=calls,
    )


def workshop_report(w: WorkshopPass, load: tuple[float, float]) -> str:
    return (
        f"A workshop's shared pass (load average {load[0]:.2f} before, {load[1]:.2f} after): {w.requests} requests, "
        f"{w.rows} rows under {w.languages} different adapters, {w.padded_tokens} row tokens of which "
        f"{w.padding_share:.0%} padding (packed: not computed): {w.forward_s:.3f} s ({w.forward_cpu_s:.3f} CPU s), "
        "against "
        f"{w.forward_one_language_s:.3f} s ({w.forward_one_language_cpu_s:.3f} CPU s) with every row under one "
        f"language; the adapters' products and GELU took {w.adapter_share:.0%} of its operator time "
        f"({w.adapter_calls} operator calls)."
    )


def report(d: Dims, rows: list[Row], host: dict, load: tuple[float, float]) -> str:
    lines = [
        f"Encoder efficiency, {d.name} shape ({d.layers} x {d.hidden}, FFN {d.ffn}, adapter {d.adapter}), "
        f"{TOKENS}-token rows; {host['threads']} torch threads on {host['cpu']}; load average {load[0]:.2f} before, "
        f"{load[1]:.2f} after. Efficiency: the forward's GFLOP/s over plain torch.matmul's on the same linear "
        "shapes and rows, median of per-repeat ratios, from wall time and from this process's CPU time (which "
        "does not count time other programs held the cores).",
        "",
        "| rows | GFLOP | forward (s) | forward GFLOP/s | matmul GFLOP/s | efficiency | one language for all rows "
        "| efficiency, CPU time | one language, CPU time "
        "| time in matrix products | GELU | LayerNorm | softmax, scaling, masking | copies | other |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r.shares
        lines.append(
            f"| {r.rows} | {r.gflop:.2f} | {r.forward_s:.3f} | {r.forward_gflops:.1f} | {r.matmul_gflops:.1f} | "
            f"**{r.efficiency:.0%}** | {r.efficiency_one_language:.0%} | {r.efficiency_cpu_time:.0%} | "
            f"{r.efficiency_one_language_cpu_time:.0%} | {s['matrix products']:.0%} | "
            f"{s['GELU']:.0%} | "
            f"{s['LayerNorm']:.0%} | {s['softmax, scaling, masking']:.0%} | {s['copies (reshapes, cat, split)']:.0%} | "
            f"{s['everything else']:.0%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shape: checks the benchmark runs, in seconds")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, the cores)")
    parser.add_argument("--workshop-only", action="store_true", help="only the workshop pass (kept in its own file)")
    parser.add_argument("--out", default=None, help="JSON file (default benchmarks/results/efficiency-<shape>.json)")
    args = parser.parse_args(argv)
    d = QUICK if args.quick else FULL
    if args.threads:
        torch.set_num_threads(args.threads)
    host = machine.describe()
    summary: dict = {"dims": asdict(d), "machine": host}
    if not args.workshop_only:
        before = os.getloadavg()[0]
        rows = measure(d, ROWS, args.repeats)
        load = (before, os.getloadavg()[0])
        table = report(d, rows, host, load)
        summary.update(load_average=load, rows=[asdict(r) for r in rows])
    before = os.getloadavg()[0]
    shared = workshop_pass(d, args.repeats)
    workshop_load = (before, os.getloadavg()[0])
    line = workshop_report(shared, workshop_load)
    summary.update(workshop_pass=asdict(shared), workshop_load_average=workshop_load)
    summary["markdown"] = line if args.workshop_only else f"{table}\n\n{line}"
    print(summary["markdown"])
    suffix = f"-{args.threads}-threads" if args.threads else ""
    suffix += "-workshop-pass" if args.workshop_only else ""
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"efficiency-{d.name}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"\nwrote {out}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
