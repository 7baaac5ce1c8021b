"""Batch mode in one process: every operation's rows equal the engine's, every input format reads the same,
bad rows and bad schemas get clear messages, metadata is recorded, and a run resumes without redoing work.

Real tiny models and real files throughout; the runs that need separate processes (SIGKILL, torchrun,
accelerate launch, the 10,000-row corpus) are in test_batch_processes.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from helpers import LANGUAGES, pca_reference

from xmod_explorer import Explorer, ExplorerError
from xmod_explorer.batch import BatchSettings, run_batch
from xmod_explorer.tiny import SAMPLE_SENTENCES

LANGUAGE_CHOICES = ["en_XX,de_DE", "ja_XX", "fr_XX,ru_RU,en_XX", "de_DE", "ru_RU,ja_XX"]


def masked(sentence: str, n: int) -> str:
    words = sentence.split()
    words[n % len(words)] = "<mask>"
    if n % 5 == 0:  # some texts with two masks
        words[(n + 2) % len(words)] = "<mask>"
    return " ".join(words)


def corpus_rows(count: int, *, masks: bool = True) -> list[dict]:
    """Texts from the tiny tokenizer's sentences, each with its languages."""
    rows = []
    for n in range(count):
        sentence = SAMPLE_SENTENCES[n % len(SAMPLE_SENTENCES)]
        rows.append(
            {
                "text": masked(sentence, n) if masks else sentence,
                "languages": LANGUAGE_CHOICES[n % len(LANGUAGE_CHOICES)],
            }
        )
    return rows


