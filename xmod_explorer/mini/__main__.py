"""Command line for the embedded model: corpus, train, export, add-language, evaluate (+ card), examples.

python -m xmod_explorer.mini corpus --out data/corpus
python -m xmod_explorer.mini train --corpus data/corpus --out runs/mini --steps 2600
python -m xmod_explorer.mini export runs/mini assets/xmod-mini --corpus data/corpus
python -m xmod_explorer.mini add-language nl_XX --model assets/xmod-mini --corpus data/corpus
python -m xmod_explorer.mini evaluate assets/xmod-mini --corpus data/corpus
python -m xmod_explorer.mini examples assets/xmod-mini --corpus data/corpus
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from xmod_explorer.mini.evaluate import EVALUATION_SAMPLE
from xmod_explorer.mini.post_hoc import AddLanguageSettings
from xmod_explorer.mini.train import TrainSettings


def _add_settings_flags(
    parser: argparse.ArgumentParser, settings=TrainSettings, skip=("corpus", "out", "languages")
) -> None:
    """One --flag per settings field (scalars only), defaulting to the dataclass default."""
    for spec in fields(settings):
        if spec.name in skip:
            continue
        flag = "--" + spec.name.replace("_", "-")
        if isinstance(spec.default, bool):
            parser.add_argument(flag, dest=spec.name, action=argparse.BooleanOptionalAction, default=spec.default)
        else:
            parser.add_argument(flag, dest=spec.name, type=type(spec.default), default=spec.default)


def main(argv: list[str] | None = None) -> None:
    """Parse a subcommand and run it."""
    parser = argparse.ArgumentParser(prog="python -m xmod_explorer.mini", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    corpus = commands.add_parser("corpus", help="download LibreOffice help packages and build the text corpus")
    corpus.add_argument("--out", default="data/corpus")
    corpus.add_argument("--cache", default="data/debs", help="where .deb files are downloaded and unpacked")

    train = commands.add_parser("train", help="pre-train (or resume) the mini X-MOD")
    train.add_argument("--corpus", default="data/corpus")
    train.add_argument("--out", default="runs/mini")
    _add_settings_flags(train)

    export = commands.add_parser("export", help="write the trained model and tokenizer as a Hugging Face folder")
    export.add_argument("run")
    export.add_argument("target")
    export.add_argument("--corpus", default="data/corpus", help="held-out data for the float16 check")
    export.add_argument("--dtype", choices=["auto", "float16", "float32"], default="auto")

    add = commands.add_parser(
        "add-language",
        help="train one new language adapter with everything else frozen, and add it to a saved mini model",
    )
    add.add_argument("language", help="xmod-base code of a LibreOffice help language the model lacks, e.g. nl_XX")
    _add_settings_flags(add, AddLanguageSettings, skip=("language",))

    evaluate = commands.add_parser("evaluate", help="languages x adapters masked-LM matrix on held-out text")
    evaluate.add_argument("model")
    evaluate.add_argument("--corpus", default="data/corpus")
    evaluate.add_argument("--max-per-language", type=int, default=EVALUATION_SAMPLE)
    evaluate.add_argument(
        "--run",
        default=None,
        help="training run whose log and settings go in the card (default: the model's training.json)",
    )

    examples = commands.add_parser("examples", help="pick assets/mini_heldout.tsv and mini_examples.tsv")
    examples.add_argument("model")
    examples.add_argument("--corpus", default="data/corpus")
    examples.add_argument("--assets", default="assets")

    args = parser.parse_args(argv)
    if args.command == "corpus":
        from xmod_explorer.mini.corpus import build_corpus

        build_corpus(args.out, args.cache)
    elif args.command == "train":
        from xmod_explorer.mini.train import train as run_training

        values = {spec.name: getattr(args, spec.name) for spec in fields(TrainSettings) if spec.name != "languages"}
        run_training(TrainSettings(**values))
    elif args.command == "export":
        from xmod_explorer.mini.export import export_model

        export_model(args.run, args.target, corpus=args.corpus, dtype=args.dtype)
    elif args.command == "add-language":
        from xmod_explorer.mini.post_hoc import add_language

        add_language(
            AddLanguageSettings(**{spec.name: getattr(args, spec.name) for spec in fields(AddLanguageSettings)})
        )
    elif args.command == "evaluate":
        from xmod_explorer.mini.card import write_card
        from xmod_explorer.mini.evaluate import evaluate_model

        evaluate_model(args.model, args.corpus, max_per_language=args.max_per_language)
        write_card(args.model, args.corpus, args.run)
    elif args.command == "examples":
        from xmod_explorer.mini.examples import write_examples

        write_examples(args.model, args.corpus, args.assets)


if __name__ == "__main__":
    main()
