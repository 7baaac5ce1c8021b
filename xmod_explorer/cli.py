"""Command line: `xmod-explorer` (or `python -m xmod_explorer`) serves the app; its subcommands run one analysis.

xmod-explorer [--model mini] [app flags]          serve the web app (see `xmod-explorer serve --help`)
xmod-explorer {predict,compare,sentences,lens,identify,mix,map,info,convert} ...
xmod-explorer batch {predict,compare,score,project} --input CORPUS --output RESULTS   every row of a corpus

Each analysis prints a readable table, or the same JSON the web app's API returns with --json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import pandas as pd

from xmod_explorer.datasets import read_pairs
from xmod_explorer.errors import ExplorerError


def _model_options(parser: argparse.ArgumentParser, *, json: bool = True) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="hub id, local folder, 'mini' or 'random' "
        "(default: facebook/xmod-base if reachable, else the embedded mini model)",
    )
    parser.add_argument("--backend", default="auto", choices=["auto", "transformers", "adapters"])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--dtype", default="auto", help="auto, float32, float16, bfloat16, or int8 (CPU)")
    parser.add_argument("--load-languages", default=None, help="load only these adapters (comma-separated codes)")
    if json:
        parser.add_argument("--json", action="store_true", help="print the result as JSON")


COMMANDS = ("predict", "compare", "sentences", "lens", "identify", "mix", "map", "info", "convert", "batch")
PROG = "xmod-explorer"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve the web app (the default when no command is given)", add_help=False)

    predict = commands.add_parser("predict", help="fill <mask> under several language adapters")
    predict.add_argument("text")
    predict.add_argument("--languages", required=True, help="comma-separated codes, e.g. en_XX,de_DE")
    predict.add_argument("--top-k", type=int, default=5)
    _model_options(predict)

    compare = commands.add_parser("compare", help="compare hidden states of one text under several adapters")
    compare.add_argument("text")
    compare.add_argument("--languages", required=True)
    compare.add_argument("--reference", default=None, help="language the others are compared to (default: the first)")
    compare.add_argument(
        "--layer", type=int, default=None, help="print the similarity matrix of this layer (default: last)"
    )
    _model_options(compare)

    sentences = commands.add_parser("sentences", help="compare sentences, each through its own adapter")
    sentences.add_argument("file", help="CSV or TSV with columns language,text")
    _model_options(sentences)

    lens = commands.add_parser("lens", help="read each <mask> at every layer under several adapters (logit lens)")
    lens.add_argument("text")
    lens.add_argument("--languages", required=True, help="comma-separated codes, e.g. en_XX,de_DE")
    lens.add_argument("--top-k", type=int, default=5, help="candidates per layer in --json (the table shows top-1)")
    _model_options(lens)

    identify = commands.add_parser("identify", help="which adapter fits a text (pseudo-log-likelihood)")
    identify.add_argument("text")
    identify.add_argument("--languages", default=None, help="candidate codes (default: every language of the model)")
    _model_options(identify)

    mix = commands.add_parser("mix", help="fill <mask> with two adapters mixed in every layer, alpha from 0 to 1")
    mix.add_argument("text")
    mix.add_argument("--a", required=True, help="the adapter at alpha = 0, e.g. en_XX")
    mix.add_argument("--b", required=True, help="the adapter at alpha = 1, e.g. de_DE")
    mix.add_argument("--steps", type=int, default=11)
    mix.add_argument("--top-k", type=int, default=3)
    _model_options(mix)

    map_ = commands.add_parser("map", help="2-D map of pooled states: sentences from a file, or one text's adapters")
    map_.add_argument("file", nargs="?", default=None, help="CSV or TSV with columns language,text")
    map_.add_argument("--text", default=None, help="instead of a file: one text through --languages")
    map_.add_argument("--languages", default=None, help="adapters for --text (default: every language)")
    map_.add_argument("--layer", type=int, default=None, help="one layer (default: every layer)")
    map_.add_argument("--method", default="pca", choices=["pca", "umap"], help="umap needs umap-learn")
    _model_options(map_)

    info = commands.add_parser("info", help="what a model holds: languages, size, backend")
    _model_options(info)

    convert = commands.add_parser("convert", help="convert a native X-MOD checkpoint to the adapters format")
    convert.add_argument("source", help="native checkpoint: hub id or folder")
    convert.add_argument("output", help="new folder for the converted checkpoint")
    convert.add_argument(
        "--tolerance", type=float, default=1e-4, help="largest output difference accepted per language"
    )
    convert.add_argument("--overwrite", action="store_true")
    _batch_parser(commands)
    return parser


def _batch_parser(commands) -> None:
    from xmod_explorer.batch.operations import OPERATIONS

    batch = commands.add_parser(
        "batch",
        help="run an analysis over every row of a corpus file (resumable; several processes with torchrun)",
        description="Run an analysis over every row of a corpus (.csv, .tsv, .jsonl, .parquet) into a result file "
        "(.csv, .parquet). Columns: text, and languages (comma-separated codes) or language per row, or --languages. "
        "Run the same command again to resume an interrupted run.",
    )
    operations = batch.add_subparsers(dest="operation", required=True)
    for operation in OPERATIONS.values():
        sub = operations.add_parser(operation.name, help=operation.help)
        sub.add_argument("--input", required=True, type=Path, help="corpus: .csv, .tsv, .jsonl or .parquet")
        sub.add_argument("--output", required=True, type=Path, help="results: .csv or .parquet")
        sub.add_argument(
            "--languages",
            default=None,
            help="adapters for rows whose languages/language cell is blank or absent (comma-separated codes)"
            + ("; default: every language of the model" if not operation.needs_languages else ""),
        )
        if operation.name == "predict":
            sub.add_argument("--top-k", type=int, default=5)
        if operation.name == "project":
            sub.add_argument("--layer", default="last", help="last (default), all, or a layer number (0: embeddings)")
        sub.add_argument("--block-rows", type=int, default=256, help="rows per block: the unit of work and of resuming")
        sub.add_argument("--tokens-per-pass", type=int, default=4096, help="padded tokens per forward pass")
        sub.add_argument("--threads", type=int, default=None, help="torch threads per process (default: torch's)")
        sub.add_argument("--overwrite", action="store_true", help="discard earlier results or an unfinished run")
        sub.add_argument("--keep-parts", action="store_true", help="keep OUTPUT.parts/ (the blocks) after merging")
        sub.add_argument("--no-progress", action="store_true", help="no progress bar")
        _model_options(sub, json=False)


def _run_batch(args) -> None:
    from xmod_explorer.batch import BatchSettings, run_batch

    run_batch(
        BatchSettings(
            operation=args.operation,
            input=args.input,
            output=args.output,
            model=args.model,
            backend=args.backend,
            device=args.device,
            dtype=args.dtype,
            load_languages=args.load_languages,
            languages=args.languages,
            top_k=getattr(args, "top_k", 5),
            layer=getattr(args, "layer", "last"),
            block_rows=args.block_rows,
            tokens_per_pass=args.tokens_per_pass,
            threads=args.threads,
            overwrite=args.overwrite,
            keep_parts=args.keep_parts,
            progress=not args.no_progress,
        )
    )


def _explorer(args):
    from xmod_explorer import Explorer

    return Explorer.from_pretrained(
        args.model, backend=args.backend, device=args.device, dtype=args.dtype, languages=args.load_languages
    )


def _emit(args, result, table: pd.DataFrame) -> None:
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    else:
        with pd.option_context("display.max_rows", 500, "display.max_columns", 100, "display.width", 200):
            print(table.to_string(index=False))


def main(argv: list[str] | None = None) -> int:
    """Serve the app, or run the analysis the first argument names; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        from xmod_explorer.ui.server import main as serve

        serve(argv[1:] if argv and argv[0] == "serve" else argv, prog=f"{PROG} [serve]")
        return 0
    return run(argv)


