"""int8 against float32 on the CPU: fidelity on the embedded model's held-out sentences, and speed, in one run.

    python -m benchmarks.int8            # fidelity on xmod-mini; speed on xmod-mini and on xmod-base's shape
    python -m benchmarks.int8 --quick    # fidelity and speed on xmod-mini only (seconds)

Fidelity: every word piece of every shipped held-out sentence (assets/mini_heldout.tsv, the answer filled
in) is masked in turn and predicted under the sentence's own language adapter, once by the model loaded
in float32 and once in int8. Reported per language: top-1 agreement (the same most likely token) and the
largest difference in probability over float32's five most likely tokens. Speed: predict_masks with 5
adapters and with 81 (xmod-base's shape, random weights), the two models timed in turn.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.efficiency import interleaved  # noqa: E402
from xmod_explorer import Explorer, machine  # noqa: E402
from xmod_explorer.defaults import ASSETS  # noqa: E402
from xmod_explorer.engine import MaskRequest  # noqa: E402
from xmod_explorer.mini.examples import read_examples  # noqa: E402

# Offer int8 only where it agrees with float32 this often on the embedded model's held-out sentences.
REQUIRED_AGREEMENT = 0.98


@dataclass
class Fidelity:
    language: str
    masks: int
    agree: int
    largest_difference: float

    @property
    def agreement(self) -> float:
        return self.agree / self.masks


def masked_requests(explorer: Explorer) -> list[MaskRequest]:
    """One request per word piece of every held-out sentence (answer filled in), that piece masked."""
    tokenizer = explorer.tokenizer
    requests = []
    for example in read_examples(ASSETS / "mini_heldout.tsv"):
        text = example.text.replace("<mask>", example.answer)
        ids = explorer.tokenize(text)
        for position in range(1, len(ids) - 1):
            masked = list(ids)
            masked[position] = tokenizer.mask_token_id
            requests.append(MaskRequest(text, [example.language], 5, masked, [position]))
    return requests


def distributions(explorer: Explorer, requests: list[MaskRequest], batch: int = 64) -> torch.Tensor:
    """Full-vocabulary probabilities at each request's mask, (requests, vocabulary)."""
    out = []
    for start in range(0, len(requests), batch):
        chosen = requests[start : start + batch]
        input_ids, attention = explorer.pad([r.ids for r in chosen])
        positions = torch.tensor([r.positions for r in chosen])
        with torch.inference_mode():
            states = explorer.backend.encode_texts(
                input_ids, attention, list(range(len(chosen))), [r.languages[0] for r in chosen], positions
            )
            out.append(explorer.backend.mlm_logits(states[:, 0]).float().softmax(-1))
    return torch.cat(out)


def fidelity(reference: Explorer, quantized: Explorer) -> list[Fidelity]:
    """Per language: how often int8's top token is float32's, and the largest probability difference."""
    requests = masked_requests(reference)
    p, q = distributions(reference, requests), distributions(quantized, requests)
    top = p.topk(5, dim=-1).indices
    same = p.argmax(-1) == q.argmax(-1)
    gap = (p.gather(1, top) - q.gather(1, top)).abs().amax(-1)
    rows = {}
    for index, request in enumerate(requests):
        code = request.languages[0]
        row = rows.setdefault(code, Fidelity(code, 0, 0, 0.0))
        row.masks += 1
        row.agree += int(same[index])
        row.largest_difference = max(row.largest_difference, float(gap[index]))
    return list(rows.values())


def speed(folder: str, codes_list: list[list[str]], text: str, repeats: int) -> list[dict]:
    """predict_masks timed in float32 and int8 in turn, for each language list; speed-up as the median of
    per-repeat ratios."""
    full = Explorer.from_pretrained(folder, dtype="float32")
    int8 = Explorer.from_pretrained(folder, dtype="int8")
    out = []
    for codes in codes_list:
        times = interleaved(
            {
                "float32": lambda c=codes: full.predict_masks(text, c, 5),
                "int8": lambda c=codes: int8.predict_masks(text, c, 5),
            },
            repeats,
        )
        out.append(
            {
                "adapters": len(codes),
                "float32_s": statistics.median(times["float32"]),
                "int8_s": statistics.median(times["int8"]),
                "speedup": statistics.median(a / b for a, b in zip(times["float32"], times["int8"], strict=True)),
            }
        )
    return out


def report(rows: list[Fidelity], speeds: dict[str, list[dict]], load: tuple[float, float], host: dict) -> str:
    masks = sum(r.masks for r in rows)
    agree = sum(r.agree for r in rows)
    lines = [
        f"int8 (feed-forward layers) against float32, {host['threads']} torch threads on {host['cpu']}; load average "
        f"{load[0]:.2f} before, {load[1]:.2f} after.",
        "",
        f"Fidelity on xmod-mini's held-out sentences, every word piece masked in turn ({masks} masks): top-1 "
        f"agreement **{agree / masks:.1%}** overall; largest probability difference "
        f"{max(r.largest_difference for r in rows):.3f}.",
        "",
        "| language | masks | top-1 agreement | largest probability difference |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r.language} | {r.masks} | {r.agreement:.1%} | {r.largest_difference:.3f} |" for r in rows]
    lines += ["", "| model | adapters | float32 (s) | int8 (s) | speed-up |", "|---|---|---|---|---|"]
    for name, measured in speeds.items():
        lines += [
            f"| {name} | {m['adapters']} | {m['float32_s']:.3f} | {m['int8_s']:.3f} | **{m['speedup']:.2f}x** |"
            for m in measured
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="xmod-mini only (seconds)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="JSON file (default benchmarks/results/int8.json)")
    parser.add_argument("--folder", default=None, help="a model of xmod-base's shape to use instead of building one")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    host = machine.describe()
    before = os.getloadavg()[0]
    reference, quantized = (
        Explorer.from_pretrained("mini", dtype="float32"),
        Explorer.from_pretrained("mini", dtype="int8"),
    )
    rows = fidelity(reference, quantized)
    mini_text = "Click the <mask> to save the document."
    speeds = {"xmod-mini": speed("mini", [reference.languages[:5], reference.languages], mini_text, args.repeats)}
    del reference, quantized
    if not args.quick:
        from transformers import AutoTokenizer

        from benchmarks.bench import FULL, build_model, fourteen_token_text

        with tempfile.TemporaryDirectory(prefix="xmod-int8-") as tmp:
            if args.folder:
                folder, text = Path(args.folder), fourteen_token_text(AutoTokenizer.from_pretrained(args.folder))
            else:
                folder, text = build_model(FULL, Path(tmp) / "model")
            speeds["xmod-base shape"] = speed(str(folder), [FULL.languages[:5], FULL.languages], text, args.repeats)
    load = (before, os.getloadavg()[0])
    table = report(rows, speeds, load, host)
    print(table)
    summary = {
        "machine": host,
        "load_average": load,
        "fidelity": [{**r.__dict__, "agreement": r.agreement} for r in rows],
        "agreement": sum(r.agree for r in rows) / sum(r.masks for r in rows),
        "speed": speeds,
        "markdown": table,
    }
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / "int8.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"\nwrote {out}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
