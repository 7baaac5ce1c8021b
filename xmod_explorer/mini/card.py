"""Write the embedded model's card (README.md) and its languages x adapters heatmap.

Everything in the card is read from files the other steps wrote: the corpus manifest, the
run's settings, environment and log, export.json and eval.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import plotly.graph_objects as go

from xmod_explorer.languages import LANGUAGE_NAMES
from xmod_explorer.mini.corpus import MIN_CHARS_UNSPACED, MIN_WORDS
from xmod_explorer.mini.evaluate import AdapterMatrix

HEATMAP = "eval_heatmap.png"


def _read_json(path: Path) -> dict:
    """A JSON file's content, or {} when it is missing."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _last_log(run: Path) -> dict:
    """The final record of the run's JSON-lines log."""
    lines = (run / "log.jsonl").read_text(encoding="utf-8").splitlines()
    return json.loads([line for line in lines if line.strip()][-1])


def heatmap_figure(matrix: AdapterMatrix) -> go.Figure:
    """Plotly heatmap of masked accuracy, text language (rows) x adapter (columns)."""
    text = [[f"{value:.1f}" for value in row] for row in matrix.accuracy]
    figure = go.Figure(
        go.Heatmap(
            z=matrix.accuracy,
            x=matrix.adapters,
            y=matrix.languages,
            text=text,
            texttemplate="%{text}",
            colorscale="Viridis",
            colorbar={"title": {"text": "accuracy %"}},
        )
    )
    figure.update_layout(
        title="xmod-mini: held-out masked-token accuracy (%), text language x adapter",
        xaxis_title="adapter used",
        yaxis_title="language of the text",
        yaxis_autorange="reversed",
        width=900,
        height=780,
    )
    return figure


def write_heatmap(matrix: AdapterMatrix, path: Path) -> None:
    """Render the heatmap to PNG with kaleido, pointing it at Debian's chromium when present."""
    if Path("/usr/bin/chromium").exists():
        os.environ.setdefault("BROWSER_PATH", "/usr/bin/chromium")
    heatmap_figure(matrix).write_image(str(path), scale=1)


