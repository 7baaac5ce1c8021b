"""Which adapter fits, and the logit lens, on the embedded mini model's shipped held-out sentences.

    python -m benchmarks.identify            # writes benchmarks/results/mini-identify.json and prints a summary

For each sentence of assets/mini_heldout.tsv (its <mask> filled with the answer) it asks score_languages over
every adapter of the mini model and records the PLL's top-1, py3langid's guess among the same languages and the
time; accuracy of each with a 95 % Wilson interval. For each sentence as shipped (with its <mask>) it runs the
logit lens under every adapter and records the first layer where the adapters' top-1 tokens differ.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xmod_explorer import Explorer, machine  # noqa: E402
from xmod_explorer.defaults import ASSETS  # noqa: E402
from xmod_explorer.stats import wilson_interval  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "mini-identify.json"


def fragment(text: str, language: str) -> str:
    """The first three words, or the first eight characters in languages written without spaces."""
    return text[:8] if language in ("ja_XX", "zh_CN", "zh_TW") else " ".join(text.split()[:3])


def accuracy(hits: int, trials: int) -> dict:
    low, high = wilson_interval(hits, trials)
    return {"correct": hits, "of": trials, "accuracy": hits / trials, "wilson95": [low, high]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    explorer = Explorer.from_pretrained("mini")
    with open(ASSETS / "mini_heldout.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    load_before = os.getloadavg()
    explorer.score_languages(rows[0]["text"].replace("<mask>", rows[0]["answer"]))  # warm-up
    sentences = []
    for row in rows:
        text = row["text"].replace("<mask>", row["answer"])
        start = time.perf_counter()
        scores = explorer.score_languages(text)
        seconds = time.perf_counter() - start
        guess = scores.detector.language if scores.detector is not None else None
        sentences.append(
            {
                "language": row["language"],
                "text": text,
                "pll_top1": scores.best,
                "pll_ranking": scores.languages,
                "pll_per_token": [round(s.per_token, 4) for s in scores.scores],
                "detector": guess,
                "scored_tokens": len(scores.tokens),
                "forward_rows": scores.cost.forward_rows,
                "seconds": seconds,
            }
        )
    fragments = []
    for row in rows:
        text = fragment(row["text"].replace("<mask>", row["answer"]), row["language"])
        scores = explorer.score_languages(text)
        guess = scores.detector.language if scores.detector is not None else None
        fragments.append({"language": row["language"], "text": text, "pll_top1": scores.best, "detector": guess})
    lens = []
    for row in rows:
        result = explorer.logit_lens(row["text"], explorer.languages, top_k=1)
        for mask in result.masks:
            own = mask.settled_layer()[row["language"]]
            lens.append(
                {
                    "language": row["language"],
                    "divergence_layer": mask.divergence_layer(),
                    "own_settled": own,
                    "settled": mask.settled_layer(),
                    "distinct_top1": [
                        len({g.token_id for g in mask.top_tokens(layer).values()}) for layer in range(len(mask.layers))
                    ],
                    "own_final_probability": mask.final_probability[row["language"]],
                }
            )
    load_after = os.getloadavg()
    n = len(sentences)
    divergence = Counter(entry["divergence_layer"] for entry in lens)
    result = {
        "model": "mini",
        "languages": list(explorer.languages),
        "sentences": n,
        "pll_top1": accuracy(sum(s["pll_top1"] == s["language"] for s in sentences), n),
        "detector": {
            "name": "py3langid",
            **accuracy(sum(s["detector"] == s["language"] for s in sentences), n),
        },
        "fragments": {
            "what": "first three words (eight characters in ja/zh) of each sentence, answer filled in",
            "pll_top1": accuracy(sum(f["pll_top1"] == f["language"] for f in fragments), n),
            "detector": accuracy(sum(f["detector"] == f["language"] for f in fragments), n),
            "pll_confusions": dict(
                Counter(f"{f['language']}->{f['pll_top1']}" for f in fragments if f["pll_top1"] != f["language"])
            ),
            "detector_confusions": dict(
                Counter(f"{f['language']}->{f['detector']}" for f in fragments if f["detector"] != f["language"])
            ),
        },
        "pll_confusions": dict(
            Counter(f"{s['language']}->{s['pll_top1']}" for s in sentences if s["pll_top1"] != s["language"])
        ),
        "detector_confusions": dict(
            Counter(f"{s['language']}->{s['detector']}" for s in sentences if s["detector"] != s["language"])
        ),
        "pll_seconds_per_sentence": {
            "median": statistics.median(s["seconds"] for s in sentences),
            "min": min(s["seconds"] for s in sentences),
            "max": max(s["seconds"] for s in sentences),
        },
        "median_forward_rows": statistics.median(s["forward_rows"] for s in sentences),
        "logit_lens": {
            "masks": len(lens),
            "layers": explorer.info().layers,
            "first_divergence_layer_counts": {
                str(k): v for k, v in sorted(divergence.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))
            },
            "mean_distinct_top1_per_layer": [
                statistics.mean(entry["distinct_top1"][layer] for entry in lens)
                for layer in range(len(lens[0]["distinct_top1"]))
            ],
            "mean_own_final_probability_per_layer": [
                statistics.mean(entry["own_final_probability"][layer] for entry in lens)
                for layer in range(len(lens[0]["own_final_probability"]))
            ],
            "other_adapters_settled_layer_counts": {
                str(k): v
                for k, v in sorted(
                    Counter(
                        layer for entry in lens for code, layer in entry["settled"].items() if code != entry["language"]
                    ).items()
                )
            },
            "own_adapter_settled_layer_counts": {
                str(k): v for k, v in sorted(Counter(entry["own_settled"] for entry in lens).items())
            },
        },
        "load_average": {"before": load_before, "after": load_after},
        "machine": machine.describe(),
        "per_sentence": sentences,
        "per_mask": lens,
        "per_fragment": fragments,
    }
    Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("per_")}, indent=1))
    return result


if __name__ == "__main__":
    main()
