"""Load time and peak memory of an xmod-base-shaped checkpoint fetched as pytorch_model.bin through the hub protocol.

    python -m benchmarks.hub_load            # xmod-base's shape: 852.7 M parameters, 3.41 GB in float32
    python -m benchmarks.hub_load --quick    # a tiny shape, seconds (the test suite runs this)

Builds a random XmodForMaskedLM of the shape (random weights cost what real ones do), saves it as
facebook/xmod-base's main branch holds it (config.json and a torch pickle, pytorch_model.bin, with
the mini model's tokenizer beside it, since XLM-R's 250k-word tokenizer cannot be built here),
serves it from the loopback hub emulator the tests use, and measures, each in a fresh process:

- ``download``: Explorer.from_pretrained against the emulated hub with an empty cache
  (download through huggingface_hub, then load), wall time and peak resident memory (VmHWM);
- ``cached``: the same, offline, from the cache the first run left (what a Space with
  preload_from_hub does at start-up).

Peak resident memory (VmHWM) is reported right after loading, after filling a mask in two languages and
after filling one in every language (every weight read once), against the float32 size of the weights;
the target is under 1.5x. The weights are memory-mapped from the cache, so they become resident as
they are first read, as file pages the kernel can reclaim and re-read.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from hub_emulator import HubEmulator  # noqa: E402

from benchmarks.bench import XMOD_BASE_LANGUAGES  # noqa: E402
from xmod_explorer import machine  # noqa: E402

FULL = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, vocab_size=250002)
QUICK = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=16000)
REPO = "facebook/xmod-base"

MEASURE = """
import json, sys, time
sys.path.insert(0, {root!r})
start = time.perf_counter()
from xmod_explorer import Explorer

def high_water():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

imported = time.perf_counter()
before = high_water()
explorer = Explorer.from_pretrained({repo!r})
loaded = time.perf_counter()
peak_load = high_water()
explorer.predict_masks("The <mask> opens every file.", ["en_XX", "de_DE"], top_k=5)
peak_two = high_water()
explorer.predict_masks("The <mask> opens every file.", explorer.languages, top_k=5)  # every weight read once
print(json.dumps({{"import_s": imported - start, "load_s": loaded - imported, "before_load": before,
                  "peak_load": peak_load, "peak_after_predict": peak_two, "peak_all_languages": high_water(),
                  "parameters": explorer.info().parameters, "folder": explorer.info().folder}}))
"""


def build(folder: Path, shape: dict) -> tuple[int, int]:
    """Save a random model of shape as config.json + pytorch_model.bin (+ the mini tokenizer); (parameters, bytes)."""
    from transformers import AutoTokenizer, XmodConfig, XmodForMaskedLM

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = XmodConfig(
        **shape,
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        adapter_reduction_factor=2,
        adapter_layer_norm=False,
        adapter_reuse_layer_norm=True,
        ln_before_adapter=True,
        pre_norm=False,
        languages=XMOD_BASE_LANGUAGES,
        default_language=None,
        architectures=["XmodForMaskedLM"],
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
    )
    model = XmodForMaskedLM(config).eval()
    parameters = sum(p.numel() for p in model.parameters())
    state = model.state_dict()
    state["roberta.embeddings.position_ids"] = torch.arange(514).expand((1, -1))  # as 2023's transformers saved it
    torch.save(state, folder / "pytorch_model.bin")
    del model, state
    config.save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(ROOT / "assets" / "xmod-mini")).save_pretrained(str(folder))
    return parameters, (folder / "pytorch_model.bin").stat().st_size


def measure(cache: Path, url: str | None) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "XMOD_"))}
    env.update({"HF_HUB_CACHE": str(cache), "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
    env.update({"HF_ENDPOINT": url, "HF_HUB_OFFLINE": "0"} if url else {"HF_HUB_OFFLINE": "1"})
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", MEASURE.format(root=str(ROOT), repo=REPO)],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shape: checks the benchmark runs, in seconds")
    parser.add_argument("--out", default=None, help="JSON file (default benchmarks/results/hub_load[-quick].json)")
    args = parser.parse_args(argv)
    shape = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="xmod-hub-load-") as tmp:
        source = Path(tmp) / "source"
        parameters, size = build(source, shape)
        print(f"built {parameters:,} parameters, pytorch_model.bin {size / 1e9:.2f} GB", file=sys.stderr)
        emulator = HubEmulator()
        try:
            emulator.add(REPO, {path.name: path for path in source.iterdir()})
            cache = Path(tmp) / "cache"
            download = measure(cache, emulator.url)
        finally:
            emulator.close()
        cached = measure(cache, None)
    float32 = parameters * 4
    result = {
        "shape": shape,
        "parameters": parameters,
        "file_bytes": size,
        "float32_bytes": float32,
        "download": download,
        "cached": cached,
        "peak_over_float32": {
            name: run["peak_all_languages"] / float32 for name, run in (("download", download), ("cached", cached))
        },
        "machine": machine.describe(),
    }
    lines = [
        f"{parameters / 1e6:.1f} M parameters, pytorch_model.bin {size / 1e9:.2f} GB "
        f"(float32 weights {float32 / 1e9:.2f} GB), {result['machine']['threads']} torch threads on "
        f"{result['machine']['cpu']}:",
        "",
        "| run | Explorer.from_pretrained (s) | peak RSS loading (GB) | after 2 languages (GB) | after all "
        f"{len(XMOD_BASE_LANGUAGES)} (GB) | peak / float32 size | whole process (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, run in (("download through the hub, then load", download), ("offline from the cache", cached)):
        peak = run["peak_all_languages"]
        lines.append(
            f"| {name} | {run['load_s']:.1f} | {run['peak_load'] / 1e9:.2f} | {run['peak_after_predict'] / 1e9:.2f} | "
            f"{peak / 1e9:.2f} | {peak / float32:.2f}x | {run['process_s']:.1f} |"
        )
    result["markdown"] = "\n".join(lines)
    print(result["markdown"])
    name = "hub_load-quick.json" if args.quick else "hub_load.json"
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