def write_corpus(path: Path, rows: list[dict]) -> Path:
    """rows as a corpus file in the format its suffix names."""
    columns = list(rows[0])
    if path.suffix in (".csv", ".tsv"):
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, columns, delimiter="\t" if path.suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def read_results(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pandas()
    return pd.read_csv(path, keep_default_na=False, dtype={"token": str})


def run(operation: str, corpus: Path, output: Path, model: Path, **options) -> None:
    run_batch(BatchSettings(operation, corpus, output, model=str(model), progress=False, **options))


@pytest.fixture(scope="module")
def explorer(base_dir):
    return Explorer.from_pretrained(str(base_dir))


# ----- each operation's rows are the engine's -----------------------------------------------------------------


def test_predict_rows_equal_predict_masks(base_dir, explorer, tmp_path):
    rows = corpus_rows(23)
    corpus = write_corpus(tmp_path / "corpus.csv", rows)
    run("predict", corpus, tmp_path / "out.csv", base_dir, top_k=3, block_rows=5, tokens_per_pass=64)
    results = read_results(tmp_path / "out.csv")
    assert list(results.columns) == [
        "row",
        "mask",
        "position",
        "language",
        "rank",
        "token",
        "token_id",
        "probability",
        "entropy_bits",
    ]
    assert sorted(set(results.row)) == list(range(len(rows)))
    for n, row in enumerate(rows):
        prediction = explorer.predict_masks(row["text"], row["languages"], 3)
        expected = prediction.to_frame()
        got = results[results.row == n].reset_index(drop=True)
        keys = ["mask", "position", "language", "rank", "token_id", "token"]
        assert got[keys].values.tolist() == expected[keys].values.tolist(), n
        assert (got.probability - expected.probability).abs().max() <= 1e-5
        for slot_number, slot in enumerate(prediction.masks, start=1):
            for code, bits in slot.entropy_bits.items():
                chosen = got[(got["mask"] == slot_number) & (got.language == code)]
                assert (chosen.entropy_bits - bits).abs().max() <= 1e-4


def test_compare_rows_equal_compare_adapters(base_dir, explorer, tmp_path):
    rows = [row for row in corpus_rows(12, masks=False) if "," in row["languages"]]
    corpus = write_corpus(tmp_path / "corpus.jsonl", rows)
    run("compare", corpus, tmp_path / "out.parquet", base_dir, block_rows=3)
    results = read_results(tmp_path / "out.parquet")
    for n, row in enumerate(rows):
        comparison = explorer.compare_adapters(row["text"], row["languages"])
        codes = comparison.languages
        got = results[results.row == n]
        expected = [
            (layer, codes[a], codes[b], comparison.pooled_cosine[layer, a, b], comparison.centred_cosine[layer, a, b])
            for layer in comparison.layers
            for a in range(len(codes))
            for b in range(a + 1, len(codes))
        ]
        assert list(zip(got.layer, got.language_a, got.language_b)) == [e[:3] for e in expected]
        assert max(abs(g - float(e[3])) for g, e in zip(got.pooled_cosine, expected)) <= 1e-5
        assert max(abs(g - float(e[4])) for g, e in zip(got.centred_cosine, expected)) <= 1e-5
    assert set(results[results.layer == 0].pooled_cosine.round(6)) == {1.0}  # before any adapter: the same state
    metadata = json.loads(pq.read_metadata(tmp_path / "out.parquet").metadata[b"xmod_explorer"])
    assert metadata["centring"] == explorer.centring().describe()  # what centred_cosine subtracts, as in the app


def test_project_is_the_pca_of_every_points_pooled_states(base_dir, explorer, tmp_path):
    rows = corpus_rows(40, masks=False)
    corpus = write_corpus(tmp_path / "corpus.parquet", rows)
    run("project", corpus, tmp_path / "map.parquet", base_dir, layer="all", block_rows=7)
    results = read_results(tmp_path / "map.parquet")
    points = [(n, code) for n, row in enumerate(rows) for code in row["languages"].split(",")]
    pooled = explorer.pooled_layers(
        [explorer.tokenize(rows[n]["text"]) for n, _ in points], [code for _, code in points]
    )
    metadata = json.loads(pq.read_metadata(tmp_path / "map.parquet").metadata[b"xmod_explorer"])
    for layer in range(pooled.shape[0]):
        got = results[results.layer == layer]
        assert list(zip(got.row, got.language)) == points
        coordinates, explained = pca_reference(pooled[layer])
        torch.testing.assert_close(
            torch.tensor(got[["x", "y"]].to_numpy()), coordinates, atol=1e-4 if layer == 0 else 1e-5, rtol=1e-4
        )
        recorded = metadata["projection"]["layers"][str(layer)]
        assert recorded["points"] == len(points)
        torch.testing.assert_close(
            torch.tensor(recorded["explained_variance"], dtype=torch.float64), explained, atol=1e-6, rtol=1e-5
        )


def test_project_equals_explorer_project_on_a_sample(base_dir, explorer, tmp_path):
    """The app's map of the same sentences, point for point."""
    rows = [{"text": row["text"], "language": row["languages"].split(",")[0]} for row in corpus_rows(30, masks=False)]
    corpus = write_corpus(tmp_path / "corpus.csv", rows)
    run("project", corpus, tmp_path / "map.csv", base_dir, block_rows=4)
    got = read_results(tmp_path / "map.csv")
    last = len(explorer.pooled_layers([[0, 5, 2]], ["en_XX"])) - 1
    projection = explorer.project([(row["language"], row["text"]) for row in rows], layer=last)
    torch.testing.assert_close(
        torch.tensor(got[["x", "y"]].to_numpy()), projection.coordinates[0].double(), atol=1e-5, rtol=1e-4
    )


def test_score_rows_equal_score_languages(base_dir, explorer, tmp_path):
    """Each row's ranking equals the app's score_languages for that text and those candidates."""
    rows = [{"text": row["text"], "languages": row["languages"]} for row in corpus_rows(6, masks=False)]
    rows[2]["languages"] = ""  # no languages: every adapter of the model
    corpus = write_corpus(tmp_path / "corpus.tsv", rows)
    run("score", corpus, tmp_path / "scores.csv", base_dir, block_rows=4)
    results = read_results(tmp_path / "scores.csv")
    for n, row in enumerate(rows):
        scores = explorer.score_languages(row["text"], row["languages"] or None)
        got = results[results.row == n]
        assert list(got.language) == scores.languages
        assert list(got["rank"]) == list(range(1, len(scores.languages) + 1))
        expected = scores.to_frame()
        assert (got.per_token.to_numpy() - expected.per_token.to_numpy()).__abs__().max() <= 1e-5
    assert len(results[results.row == 2]) == len(LANGUAGES)


# ----- input formats, bad rows, bad schemas --------------------------------------------------------------------


@pytest.mark.parametrize("output", ["out.csv", "out.parquet"])
def test_every_input_format_gives_the_same_results(base_dir, tmp_path, output):
    rows = corpus_rows(9)
    frames = []
    for suffix in (".csv", ".tsv", ".jsonl", ".parquet"):
        folder = tmp_path / suffix[1:]
        folder.mkdir()
        corpus = write_corpus(folder / f"corpus{suffix}", rows)
        run("predict", corpus, folder / output, base_dir, top_k=2, block_rows=4)
        frames.append(read_results(folder / output))
    for frame in frames[1:]:
        pd.testing.assert_frame_equal(frame, frames[0])


def test_bad_rows_are_reported_with_the_reason_and_never_stop_the_run(base_dir, tmp_path):
    good = corpus_rows(3)
    lines = [
        "text,languages",
        f'"{good[0]["text"]}",en_XX',  # row 0: good
        "No mask in this text.,en_XX",  # row 1: no <mask>
        f'"{good[1]["text"]}",xx_YY',  # row 2: unknown language
        "",  # a blank line: not a record
        f'"{good[2]["text"]}",en_XX,surplus',  # row 3: three fields
        ",en_XX",  # row 4: empty text
        f'"{good[1]["text"]}",',  # row 5: no languages and no --languages
        f'"{"long " * 2000}<mask>",de_DE',  # row 6: too many tokens for the model
        f'"{good[2]["text"]}","de_DE,ja_XX"',  # row 7: good
    ]
    corpus = tmp_path / "corpus.csv"
    data = "\n".join(lines).encode() + b"\n\xff\xfe<mask> broken bytes,en_XX\n"  # row 8: not UTF-8
    corpus.write_bytes(data)
    run("predict", corpus, tmp_path / "out.csv", base_dir, block_rows=3, top_k=1)
    results = read_results(tmp_path / "out.csv")
    assert sorted(set(results.row)) == [0, 7]
    errors = pd.read_csv(tmp_path / "out.errors.csv", keep_default_na=False)
    assert list(errors.columns) == ["row", "line", "reason"]
    assert list(errors.row) == [1, 2, 3, 4, 5, 6, 8]
    assert list(errors.line) == [3, 4, 6, 7, 8, 9, 11]  # the line each record starts on
    reasons = dict(zip(errors.row, errors.reason))
    assert "has no <mask>" in reasons[1]
    assert "xx_YY" in reasons[2]
    assert "3 fields where the header has 2" in reasons[3]
    assert "empty" in reasons[4]
    assert "No languages for this row" in reasons[5] and "--languages" in reasons[5]
    assert "tokens long" in reasons[6]
    assert "not UTF-8" in reasons[8]
    metadata = json.loads((tmp_path / "out.csv.meta.json").read_text())
    assert metadata["output"]["bad_rows"] == 7 and metadata["input"]["rows"] == 9


def test_bad_json_lines_and_languages_from_the_flag(base_dir, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    text = corpus_rows(1)[0]["text"]
    corpus.write_text(
        "\n".join(
            [
                json.dumps({"text": text, "languages": ["ja_XX", "fr_XX"]}),  # a list of codes
                "{not json",
                json.dumps(["a", "list"]),
                json.dumps({"text": 42, "languages": "en_XX"}),
                json.dumps({"text": text}),  # --languages fills in
                json.dumps({"text": text, "languages": ""}),  # blank: --languages fills in
            ]
        ),
        encoding="utf-8",
    )
    run("predict", corpus, tmp_path / "out.csv", base_dir, top_k=1, languages="de_DE")
    results = read_results(tmp_path / "out.csv")
    pairs = list(dict.fromkeys(zip(results.row, results.language)))
    assert pairs == [(0, "ja_XX"), (0, "fr_XX"), (4, "de_DE"), (5, "de_DE")]
    errors = pd.read_csv(tmp_path / "out.errors.csv", keep_default_na=False)
    assert list(errors.row) == [1, 2, 3]
    assert "not valid JSON" in errors.reason[0] and "not an object" in errors.reason[1]
    assert "must be a string" in errors.reason[2]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("corpus.csv", "sentence,languages\nA <mask>.,en_XX\n", "has no column 'text' (columns found: 'sentence'"),
        ("corpus.csv", "text,language,languages\nA <mask>.,en_XX,en_XX\n", "both a column 'languages' and"),
        ("corpus.csv", "text\nA <mask>.\n", "no column 'languages' or 'language'"),
        ("corpus.csv", "", "first line must name the columns"),
        ("corpus.jsonl", "[1]\n[2]\n", "holds no JSON object"),
        ("corpus.txt", "text\n", "use one of .csv, .jsonl"),
        ("corpus.parquet", b"PAR1 not really", "not a readable parquet file"),
    ],
)
def test_a_bad_schema_is_refused_before_the_model_loads(tmp_path, name, content, message):
    corpus = tmp_path / name
    corpus.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ExplorerError, match=message.replace("(", r"\(").replace(".", r"\.")):
        run_batch(BatchSettings("predict", corpus, tmp_path / "out.csv", model="/nonexistent/model"))


