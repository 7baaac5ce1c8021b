"""Write the embedded model's card (README.md) and its languages x adapters heatmap.

Everything in the card is read from files the other steps wrote: the corpus manifest, the
pre-training record (training.json in the model folder, or the run folder's settings, environment
and log), export.json, post_hoc.json (languages added after pre-training) and eval.json.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go

from xmod_explorer.languages import LANGUAGE_NAMES
from xmod_explorer.mini.corpus import LATIN_SCRIPT, MIN_CHARS_UNSPACED, MIN_WORDS
from xmod_explorer.mini.evaluate import AdapterMatrix
from xmod_explorer.mini.post_hoc import ORIGINAL_HASHES, POST_HOC_RECORD
from xmod_explorer.mini.train import TRAINING_RECORD, training_record

HEATMAP = "eval_heatmap.png"


def _read_json(path: Path) -> dict:
    """A JSON file's content, or {} when it is missing."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def heatmap_figure(matrix: AdapterMatrix, post_hoc: Sequence[str] = ()) -> go.Figure:
    """Plotly heatmap of masked accuracy, text language (rows) x adapter (columns); added languages marked."""
    text = [[f"{value:.1f}" for value in row] for row in matrix.accuracy]

    def label(code: str) -> str:
        return f"{code} (post hoc)" if code in post_hoc else code

    figure = go.Figure(
        go.Heatmap(
            z=matrix.accuracy,
            x=[label(code) for code in matrix.adapters],
            y=[label(code) for code in matrix.languages],
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
        width=900 + 40 * len(post_hoc),
        height=780 + 40 * len(post_hoc),
    )
    return figure


def write_heatmap(matrix: AdapterMatrix, path: Path, post_hoc: Sequence[str] = ()) -> None:
    """Render the heatmap to PNG with kaleido, pointing it at Debian's chromium when present."""
    if Path("/usr/bin/chromium").exists():
        os.environ.setdefault("BROWSER_PATH", "/usr/bin/chromium")
    heatmap_figure(matrix, post_hoc).write_image(str(path), scale=1)


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


def write_card(model_dir: str | Path, corpus: str | Path, run: str | Path | None = None) -> Path:
    """Write model_dir/README.md and model_dir/eval_heatmap.png from the saved artefacts.

    The pre-training record comes from the run folder when one is given, else from the model
    folder's training.json.
    """
    model_dir, corpus = Path(model_dir), Path(corpus)
    evaluation = _read_json(model_dir / "eval.json")
    matrix = AdapterMatrix(**{k: evaluation[k] for k in AdapterMatrix.__dataclass_fields__})
    config = _read_json(model_dir / "config.json")
    post_hoc = list(config.get("post_hoc_languages") or [])
    write_heatmap(matrix, model_dir / HEATMAP, post_hoc)
    manifest = _read_json(corpus / "manifest.json")
    training = training_record(run) if run else _read_json(model_dir / TRAINING_RECORD)
    exported = _read_json(model_dir / "export.json")
    tokenizer = _read_json(model_dir / "tokenizer.json")
    params = _parameter_counts(config)
    card = _render(
        matrix,
        evaluation,
        manifest,
        training["settings"],
        training["environment"],
        exported,
        config,
        tokenizer,
        training["last_log"],
        params,
    )
    card += _post_hoc_section(_read_json(model_dir / POST_HOC_RECORD), evaluation, config)
    card += _rebuild_section(training["settings"], post_hoc)
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
    added = list(config.get("post_hoc_languages") or [])
    pretrained = [code for code in languages if code not in added]
    corpus_rows = []
    for lang_id, code in enumerate(languages):
        entry = manifest.get("languages", {}).get(code, {})
        sources = ", ".join(f"`{s['package']}` {s['version']}" for s in entry.get("sources", []))
        name = LANGUAGE_NAMES.get(code, code) + (" (added post hoc)" if code in added else "")
        corpus_rows.append(
            f"| {lang_id} | {code} | {name} | {entry.get('train', 0):,} | "
            f"{entry.get('heldout', 0):,} | {entry.get('words', 0):,} | {entry.get('characters', 0):,} | {sources} |"
        )
    vocab = len(tokenizer.get("model", {}).get("vocab", [])) + len(
        [t for t in tokenizer.get("added_tokens", []) if t["content"] == "<mask>"]
    )
    steps = last["step"]
    tokens_seen = last.get("tokens_seen", 0)
    rows = settings["rows_per_language"] * len(settings["languages"])
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
    matching, mismatched = summary["matching"], summary["mismatched"]
    intervals = matrix.accuracy_intervals()
    row_lines = []
    for i, lang in enumerate(matrix.languages):
        own = matrix.adapters.index(lang)
        other = matrix.adapters.index(second[lang])
        words = evaluation.get("whole_words", {}).get(lang, [None])[0]
        row_lines.append(
            f"| {lang} | {matrix.accuracy[i][own]:.1f} [{intervals[i][own][0]:.1f}, {intervals[i][own][1]:.1f}] | "
            f"{second[lang]} {matrix.accuracy[i][other]:.1f} [{intervals[i][other][0]:.1f}, {intervals[i][other][1]:.1f}] | "
            f"{matrix.masked_tokens[i]:,} | "
            + (f"{_interval(words)} of {words['candidates']:,}" if words else "")
            + " |"
        )
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
xmod-base's language codes{_added_clause(added)}. The weights are new; nothing comes from xmod-base.

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
| parameters | {params["total"]:,} in all: {params["shared"]:,} shared (LM head tied to the word embeddings) + {params["per_adapter"]:,} per language adapter ({len(languages)} adapters) |
| stored as | {exported.get("dtype", "?")} safetensors; {total_mb:.1f} MB for the whole folder at export{" (before any language was added)" if added else ""} |

## Training

{"The pre-training of the " + str(len(pretrained)) + " original languages; the added language's training is described further down." if added else ""}

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
columns the adapter used. The matching adapter is in bold; `*` marks each row's best.{" Languages marked post hoc were added after pre-training (see below)." if added else ""}

![heatmap]({HEATMAP})

{markdown_table(matrix, "accuracy")}

For the {len(summary["languages"])} pre-trained languages, the matching adapter is the best of all {len(matrix.adapters)} in its row: **{wins}**.
Masked-token accuracy pooled over their masked tokens{" (the added language's row and column left out)" if added else ""}: with the
text's own adapter **{matching["accuracy"]:.1f}%** (95% interval {matching["accuracy_ci95"][0]:.1f} to {matching["accuracy_ci95"][1]:.1f}, {matching["tokens"]:,} tokens),
with another language's adapter **{mismatched["accuracy"]:.1f}%** ({mismatched["accuracy_ci95"][0]:.1f} to {mismatched["accuracy_ci95"][1]:.1f}, {mismatched["tokens"]:,} token-adapter pairs). The
unweighted means over languages are {summary["mean_accuracy_matching"]:.1f}% and {summary["mean_accuracy_mismatched"]:.1f}%. Perplexity, as exp of the
mean negative log-likelihood per masked token pooled over the same tokens: **{matching["perplexity"]:,.1f}** with the own adapter
vs **{mismatched["perplexity"]:,.1f}** with another.

Intervals are Wilson 95% score intervals over masked tokens. They treat the tokens as independent, which
they are not quite (tokens of one paragraph, the same paragraph masked twice, and in the mismatched figure the
same tokens under {len(summary["languages"]) - 1} other adapters), so they are somewhat too narrow.

Each row's own adapter against its best other adapter (accuracy %, Wilson 95% interval), and the own
adapter on whole words: every word of the language's held-out sentences that is one vocabulary piece of at least
four letters (two characters in Japanese and Chinese), masked one at a time, as the app's examples are chosen.
Per-token accuracy over random pieces rewards a tokenizer that cuts a language into small, easily guessed
fragments; whole words do not.

| text | own adapter | best other adapter | masked tokens | whole words, own adapter (of how many) |
|---|---:|---:|---:|---:|
{chr(10).join(row_lines)}

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

"""


def _added_clause(added: Sequence[str]) -> str:
    """', the last one added after pre-training' or similar; empty when nothing was added."""
    if not added:
        return ""
    names = ", ".join(f"{code} ({LANGUAGE_NAMES.get(code, code)})" for code in added)
    return f"; {names} {'was' if len(added) == 1 else 'were'} added after pre-training, with the rest frozen"


def _interval(entry: dict, unit: str = "") -> str:
    """'29.6 [27.9, 31.4]' from an entry with accuracy and accuracy_ci95."""
    low, high = entry["accuracy_ci95"]
    return f"{entry['accuracy']:.1f}{unit} [{low:.1f}, {high:.1f}]"


def _post_hoc_section(record: dict, evaluation: dict, config: dict) -> str:
    """The card's account of each language added after pre-training: data, initialisations, result."""
    parts = []
    for code, entry in record.items():
        result = evaluation.get("post_hoc", {}).get(code)
        if result is None:
            continue
        settings, corpus, selection = entry["settings"], entry["corpus"], entry["selection_text"]
        sources = ", ".join(f"`{s['package']}` {s['version']}" for s in corpus.get("sources", []))
        tokenizer = evaluation.get("tokenizer_on_heldout", {})
        cpt = tokenizer.get(code, {}).get("chars_per_token")
        others_cpt = [v["chars_per_token"] for k, v in tokenizer.items() if k in entry["added_to"]]
        zero = entry["original_adapters_on_selection_text"]
        closest = max(zero, key=zero.get)
        if code in LATIN_SCRIPT:
            others_cpt = [
                v["chars_per_token"] for k, v in tokenizer.items() if k in entry["added_to"] and k in LATIN_SCRIPT
            ]
        script = "Latin-script original" if code in LATIN_SCRIPT else "original"
        rows_of = dict(zip(evaluation["languages"], evaluation["masked_tokens"]))
        comparison = _candidate_comparison(entry)
        candidate_rows = []
        for name, candidate in entry["candidates"].items():
            start, end = candidate["curve"][0], candidate["curve"][-1]
            low, high = candidate["selection_accuracy_ci95"]
            candidate_rows.append(
                f"| {name}{' (chosen)' if name == entry['chosen'] else ''} | {start['accuracy']:.1f} | "
                f"{end['accuracy']:.1f} [{low:.1f}, {high:.1f}] | {end['perplexity']:,.1f} | "
                f"{candidate['final_training_loss']:.3f} | {candidate['seconds'] / 60:.1f} |"
            )
        originals = sorted(result["original_adapters"].items(), key=lambda item: -item[1]["accuracy"])
        adapter_rows = [
            f"| **{code} (added)** | **{_interval(result['own_adapter'])}** | {result['own_adapter']['perplexity']:,.1f} |"
        ]
        adapter_rows += [f"| {other} | {_interval(value)} | {value['perplexity']:,.1f} |" for other, value in originals]
        own, best = result["own_adapter"], result["original_adapters"][result["best_original_adapter"]]
        reference = result["original_languages_own_adapter"]
        low_range, high_range = result["original_languages_own_adapter_range"]
        verdict = (
            "**yes**: the new adapter's interval lies above every original adapter's"
            if result["beats_every_original"]
            else "**no**: its interval overlaps at least one original adapter's"
        )
        environment = entry["environment"]
        threads = environment.get("torch_threads", "?")
        float16 = entry["float16_check"]
        name = LANGUAGE_NAMES.get(code, code)
        parts.append(f"""
## Adding a language after pre-training: {code} ({name})

X-MOD's claim is that a language can be added after pre-training by training only a new adapter, with no
effect on the languages already there. {code} was added this way: one new adapter in every layer
({entry["trainable_parameters"]:,} parameters, lang id {config["languages"].index(code)}, appended so every original lang id is unchanged),
trained on {name} text while every other weight stayed frozen: the embeddings, the shared layers, the LM head
and all {len(entry["added_to"])} original adapters. The config marks it in `post_hoc_languages`.

**Nothing else moved.** The shipped file keeps every original tensor byte for byte: `{ORIGINAL_HASHES}`
holds the SHA-256 of each of them from before the addition, the writer checked the new file against it,
and the project's tests do again (`tests/test_mini.py`), along with the original languages' mask fills,
which match those of the model before the addition. For its original languages the model computes exactly
what it computed before; only the new column of the matrix (their text under the new adapter) is new.

**Data.** {corpus.get("train", 0):,} training and {corpus.get("heldout", 0):,} held-out paragraphs of the {name} LibreOffice help
({sources}), cleaned and split exactly as the other languages' text. The tokenizer was not retrained (its
embeddings are frozen too), so {name} is cut into the existing pieces: {cpt} characters per token on its held-out
text, against {min(others_cpt):.2f} to {max(others_cpt):.2f} for the {script} languages.

**Initialisation.** The two options, each trained with the same budget and batches ({settings["steps"]} steps of
{settings["rows"]} rows of up to {settings["seq_len"]} tokens, as many rows as each original adapter saw in pre-training) and
scored on {selection["paragraphs"]} held-out {name} paragraphs kept out of the evaluation sample ({selection["masked_tokens"]:,} masked tokens).
The adapter copied is the original one that fills {name} masks best before any training ({closest}, {zero[closest]:.1f}%).

| initialisation | accuracy at step 0 (%) | after {settings["steps"]} steps (%, 95% interval) | perplexity | final training loss | minutes |
|---|---:|---:|---:|---:|---:|
{chr(10).join(candidate_rows)}

{comparison}

Training: AdamW on the new adapter only (β = 0.9, 0.98; weight decay {settings["weight_decay"]}), peak learning rate
{settings["learning_rate"]}, {settings["warmup_steps"]} warm-up steps then cosine decay to a tenth, gradient clipping 1.0, seed {settings["seed"]};
{entry["seconds"] / 60:.1f} minutes for both initialisations (with their evaluations) on {threads} torch thread{"" if threads == 1 else "s"}, CPU: {environment.get("cpu", "?")}, shared with other work.
Float16 rounding of the new adapter (it is stored as float16 like the rest): {float16["accuracy_float32"]:.2f}% in float32,
{float16["accuracy_float16_weights"]:.2f}% rounded, on the selection text.

**The new adapter works.** On the evaluation sample (the {code} row of the matrix above:
{evaluation["sentences"][evaluation["languages"].index(code)]} held-out paragraphs, {result["masked_tokens"]:,} masked tokens), accuracy in % with Wilson 95% intervals:

| adapter used on {name} text | accuracy (%) | perplexity |
|---|---:|---:|
{chr(10).join(adapter_rows)}

Does the new adapter beat every original adapter? {verdict} (best original: {result["best_original_adapter"]},
{_interval(best)}). It gets {own["accuracy"]:.1f}% where the original languages get
{reference["accuracy"]:.1f}% [{reference["accuracy_ci95"][0]:.1f}, {reference["accuracy_ci95"][1]:.1f}] with their own adapters (pooled; from {low_range:.1f}% to {high_range:.1f}% by language).
That is not a like-for-like comparison: per-token accuracy depends on the tokenization, and {name}, which the
tokenizer never saw, is cut into many short pieces ({rows_of[code]:,} masked tokens in the same number of
paragraphs as {closest}'s {rows_of.get(closest, 0):,}), and pieces inside a word tend to be easier to guess.
{_whole_word_sentence(evaluation, code, name, entry["added_to"])} All of it is one domain (translations of the
same help pages), not a measure of {name} elsewhere.
""")
    return "".join(parts)


def _rebuild_section(settings: dict, added: Sequence[str]) -> str:
    """The exact commands that rebuild the folder, from the corpus to the card."""
    add_lines = "".join(
        f"python -m xmod_explorer.mini add-language {code} --corpus data/corpus  # about 15 minutes on one thread\n"
        for code in added
    )
    return f"""
## Rebuild

```sh
python -m xmod_explorer.mini corpus --out data/corpus        # apt-get download + dpkg -x, about a minute
python -m xmod_explorer.mini train --corpus data/corpus --out runs/mini --steps {settings["steps"]} --warmup-steps {settings["warmup_steps"]} --rows-per-language {settings["rows_per_language"]} --seq-len {settings["seq_len"]}
python -m xmod_explorer.mini export runs/mini assets/xmod-mini --corpus data/corpus
{add_lines}python -m xmod_explorer.mini evaluate assets/xmod-mini --corpus data/corpus  # eval.json, this card (the heatmap needs kaleido)
python -m xmod_explorer.mini examples assets/xmod-mini --corpus data/corpus  # assets/mini_*.tsv
```

Training resumes from `runs/mini/checkpoint` when restarted with the same settings. Export writes the run's
settings and final log record to `training.json`, which the card reads. (For the shipped weights that file was
transcribed from the first card, as the run folder was not kept.)
"""


def _candidate_comparison(entry: dict) -> str:
    """One sentence on how the initialisations compare: the gap, the checkpoints, whether the intervals overlap."""
    candidates = entry["candidates"]
    if len(candidates) < 2:
        return f"Only one initialisation was trained ({entry['chosen']})."
    chosen = candidates[entry["chosen"]]
    other_name, other = next((n, c) for n, c in candidates.items() if n != entry["chosen"])
    ahead = all(a["accuracy"] > b["accuracy"] for a, b in zip(chosen["curve"][1:], other["curve"][1:]))
    gap = chosen["selection_accuracy"] - other["selection_accuracy"]
    overlap = chosen["selection_accuracy_ci95"][0] <= other["selection_accuracy_ci95"][1]
    steps = ", ".join(str(point["step"]) for point in chosen["curve"][1:])
    return (
        f"The {entry['chosen']} ended {gap:.1f} points ahead of the {other_name}"
        + (f" and was ahead at every checkpoint (steps {steps})" if ahead else "")
        + (
            "; the two final intervals overlap, so this sample alone does not settle which is better."
            if overlap
            else "; the two final intervals do not overlap."
        )
        + " The better one at the end was kept."
    )


def _whole_word_sentence(evaluation: dict, code: str, name: str, originals: Sequence[str]) -> str:
    """The added language on whole words, against the original languages' own adapters on theirs."""
    results = evaluation.get("whole_words", {})
    if code not in results:
        return ""
    own, *others = results[code]
    theirs = [results[lang][0] for lang in originals if lang in results]
    low = min(theirs, key=lambda r: r["accuracy"])
    high = max(theirs, key=lambda r: r["accuracy"])
    sentence = (
        f"Whole words tell the rest: the held-out {name} sentences have only {own['candidates']:,} words that are one "
        f"vocabulary piece of four or more letters, and the new adapter fills {own['correct']} of them "
        f"({_interval(own, '%')})"
        + "".join(f", the {r['adapter']} adapter {r['correct']} ({_interval(r, '%')})" for r in others)
        + f"; the original languages' own adapters fill {low['accuracy']:.1f}% ({low['adapter']}) to "
        f"{high['accuracy']:.1f}% ({high['adapter']}) of theirs."
    )
    if own["accuracy_ci95"][1] < low["accuracy"]:
        sentence += (
            f" So the new adapter has learnt {name}'s pieces far better than any original adapter knows them, but on"
            " whole words it stays below every original language."
        )
    return sentence