def run(argv: list[str]) -> int:
    """One analysis command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("xmod_explorer").setLevel(logging.INFO)
    try:
        if args.command == "convert":
            from xmod_explorer.convert import convert

            report = convert(args.source, args.output, tolerance=args.tolerance, overwrite=args.overwrite)
            worst = max(report.max_abs_diff.values())
            print(f"converted {len(report.languages)} languages to {Path(args.output)}; largest difference {worst:.2e}")
            return 0
        if args.command == "batch":
            _run_batch(args)
            return 0
        explorer = _explorer(args)
        if args.command == "predict":
            result = explorer.predict_masks(args.text, args.languages, args.top_k)
            _emit(args, result, result.to_wide_frame())
        elif args.command == "compare":
            result = explorer.compare_adapters(args.text, args.languages, args.reference)
            layer = result.layers[-1] if args.layer is None else args.layer
            if layer not in result.layers:
                raise ExplorerError(f"--layer must be between 0 and {result.layers[-1]}.")
            table = pd.DataFrame(result.pooled_cosine[layer].numpy(), index=result.languages, columns=result.languages)
            _emit(args, result, table.reset_index(names=f"layer {layer}"))
        elif args.command == "sentences":
            result = explorer.compare_sentences(read_pairs(args.file))
            _emit(args, result, result.to_frame())
            for note in result.notes:
                print(f"note: {note}", file=sys.stderr)
        elif args.command == "lens":
            result = explorer.logit_lens(args.text, args.languages, args.top_k)
            _emit(args, result, result.to_wide_frame())
        elif args.command == "identify":
            result = explorer.score_languages(args.text, args.languages)
            _emit(args, result, result.to_frame())
            guess = result.detector
            if guess is not None:
                print(f"note: {guess.detector} guesses {guess.language or guess.label}", file=sys.stderr)
            print(f"note: cost {result.cost.describe()}", file=sys.stderr)
        elif args.command == "mix":
            result = explorer.interpolate(args.text, args.a, args.b, args.steps, args.top_k)
            _emit(args, result, result.to_wide_frame())
        elif args.command == "map":
            if (args.file is None) == (args.text is None):
                raise ExplorerError("Give either a file of language,text rows or --text (with --languages), not both.")
            source = read_pairs(args.file) if args.file is not None else args.text
            result = explorer.project(source, layer=args.layer, method=args.method, languages=args.languages)
            _emit(args, result, result.to_frame())
            for note in result.notes:
                print(f"note: {note}", file=sys.stderr)
        elif args.command == "info":
            info = explorer.info()
            _emit(args, info, info.to_frame())
        return 0
    except ExplorerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