def test_bad_column_types_and_outputs_are_refused(tmp_path):
    corpus = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"text": [1, 2], "languages": ["en_XX", "en_XX"]}), corpus)
    with pytest.raises(ExplorerError, match=r"'text' of .* holds int64; it must hold strings"):
        run_batch(BatchSettings("predict", corpus, tmp_path / "out.csv", model="/nonexistent/model"))
    with pytest.raises(ExplorerError, match=r"suffix '\.xlsx'; use one of \.csv, \.parquet"):
        run_batch(BatchSettings("predict", corpus, tmp_path / "out.xlsx"))
    with pytest.raises(ExplorerError, match="does not exist"):
        run_batch(BatchSettings("predict", tmp_path / "missing.csv", tmp_path / "out.csv"))
    with pytest.raises(ExplorerError, match="Unknown batch operation"):
        run_batch(BatchSettings("summarise", corpus, tmp_path / "out.csv"))


def test_a_row_that_breaks_its_block_is_isolated(base_dir, tmp_path, monkeypatch):
    """A fault no check catches (here made to happen: it cannot be produced for real) fails its row only."""
    from xmod_explorer.batch import operations

    rows = corpus_rows(6)
    corpus = write_corpus(tmp_path / "corpus.csv", rows)
    original = operations.Predict.run

    def faulty(self, explorer, items):
        if any(item.row == 4 for item in items):
            raise RuntimeError("a fault in the forward pass")
        return original(self, explorer, items)

    monkeypatch.setattr(operations.Predict, "run", faulty)
    run("predict", corpus, tmp_path / "out.csv", base_dir, block_rows=3, top_k=1)
    assert sorted(set(read_results(tmp_path / "out.csv").row)) == [0, 1, 2, 3, 5]
    errors = pd.read_csv(tmp_path / "out.errors.csv")
    assert list(errors.row) == [4] and "RuntimeError: a fault in the forward pass" in errors.reason[0]