def markdown_table(matrix: AdapterMatrix, metric: str, digits: int = 1) -> str:
    """The matrix as a markdown table; the matching adapter's cell is bold, each row's best is marked *."""
    values = getattr(matrix, metric)
    header = "| text \\ adapter | " + " | ".join(matrix.adapters) + " |"
    rule = "|---|" + "---:|" * len(matrix.adapters)
    lines = [header, rule]
    best = matrix.best_adapters()
    for language, row, winner in zip(matrix.languages, values, best):
        cells = []
        for adapter, value in zip(matrix.adapters, row):
            cell = f"{value:.{digits}f}"
            if adapter == language:
                cell = f"**{cell}**"
            if adapter == winner and metric == "accuracy":
                cell += "*"
            cells.append(cell)
        lines.append(f"| {language} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_card(model_dir: str | Path, corpus: str | Path, run: str | Path) -> Path:
    """Write model_dir/README.md and model_dir/eval_heatmap.png from the saved artefacts."""
    model_dir, corpus, run = Path(model_dir), Path(corpus), Path(run)
    evaluation = _read_json(model_dir / "eval.json")
    matrix = AdapterMatrix(**{k: evaluation[k] for k in AdapterMatrix.__dataclass_fields__})
    write_heatmap(matrix, model_dir / HEATMAP)
    manifest = _read_json(corpus / "manifest.json")
    settings = _read_json(run / "settings.json")
    environment = _read_json(run / "environment.json")
    exported = _read_json(model_dir / "export.json")
    config = _read_json(model_dir / "config.json")
    tokenizer = _read_json(model_dir / "tokenizer.json")
    last = _last_log(run)
    params = _parameter_counts(config)
    card = _render(matrix, evaluation, manifest, settings, environment, exported, config, tokenizer, last, params)
    path = model_dir / "README.md"
    path.write_text(card, encoding="utf-8")
    return path


def _parameter_counts(config: dict) -> dict[str, int]:
    """Total, shared and per-language-adapter parameter counts computed from the config."""
    hidden, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    bottleneck = hidden // config["adapter_reduction_factor"]
    adapter = layers * (hidden * bottleneck + bottleneck + bottleneck * hidden + hidden)
    ffn = config["intermediate_size"]
    layer = 4 * (hidden * hidden + hidden) + 2 * hidden + (hidden * ffn + ffn) + (ffn * hidden + hidden) + 2 * hidden
    embeddings = (vocab + config["max_position_embeddings"] + config["type_vocab_size"]) * hidden + 2 * hidden
    # The LM head's decoder shares the word embeddings; its dense layer, LayerNorm and bias are its own.
    head = hidden * hidden + hidden + 2 * hidden + vocab
    shared = embeddings + layers * layer + head
    return {"total": shared + adapter * len(config["languages"]), "shared": shared, "per_adapter": adapter}


def _render(matrix, evaluation, manifest, settings, environment, exported, config, tokenizer, last, params) -> str:
    """The card's markdown text."""
    summary = evaluation["summary"]
    languages = config["languages"]
    corpus_rows = []
    for lang_id, code in enumerate(languages):
        entry = manifest.get("languages", {}).get(code, {})
        sources = ", ".join(f"`{s['package']}` {s['version']}" for s in entry.get("sources", []))
        corpus_rows.append(
            f"| {lang_id} | {code} | {LANGUAGE_NAMES.get(code, code)} | {entry.get('train', 0):,} | "
            f"{entry.get('heldout', 0):,} | {entry.get('words', 0):,} | {entry.get('characters', 0):,} | {sources} |"
        )
    vocab = len(tokenizer.get("model", {}).get("vocab", [])) + len(
        [t for t in tokenizer.get("added_tokens", []) if t["content"] == "<mask>"]
    )
    steps = last["step"]
    tokens_seen = last.get("tokens_seen", 0)
    rows = settings["rows_per_language"] * len(languages)
    minutes = last["elapsed_s"] / 60
    loss_by_language = " · ".join(f"{k} {v:.2f}" for k, v in last["loss_by_language"].items())
    sizes = exported.get("files_bytes", {})
    total_mb = sum(sizes.values()) / 1e6
    wins = (
        "yes, in every row"
        if summary["matching_best_in_every_row"]
        else (
            "no: "
            + ", ".join(f"{k} text is best with {v}" for k, v in summary["rows_where_another_adapter_wins"].items())
        )
    )
    iso = sorted({code.split("_")[0] for code in languages})
    second = {
        lang: max((a for a in matrix.adapters if a != lang), key=lambda a: row[matrix.adapters.index(a)])
        for lang, row in zip(matrix.languages, matrix.accuracy)
    }
    runners_up = ", ".join(f"{lang} → {other}" for lang, other in second.items())
    pairs = sorted({tuple(sorted((a, b))) for a, b in second.items() if second.get(b) == a})
    mutual = f" Pairs that are each other's runner-up: {', '.join(f'{a} and {b}' for a, b in pairs)}." if pairs else ""
    return f"""---
language: [{", ".join(iso)}]
library_name: transformers
pipeline_tag: fill-mask
tags: [xmod, masked-lm, language-adapters]
---

# xmod-mini

A small X-MOD masked language model trained from scratch on one CPU for this project: it is the
explorer's offline default, so every feature works without the Hugging Face hub. It has the
same structure as `facebook/xmod-base` (a shared post-norm transformer with one bottleneck
adapter per language after each feed-forward block), just much smaller, and {len(languages)} of
xmod-base's language codes. The weights are new; nothing comes from xmod-base.

Training followed the X-MOD paper's pre-training recipe: the shared weights and all language
adapters learn together from the first step, and each row of a batch goes through the adapter
of its own language (`lang_ids`, one id per row). An adapter therefore only ever sees its
language, which is what makes it language-specific (the evaluation below checks this).

It knows one domain: software documentation (LibreOffice help). Expect sensible fills for
sentences about menus, cells, documents and dialogs, and little else.

## Use

```python
import torch
from transformers import AutoTokenizer, XmodForMaskedLM

model = XmodForMaskedLM.from_pretrained("assets/xmod-mini")
tokenizer = AutoTokenizer.from_pretrained("assets/xmod-mini")
batch = tokenizer(["Klicken Sie auf <mask>."], return_tensors="pt")
lang_id = model.config.languages.index("de_DE")
with torch.no_grad():
    logits = model(**batch, lang_ids=torch.tensor([lang_id])).logits
position = (batch.input_ids[0] == tokenizer.mask_token_id).nonzero()[0, 0]
print(tokenizer.convert_ids_to_tokens(logits[0, position].topk(5).indices))
```

There is no default language (`default_language` is null): always pass `lang_ids`, one id per
row, where the id is the index of the code in `config.languages`.

## Languages and data

Text comes from the HTML help pages of Debian 12's LibreOffice help packages: the text of every
`<p>` element, whitespace-normalised, deduplicated, without paragraphs under {MIN_WORDS} words
(under {MIN_CHARS_UNSPACED} characters for Japanese and Chinese), and without untranslated English left in the
translations (a paragraph equal to an English paragraph of the same page, or, in a non-Latin
language, one whose letters are mostly Latin). Much of the Hindi help is untranslated, so
Hindi also gets LibreOffice's Hindi user-interface messages (same filters). A hash of each
paragraph puts 2% of them in a held-out split that training never sees. The pages are MPL-2.0
licensed (see each package's `copyright` file).

| lang id | code | language | train paragraphs | held-out | words | characters | source (Debian package, version) |
|---:|---|---|---:|---:|---:|---:|---|
{chr(10).join(corpus_rows)}

The pages translate one another, so the languages share content; Hindi has far less text than
the rest, and batches are balanced by language, so Hindi text repeats most often in training.

## Tokenizer

Unigram (sentencepiece-style, Metaspace `▁`), {vocab:,} pieces, trained with the `tokenizers`
library on {settings["tokenizer_sample_per_language"]:,} training paragraphs per language (fewer for
languages that have fewer). Special ids follow XLM-R: `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3,
`<mask>`={vocab - 1} (last). Japanese and Chinese, written without spaces, are split into pieces
of one to a few characters. `model_max_length` is 512. On the held-out split:

| language | characters per token | `<unk>` tokens |
|---|---:|---:|
{chr(10).join(f"| {lang} | {s['chars_per_token']:.2f} | {s['unk_percent']:.2f}% |" for lang, s in evaluation.get("tokenizer_on_heldout", {}).items())}

## Architecture

| setting | value |
|---|---|
| layers / hidden / heads / FFN | {config["num_hidden_layers"]} / {config["hidden_size"]} / {config["num_attention_heads"]} / {config["intermediate_size"]} |
| max positions | {config["max_position_embeddings"]} (512 tokens usable) |
| adapters | bottleneck {config["hidden_size"]} → {config["hidden_size"] // config["adapter_reduction_factor"]} → {config["hidden_size"]} (reduction factor {config["adapter_reduction_factor"]}), `pre_norm={config["pre_norm"]}`, `adapter_layer_norm={config["adapter_layer_norm"]}`, `adapter_reuse_layer_norm={config["adapter_reuse_layer_norm"]}`, `ln_before_adapter={config["ln_before_adapter"]}` (as xmod-base) |
| parameters | {params["total"]:,} in all: {params["shared"]:,} shared (LM head tied to the word embeddings) + {params["per_adapter"]:,} per language adapter |
| stored as | {exported.get("dtype", "?")} safetensors; {total_mb:.1f} MB for the whole folder at export |

## Training

| setting | value |
|---|---|
| steps | {steps:,}, each with {settings["rows_per_language"]} rows per language ({rows} rows, sorted by language) of up to {settings["seq_len"]} tokens{f"; {tokens_seen / 1e6:.1f} M tokens in all" if tokens_seen else ""} |
| packing | several paragraphs per row, `<s> a </s><s> b </s>...`, each attending only to itself and numbering its own positions from 2, so training sees what inference sees (one text per row) without padding |
| positions | learned absolute embeddings as in xmod-base, {"initialised as sinusoids (so neighbouring tokens are easy to find early on)" if settings.get("sinusoidal_positions") else "randomly initialised"} |
| objective | masked LM, 15% of tokens (80% `<mask>`, 10% random, 10% unchanged); the LM head runs only at masked positions |
| optimiser | AdamW (β = 0.9, 0.98; weight decay {settings["weight_decay"]}), peak learning rate {settings["learning_rate"]}, {settings["warmup_steps"]} warm-up steps then cosine decay to a tenth; gradient clipping 1.0; dropout {settings["dropout"]}; seed {settings["seed"]} |
| time | {minutes:.0f} minutes on {environment.get("torch_threads", "?")} torch threads; CPU: {environment.get("cpu", "?")}, {environment.get("cpu_count", "?")} cores, shared with other work; torch {environment.get("torch", "?")} CPU, transformers {environment.get("transformers", "?")} |
| final training loss | {last["loss"]:.3f} (mean of the last {settings["log_every"]} steps); by language: {loss_by_language} |

## Evaluation: do the adapters mean something?

Held-out paragraphs (up to {evaluation["heldout_sample"]["max_per_language"]} per language), each
masked {evaluation["heldout_sample"]["mask_rounds"]} times with a fixed seed (15% of tokens, all replaced by `<mask>`), scored under *every*
language's adapter. Cells are masked-token top-1 accuracy (%); rows are the language of the text,
columns the adapter used. The matching adapter is in bold; `*` marks each row's best.

![heatmap]({HEATMAP})

{markdown_table(matrix, "accuracy")}

Matching adapter best in its row: **{wins}**. Mean accuracy with the matching adapter
{summary["mean_accuracy_matching"]:.1f}%, with a mismatched one {summary["mean_accuracy_mismatched"]:.1f}%;
mean perplexity (exp of the mean masked-token NLL) {summary["mean_perplexity_matching"]:.1f} matching vs
{summary["mean_perplexity_mismatched"]:.1f} mismatched.

Runner-up adapter for each language's text: {runners_up}.{mutual}

Perplexity for the same cells:

{markdown_table(matrix, "perplexity")}

Masked tokens per row: {", ".join(f"{lang} {n:,}" for lang, n in zip(matrix.languages, matrix.masked_tokens))}.

Float16 check at export (matching adapters, up to {exported.get("heldout_per_language", "?")} held-out
paragraphs per language): accuracy {exported.get("accuracy_float32", "?")}% in float32 and
{exported.get("accuracy_float16_weights", "?")}% with the weights rounded to float16, hence stored as
{exported.get("dtype", "?")} (`from_pretrained` loads it as float32 unless given a dtype).

## Limits

A toy next to xmod-base: {params["total"] / 1e6:.1f} M parameters, {minutes:.0f} minutes of CPU, one narrow
domain. Its fills are plausible for help-text sentences and weak anywhere else. It exists so that
the explorer's views (per-adapter predictions, hidden-state similarity across adapters) have a
real X-MOD to show offline, including the effect of choosing the wrong adapter.

## Rebuild

```sh
python -m xmod_explorer.mini corpus --out data/corpus        # apt-get download + dpkg -x, about a minute
python -m xmod_explorer.mini train --corpus data/corpus --out runs/mini --steps {settings["steps"]} --warmup-steps {settings["warmup_steps"]} --rows-per-language {settings["rows_per_language"]} --seq-len {settings["seq_len"]}
python -m xmod_explorer.mini export runs/mini assets/xmod-mini --corpus data/corpus
python -m xmod_explorer.mini evaluate assets/xmod-mini --corpus data/corpus --run runs/mini  # eval.json, this card
python -m xmod_explorer.mini examples assets/xmod-mini --corpus data/corpus  # assets/mini_*.tsv
```

Training resumes from `runs/mini/checkpoint` when restarted with the same settings.
"""