# ----- metadata, reruns and resuming ------------------------------------------------------------------------------


def test_metadata_records_model_settings_input_and_what_each_column_means(base_dir, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.csv", corpus_rows(5))
    run("predict", corpus, tmp_path / "out.parquet", base_dir, top_k=2, block_rows=2)
    metadata = json.loads(pq.read_metadata(tmp_path / "out.parquet").metadata[b"xmod_explorer"])
    assert metadata["operation"] == "predict"
    assert metadata["model"]["name"] == str(base_dir) and metadata["model"]["languages"] == LANGUAGES
    assert metadata["model"]["revision"] == "local files (no hub commit)"
    assert metadata["model"]["weights"] == {"model.safetensors": (base_dir / "model.safetensors").stat().st_size}
    assert metadata["settings"] == {"tokens_per_pass": 4096, "top_k": 2, "languages": None, "block_rows": 2}
    assert metadata["input"]["rows"] == 5 and len(metadata["input"]["sha256"]) == 64
    assert metadata["output"]["rows"] == pq.read_metadata(tmp_path / "out.parquet").num_rows
    assert set(metadata["columns"]) == set(read_results(tmp_path / "out.parquet").columns)
    assert metadata["runs"] == [
        {"attempt": 1, "rows_by_rank": {"0": 5}, "processes": 1, "started": metadata["runs"][0]["started"]}
    ]
    assert not (tmp_path / "out.parquet.parts").exists()


def test_a_rerun_finds_the_work_done_and_other_settings_are_refused(base_dir, tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.csv", corpus_rows(4))
    output = tmp_path / "out.csv"
    run("predict", corpus, output, base_dir, top_k=2)
    written = output.read_bytes()
    run("predict", corpus, output, base_dir, top_k=2)
    assert "complete already" in capsys.readouterr().out and output.read_bytes() == written
    with pytest.raises(ExplorerError, match=r"written already by a run with other settings.*--overwrite"):
        run("predict", corpus, output, base_dir, top_k=3)
    run("predict", corpus, output, base_dir, top_k=3, overwrite=True)
    assert set(read_results(output)["rank"]) == {1, 2, 3}


def test_an_unfinished_run_resumes_and_computes_only_the_missing_blocks(base_dir, tmp_path):
    """The parts folder of an interrupted run (here: a finished one with blocks and the output taken away)."""
    corpus = write_corpus(tmp_path / "corpus.csv", corpus_rows(20))
    whole = tmp_path / "whole.csv"
    run("predict", corpus, whole, base_dir, top_k=2, block_rows=3)
    output = tmp_path / "out.csv"
    run("predict", corpus, output, base_dir, top_k=2, block_rows=3, keep_parts=True)
    parts = tmp_path / "out.csv.parts"
    for number in (1, 4, 6):
        (parts / f"block-{number:08d}.parquet").unlink()
    (parts / ".block-00000002.parquet.partial-999").write_bytes(b"half a file")  # left by a killed process
    for path in (output, tmp_path / "out.csv.meta.json", tmp_path / "out.errors.csv"):
        path.unlink()
    run("predict", corpus, output, base_dir, top_k=2, block_rows=3)
    assert output.read_bytes() == whole.read_bytes()
    runs = json.loads((tmp_path / "out.csv.meta.json").read_text())["runs"]
    # Blocks of 3 rows: 1, 4 and 6 (the last, of 2 rows) were missing, 8 rows; the other 12 were not redone.
    assert [(r["attempt"], r["rows_by_rank"]) for r in runs] == [(1, {"0": 12}), (2, {"0": 8})]
    assert not parts.exists()


def test_a_resumed_run_must_have_the_same_input_and_settings(base_dir, tmp_path):
    rows = corpus_rows(6)
    corpus = write_corpus(tmp_path / "corpus.csv", rows)
    output = tmp_path / "out.csv"
    run("predict", corpus, output, base_dir, block_rows=2, keep_parts=True)
    output.unlink()
    write_corpus(corpus, rows[:5])
    with pytest.raises(ExplorerError, match=r"unfinished run with other settings \(they differ in: input.bytes"):
        run("predict", corpus, output, base_dir, block_rows=2)
    write_corpus(corpus, rows)
    with pytest.raises(ExplorerError, match=r"differ in: settings\.block_rows"):
        run("predict", corpus, output, base_dir, block_rows=3)
    run("predict", corpus, output, base_dir, block_rows=2)
    assert output.exists()


def test_a_second_run_on_the_same_output_is_refused_while_the_first_holds_it(base_dir, tmp_path):
    from xmod_explorer.batch.runner import RunLock

    corpus = write_corpus(tmp_path / "corpus.csv", corpus_rows(3))
    output = tmp_path / "out.csv"
    first = RunLock(output)
    first.shared()  # as every process of a running run holds it
    try:
        with pytest.raises(ExplorerError, match=r"Another run is writing to .*out\.csv now"):
            run("predict", corpus, output, base_dir)
    finally:
        first.release()
    run("predict", corpus, output, base_dir)
    assert output.exists() and not (tmp_path / ".out.csv.lock").exists()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_the_corpus_is_read_in_constant_memory(tmp_path, suffix):
    """Reading 50,000 rows (about 10 MB of text) holds no more than a chunk's worth in memory at once."""
    import tracemalloc

    from xmod_explorer.batch.tables import Corpus

    rows = [{"text": f"{n} " + "word " * 40 + "<mask>", "languages": "en_XX,de_DE"} for n in range(50_000)]
    corpus = Corpus(write_corpus(tmp_path / f"corpus{suffix}", rows))
    del rows
    tracemalloc.start()
    try:
        count = sum(1 for record in corpus.records(("text", "languages")) if record.fields["text"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 50_000
    assert peak < 3 * 2**20, f"{peak / 2**20:.1f} MiB"


def test_a_model_from_the_hub_cache_is_recorded_with_its_commit(base_dir, tmp_path, monkeypatch):
    import shutil

    commit = "89abcdef0123456789abcdef0123456789abcdef"
    entry = tmp_path / "hub" / "models--someone--tiny-xmod"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(commit)
    shutil.copytree(base_dir, entry / "snapshots" / commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    corpus = write_corpus(tmp_path / "corpus.csv", corpus_rows(2))
    run_batch(BatchSettings("predict", corpus, tmp_path / "out.csv", model="someone/tiny-xmod", progress=False))
    metadata = json.loads((tmp_path / "out.csv.meta.json").read_text())
    assert metadata["model"]["name"] == "someone/tiny-xmod"
    assert metadata["model"]["revision"] == metadata["identity"]["model"]["revision"] == commit


def test_settings_that_cannot_fit_the_model_are_refused_before_any_row(base_dir, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.csv", corpus_rows(2))
    with pytest.raises(ExplorerError, match="top_k must be between 1 and"):
        run("predict", corpus, tmp_path / "out.csv", base_dir, top_k=0)
    with pytest.raises(ExplorerError, match="--layer must be last, all, or a layer from 0 to 2; got '7'"):
        run("project", corpus, tmp_path / "out.csv", base_dir, layer="7")
    assert not (tmp_path / "out.csv.parts").exists()
    run("predict", corpus, tmp_path / "new" / "folder" / "out.csv", base_dir)  # a new folder is made
    assert (tmp_path / "new" / "folder" / "out.csv").exists()
