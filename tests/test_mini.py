"""The embedded model's pipeline: corpus cleaning, training, export, and the shipped model itself."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_same_predictions
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, XmodConfig, XmodForMaskedLM

from xmod_explorer import Explorer
from xmod_explorer.mini.batches import balanced_batch, pack_row, packed_inputs, tokenize_paragraphs
from xmod_explorer.mini.corpus import (
    MINI_LANGUAGES,
    clean_pages,
    english_vocabulary,
    extract_paragraphs,
    is_english_fallback,
    is_heldout,
    long_enough,
)
from xmod_explorer.mini.evaluate import (
    AdapterMatrix,
    adapter_matrix,
    masked_set,
    post_hoc_summary,
    whole_word_accuracy,
)
from xmod_explorer.mini.examples import (
    MASK,
    answer_token,
    fill_probabilities,
    mask_candidates,
    read_examples,
    readable,
)
from xmod_explorer.mini.export import export_model
from xmod_explorer.mini.post_hoc import (
    ORIGINAL_HASHES,
    POST_HOC_RECORD,
    AddLanguageSettings,
    Candidate,
    add_language,
    changed_tensors,
    extended_model,
    train_candidate,
)
from xmod_explorer.mini.train import TrainSettings, train
from xmod_explorer.stats import wilson_interval
from xmod_explorer.ui.model import summary_markdown

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SHIPPED = ASSETS / "xmod-mini"
# The shipped model: the 12 pre-trained languages in their order, then Dutch, added post hoc.
POST_HOC_LANGUAGES = ["nl_XX"]
SHIPPED_LANGUAGES = [*MINI_LANGUAGES, *POST_HOC_LANGUAGES]

PAGE = """<html><head><script>var p = "<p>not text</p>";</script><title>T</title></head><body>
<h1>Heading is not a paragraph at all</h1>
<p id="par_1" class="paragraph">Choose <span class="menuitem">Format -&nbsp;Cells</span> to open
   the   <a href="x.html">dialog</a> &amp; set the&#160;number format.</p>
<p id="par_2">Line one<br>line two of the same paragraph here.</p>
<p id="par_3"></p>
</body></html>"""


# --- corpus cleaning -------------------------------------------------------------------------


def test_paragraphs_lose_markup_entities_and_extra_whitespace():
    assert extract_paragraphs(PAGE) == [
        "Choose Format - Cells to open the dialog & set the number format.",
        "Line one line two of the same paragraph here.",
    ]


def test_short_paragraphs_count_words_or_characters_for_unspaced_scripts():
    assert not long_enough("Choose Format - Cells", "en_XX")
    assert long_enough("Choose the cells you want to format.", "en_XX")
    assert not long_enough("セルを選択します。", "ja_XX")
    assert long_enough("書式設定するセルを選択してから、OK をクリックします。", "ja_XX")


def test_untranslated_english_is_dropped_but_product_names_are_not():
    english = {"Select the cells that you want to format."}
    assert is_english_fallback("Select the cells that you want to format.", "de_DE", english)
    assert not is_english_fallback("Wählen Sie die Zellen aus, die Sie formatieren möchten.", "de_DE", english)
    # In a non-Latin language, Latin-script text is a fallback even if it differs from the English page.
    assert is_english_fallback("Select the cells you want to format, then click OK.", "ru_RU")
    assert not is_english_fallback("Выберите ячейки в LibreOffice Calc, которые нужно отформатировать.", "ru_RU")
    assert not is_english_fallback("Select the cells that you want to format.", "en_XX", english)
    # Untranslated text that differs from the current English page: nearly all words are English.
    vocabulary = english_vocabulary(["Select the cells and click the icon on the toolbar."] * 3)
    assert is_english_fallback("Select the icon on the toolbar.", "fi_FI", english, vocabulary)
    assert not is_english_fallback("Valitse työkalurivin icon-kuvake.", "fi_FI", english, vocabulary)


def test_clean_pages_filters_dedupes_and_splits():
    english = """<p>Select the cells that you want to format now.</p><p>Click OK to close the dialog.</p>"""
    german = """<p>Select the cells that you want to format now.</p>
    <p>Klicken Sie auf OK, um den Dialog zu schließen.</p>
    <p>Klicken Sie auf OK, um den Dialog zu schließen.</p>
    <p>Zu kurz hier.</p>
    <p>Title is: Zellen formatieren und Dialoge schließen</p>"""
    english_pages = {"page.html": set(extract_paragraphs(english))}
    corpus = clean_pages([("page.html", german)], "de_DE", english_pages)
    assert corpus.train + corpus.heldout == ["Klicken Sie auf OK, um den Dialog zu schließen."]
    assert corpus.dropped == {"generated": 1, "short": 1, "english": 1, "duplicate": 1}


def test_heldout_split_is_deterministic_and_about_two_percent():
    texts = [f"paragraph number {i} of the help" for i in range(20000)]
    first = [is_heldout(t) for t in texts]
    assert first == [is_heldout(t) for t in texts]
    assert 0.015 < sum(first) / len(first) < 0.025


# --- batches ------------------------------------------------------------------------------------


def test_packed_paragraphs_see_only_themselves():
    config = XmodConfig(
        vocab_size=40,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        type_vocab_size=1,
        pad_token_id=1,
        languages=["en_XX", "de_DE"],
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = XmodForMaskedLM(config).eval()
    paragraphs = [np.array([5, 6, 7, 8]), np.array([9, 10, 11]), np.array([12, 13, 14, 15, 16, 17])]
    row = pack_row(paragraphs, np.array([0, 1, 2, 0]), seq_len=20)
    assert [len(p) for p in row] == [6, 5, 8]  # the fourth would not fit
    ids, attention, positions = packed_inputs([row, row[:1]])
    with torch.no_grad():
        packed = model.roberta(
            input_ids=ids, attention_mask=attention, position_ids=positions, lang_ids=torch.tensor([1, 0])
        )
        start = 0
        for paragraph in row:
            alone = model.roberta(input_ids=torch.tensor([paragraph]), lang_ids=torch.tensor([1]))
            end = start + len(paragraph)
            torch.testing.assert_close(packed.last_hidden_state[0, start:end], alone.last_hidden_state[0])
            start = end


def test_batches_are_balanced_sorted_by_language_and_reproducible():
    data = [[np.arange(4, 4 + n) for n in (5, 9, 30)] for _ in range(3)]
    batch = balanced_batch(data, rows_per_language=2, seq_len=32, mask_id=99, seed=3, step=7)
    assert batch.lang_ids.tolist() == [0, 0, 1, 1, 2, 2]
    again = balanced_batch(data, rows_per_language=2, seq_len=32, mask_id=99, seed=3, step=7)
    assert torch.equal(batch.input_ids, again.input_ids) and torch.equal(batch.labels, again.labels)
    masked = batch.labels != -100
    assert masked.any()
    assert not torch.isin(batch.labels[masked], torch.tensor([0, 1, 2])).any()


# --- the evaluation's summary numbers -------------------------------------------------------------


def _matrix() -> AdapterMatrix:
    """Two languages, three adapters (the third added post hoc); raw counts chosen so that means mislead."""
    tokens = [1000, 10]
    correct = [[300, 50, 20], [1, 4, 2]]
    nll = [[3000.0, 9000.0, 8000.0], [80.0, 20.0, 50.0]]
    return AdapterMatrix(
        languages=["en_XX", "de_DE"],
        adapters=["en_XX", "de_DE", "nl_XX"],
        accuracy=[[round(100 * c / n, 2) for c in row] for row, n in zip(correct, tokens)],
        perplexity=[[round(math.exp(v / n), 2) for v in row] for row, n in zip(nll, tokens)],
        masked_tokens=tokens,
        sentences=[100, 2],
        correct=correct,
        nll=nll,
    )


def test_summary_pools_masked_tokens_for_accuracy_and_perplexity():
    summary = _matrix().summary(["en_XX", "de_DE"])
    # Perplexity is exp of the mean NLL over all masked tokens of the cells, not a mean of the cells' perplexities.
    assert summary["matching"]["perplexity"] == pytest.approx(math.exp((3000 + 20) / 1010), abs=0.01)
    assert summary["mismatched"]["perplexity"] == pytest.approx(math.exp((9000 + 80) / 1010), abs=0.01)
    assert summary["matching"]["accuracy"] == pytest.approx(100 * 304 / 1010, abs=0.01)
    assert summary["matching"]["tokens"] == 1010
    low, high = wilson_interval(304, 1010)
    assert summary["matching"]["accuracy_ci95"] == [round(100 * low, 2), round(100 * high, 2)]
    # The per-language means are kept beside the pooled figures, each language weighing the same.
    assert summary["mean_accuracy_matching"] == pytest.approx((30 + 40) / 2)
    # The added adapter's column is left out of the pre-trained languages' figures.
    assert summary["mismatched"]["tokens"] == 1010


def test_cell_intervals_are_wilson_over_the_rows_masked_tokens():
    matrix = _matrix()
    intervals = matrix.accuracy_intervals()
    for i, row in enumerate(matrix.correct):
        for j, hits in enumerate(row):
            low, high = wilson_interval(hits, matrix.masked_tokens[i])
            assert intervals[i][j] == [round(100 * low, 2), round(100 * high, 2)]
            assert low * 100 <= matrix.accuracy[i][j] <= high * 100
    assert matrix.to_dict()["accuracy_ci95"] == intervals


def test_post_hoc_summary_beats_only_with_separated_intervals():
    matrix = _matrix()
    matrix.languages.append("nl_XX")
    matrix.masked_tokens.append(2000)
    matrix.correct.append([200, 230, 800])
    matrix.nll.append([9000.0, 8000.0, 4000.0])
    matrix.accuracy.append([10.0, 11.5, 40.0])
    matrix.perplexity.append([90.0, 54.6, 7.39])
    result = post_hoc_summary(matrix, "nl_XX", ["en_XX", "de_DE"])
    assert result["best_original_adapter"] == "de_DE" and result["beats_every_original"]
    assert result["original_languages_own_adapter"] == matrix.summary(["en_XX", "de_DE"])["matching"]
    matrix.correct[2][1] = 790  # an original adapter within reach: the intervals overlap
    matrix.accuracy[2][1] = 39.5
    assert not post_hoc_summary(matrix, "nl_XX", ["en_XX", "de_DE"])["beats_every_original"]


# --- training, export, evaluation on a tiny inline corpus --------------------------------------

TINY_CORPUS = {
    "en_XX": [
        "Select the cells that you want to format.",
        "Click OK to close the dialog and apply the changes.",
        "Choose Format - Cells to open the dialog.",
        "Enter a name for the new style in the box.",
        "The sheet is printed on the selected paper size.",
        "Drag the border of the column to change its width.",
        "Press Enter to insert a new paragraph in the text.",
        "You can save the document in several file formats.",
    ],
    "de_DE": [
        "Wählen Sie die Zellen aus, die Sie formatieren möchten.",
        "Klicken Sie auf OK, um den Dialog zu schließen.",
        "Wählen Sie Format - Zellen, um den Dialog zu öffnen.",
        "Geben Sie einen Namen für die neue Vorlage ein.",
        "Die Tabelle wird auf dem gewählten Papierformat gedruckt.",
        "Ziehen Sie den Rand der Spalte, um die Breite zu ändern.",
        "Drücken Sie die Eingabetaste, um einen neuen Absatz einzufügen.",
        "Sie können das Dokument in mehreren Dateiformaten speichern.",
    ],
    "ja_XX": [
        "書式設定するセルを選択します。",
        "OK をクリックしてダイアログを閉じ、変更を適用します。",
        "書式 - セルを選択してダイアログを開きます。",
        "ボックスに新しいスタイルの名前を入力します。",
        "シートは選択した用紙サイズで印刷されます。",
        "列の境界をドラッグして幅を変更します。",
        "Enter キーを押すとテキストに新しい段落が挿入されます。",
        "ドキュメントはいくつかのファイル形式で保存できます。",
    ],
}


def _write_corpus(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for language, texts in TINY_CORPUS.items():
        (directory / f"{language}.train.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
        (directory / f"{language}.heldout.txt").write_text("\n".join(texts[:3]) + "\n", encoding="utf-8")
    return directory


def _tiny_settings(corpus: Path, out: Path, **changes) -> TrainSettings:
    values = dict(
        corpus=str(corpus),
        out=str(out),
        languages=["en_XX", "ja_XX", "de_DE"],
        vocab_size=160,
        tokenizer_sample_per_language=100,
        layers=1,
        hidden=64,
        heads=2,
        ffn=128,
        seq_len=32,
        rows_per_language=2,
        steps=60,
        warmup_steps=4,
        learning_rate=5e-3,
        threads=1,
        log_every=10,
        checkpoint_every=30,
    )
    values.update(changes)
    return TrainSettings(**values)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    corpus = _write_corpus(root / "corpus")
    settings = _tiny_settings(corpus, root / "run")
    train(settings)
    return settings


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_training_lowers_the_loss_and_logs_every_language(tiny_run):
    log = _log(Path(tiny_run.out))
    assert [record["step"] for record in log] == list(range(10, 61, 10))
    # Each record averages 10 steps; a model that learns nothing stays near log(vocab size).
    assert log[-1]["loss"] < log[0]["loss"] - 0.5
    assert set(log[-1]["loss_by_language"]) == {"en_XX", "ja_XX", "de_DE"}
    assert (Path(tiny_run.out) / "checkpoint" / "trainer_state.pt").exists()


def test_resumed_training_matches_an_uninterrupted_run(tiny_run, tmp_path):
    run = tmp_path / "run"
    (run).mkdir()
    # Same tokenizer, so that only the interruption differs.
    (run / "tokenizer").symlink_to(Path(tiny_run.out) / "tokenizer")
    settings = _tiny_settings(Path(tiny_run.corpus), run, stop_after=25)
    train(settings)
    assert _log(run)[-1]["step"] == 20
    assert json.loads((run / "checkpoint" / "config.json").read_text())["languages"] == settings.languages
    train(_tiny_settings(Path(tiny_run.corpus), run))
    assert [record["step"] for record in _log(run)] == list(range(10, 61, 10))
    resumed = XmodForMaskedLM.from_pretrained(str(run / "checkpoint")).state_dict()
    straight = XmodForMaskedLM.from_pretrained(str(Path(tiny_run.out) / "checkpoint")).state_dict()
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, msg=name)


def test_resume_refuses_changed_settings(tiny_run):
    with pytest.raises(ValueError, match="learning_rate"):
        train(_tiny_settings(Path(tiny_run.corpus), Path(tiny_run.out), learning_rate=1e-4))


def test_export_loads_with_plain_transformers(tiny_run, tmp_path):
    target = tmp_path / "export"
    info = export_model(tiny_run.out, target, corpus=tiny_run.corpus, dtype="auto")
    assert info["dtype"] in ("float16", "float32")
    assert (target / "model.safetensors").exists()
    model = XmodForMaskedLM.from_pretrained(str(target))
    tokenizer = AutoTokenizer.from_pretrained(str(target))
    assert model.config.languages == ["en_XX", "ja_XX", "de_DE"]
    assert model.config.default_language is None
    assert tokenizer.model_max_length == 512
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
    assert tokenizer.mask_token_id == len(tokenizer) - 1 == model.config.vocab_size - 1
    batch = tokenizer(["Klicken Sie auf <mask>."], return_tensors="pt")
    logits = model(**batch, lang_ids=torch.tensor([2])).logits
    assert logits.shape == (1, batch["input_ids"].shape[1], model.config.vocab_size)

    matrix = adapter_matrix(model.float(), tokenizer, {k: v[:3] for k, v in TINY_CORPUS.items()})
    assert matrix.languages == matrix.adapters == ["en_XX", "ja_XX", "de_DE"]
    assert all(0 <= value <= 100 for row in matrix.accuracy for value in row)
    assert all(value >= 1 for row in matrix.perplexity for value in row)


def test_trained_model_loads_in_the_app_and_matches_plain_transformers(tiny_run, tmp_path):
    target = tmp_path / "export"
    export_model(tiny_run.out, target, corpus=tiny_run.corpus, dtype="float32")
    explorer = Explorer.from_pretrained(str(target))
    assert explorer.languages == ["en_XX", "ja_XX", "de_DE"]
    text = "Klicken Sie auf <mask>, um den Dialog zu schließen."
    result = explorer.predict_masks(text, ["de_DE", "en_XX"], top_k=3).to_dict()
    model = XmodForMaskedLM.from_pretrained(str(target)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(target))
    batch = tokenizer(text, return_tensors="pt")
    at = int((batch["input_ids"][0] == tokenizer.mask_token_id).nonzero())
    for code in ("de_DE", "en_XX"):
        with torch.no_grad():
            logits = model(**batch, lang_ids=torch.tensor([model.config.languages.index(code)])).logits
        top = logits[0, at].softmax(-1).topk(3)
        shown = result["masks"][0]["predictions"][code]
        assert [p["token_id"] for p in shown] == top.indices.tolist()
        assert [p["probability"] for p in shown] == pytest.approx(top.values.tolist(), abs=1e-5)


def test_mask_candidates_round_trip(tiny_run):
    tokenizer = AutoTokenizer.from_pretrained(str(Path(tiny_run.out) / "tokenizer"))
    for language, texts in TINY_CORPUS.items():
        for text in texts:
            for example in mask_candidates(tokenizer, text, language):
                assert example.text.count(MASK) == 1
                assert example.text.replace(MASK, example.answer) == text
                assert answer_token(tokenizer, example) != tokenizer.unk_token_id


# --- adding a language post hoc, on the tiny model ------------------------------------------------

TINY_DUTCH = [
    "Selecteer de cellen die u wilt opmaken.",
    "Klik op OK om het dialoogvenster te sluiten.",
    "Kies Opmaak - Cellen om het dialoogvenster te openen.",
    "Voer een naam voor de nieuwe opmaakprofiel in.",
    "Het blad wordt afgedrukt op het geselecteerde papierformaat.",
    "Sleep de rand van de kolom om de breedte te wijzigen.",
    "Druk op Enter om een nieuwe alinea in te voegen.",
    "U kunt het document in verschillende bestandsindelingen opslaan.",
]


@pytest.fixture(scope="module")
def tiny_export(tiny_run, tmp_path_factory):
    target = tmp_path_factory.mktemp("tiny-export") / "model"
    export_model(tiny_run.out, target, corpus=tiny_run.corpus, dtype="float16")
    corpus = Path(tiny_run.corpus)
    (corpus / "nl_XX.train.txt").write_text("\n".join(TINY_DUTCH) + "\n", encoding="utf-8")
    (corpus / "nl_XX.heldout.txt").write_text("\n".join(TINY_DUTCH[:4]) + "\n", encoding="utf-8")
    return target


def _tiny_addition(tiny_export: Path, root: Path, **changes) -> AddLanguageSettings:
    values = dict(
        language="nl_XX",
        model=str(tiny_export),
        target=str(root / "extended"),
        corpus=str(tiny_export.parent.parent / "corpus"),
        out=str(root / "run"),
        steps=20,
        warmup_steps=2,
        rows=2,
        seq_len=32,
        learning_rate=5e-3,
        log_every=5,
        eval_every=10,
        eval_sample=1,
    )
    values.update(changes)
    return AddLanguageSettings(**values)


def test_training_a_new_adapter_changes_nothing_else(tiny_export, tiny_run, tmp_path):
    """train_candidate itself leaves every tensor but the new adapter's as it was (not only the writer's copy)."""
    settings = _tiny_addition(tiny_export, tmp_path, corpus=tiny_run.corpus)
    model = extended_model(tiny_export, "nl_XX")
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_export))
    data = tokenize_paragraphs(tokenizer, TINY_DUTCH, settings.seq_len - 2)
    selection = masked_set(tokenizer, TINY_DUTCH[:2], seed=0, rounds=2)
    with (tmp_path / "log.jsonl").open("w") as log:
        candidate = Candidate("copy of de_DE", ["de_DE"])
        train_candidate(model, candidate, data, selection, tokenizer, settings, log)
    after = model.state_dict()
    moved = sorted(name for name in before if not torch.equal(before[name], after[name]))
    assert moved and all(".adapter_modules.nl_XX." in name for name in moved)
    assert set(moved) == set(candidate.state)  # every tensor of the new adapter was trained
    assert len(candidate.curve) == 3  # steps 0, 10, 20


def test_add_language_end_to_end_on_a_tiny_model(tiny_export, tiny_run, tmp_path):
    settings = _tiny_addition(tiny_export, tmp_path, corpus=tiny_run.corpus)
    record = add_language(settings)
    target = Path(settings.target)
    config = json.loads((target / "config.json").read_text())
    assert config["languages"] == ["en_XX", "ja_XX", "de_DE", "nl_XX"]
    assert config["post_hoc_languages"] == ["nl_XX"]
    # The source had no record of its tensors yet: it was made before the addition, and nothing recorded moved.
    recorded = json.loads((tiny_export / ORIGINAL_HASHES).read_text())
    assert recorded["languages"] == ["en_XX", "ja_XX", "de_DE"]
    assert changed_tensors(target / "model.safetensors", recorded) == []
    added = set(load_file(str(target / "model.safetensors"))) - set(recorded["tensors"])
    prefix = "roberta.encoder.layer.0.output.adapter_modules.nl_XX."
    assert added == {prefix + name for name in ("dense1.weight", "dense1.bias", "dense2.weight", "dense2.bias")}
    # Both of the paper's initialisations were trained with the same budget; the better one on the selection text won.
    zero_shot = record["original_adapters_on_selection_text"]
    assert list(record["candidates"]) == [f"copy of {max(zero_shot, key=zero_shot.get)}", "mean of 3 adapters"]
    best = max(record["candidates"].values(), key=lambda c: c["selection_accuracy"])
    assert record["candidates"][record["chosen"]]["selection_accuracy"] == best["selection_accuracy"]
    assert all(len(c["curve"]) == 3 for c in record["candidates"].values())
    assert json.loads((target / POST_HOC_RECORD).read_text())["nl_XX"]["chosen"] == record["chosen"]
    inits = [json.loads(line)["init"] for line in (Path(settings.out) / "log.jsonl").read_text().splitlines()]
    assert inits == [name for name in record["candidates"] for _ in range(4)]  # logged every 5 of 20 steps

    source, extended = Explorer.from_pretrained(str(tiny_export)), Explorer.from_pretrained(str(target))
    info = extended.info()
    assert info.languages == config["languages"] and info.post_hoc_languages == ["nl_XX"]
    assert info.to_frame()["added_post_hoc"].tolist() == [False, False, False, True]
    assert source.info().post_hoc_languages == [] and not source.info().to_frame()["added_post_hoc"].any()
    assert "| Added post hoc | nl\\_XX (adapter trained after pre-training" in summary_markdown(info)
    assert "Added post hoc" not in summary_markdown(source.info())
    text = "Klicken Sie auf <mask>, um den Dialog zu schließen."
    assert_same_predictions(
        extended.predict_masks(text, ["en_XX", "ja_XX", "de_DE"]).to_dict(),
        source.predict_masks(text, ["en_XX", "ja_XX", "de_DE"]).to_dict(),
        atol=0,
    )
    with pytest.raises(ValueError, match="already has an adapter for nl_XX"):
        add_language(_tiny_addition(target, tmp_path / "again", corpus=tiny_run.corpus))


# --- the shipped model --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    assert (SHIPPED / "config.json").exists(), "assets/xmod-mini is missing: rebuild it (see its README.md)"
    model = XmodForMaskedLM.from_pretrained(str(SHIPPED), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(SHIPPED))
    return model, tokenizer


def test_shipped_model_is_small_and_has_the_mini_languages(shipped):
    model, tokenizer = shipped
    assert model.config.languages == SHIPPED_LANGUAGES
    assert model.config.post_hoc_languages == POST_HOC_LANGUAGES  # an extra config key that transformers keeps
    assert model.config.default_language is None
    assert tokenizer.model_max_length == 512
    assert sum(p.stat().st_size for p in SHIPPED.iterdir()) < 30e6


def test_offline_default_is_the_shipped_model(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    (tmp_path / "empty-cache").mkdir()
    explorer = Explorer.from_pretrained()
    info = explorer.info()
    assert info.languages == SHIPPED_LANGUAGES and not info.random_weights
    assert info.post_hoc_languages == POST_HOC_LANGUAGES
    assert info.to_frame().set_index("code")["added_post_hoc"].to_dict() == {
        code: code in POST_HOC_LANGUAGES for code in SHIPPED_LANGUAGES
    }
    assert "mini" in info.reason and "HF_HUB_OFFLINE" in info.reason


def _fill_scores(model, tokenizer, examples, adapter: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Probability of each example's answer and whether it is the top-1, under one adapter."""
    batch = tokenizer([e.text for e in examples], return_tensors="pt", padding=True)
    lang_ids = torch.tensor([model.config.languages.index(adapter)] * len(examples))
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], lang_ids=lang_ids).logits
    rows, cols = (batch["input_ids"] == tokenizer.mask_token_id).nonzero(as_tuple=True)
    assert rows.tolist() == list(range(len(examples))), "every text needs exactly one <mask>"
    probs = logits[rows, cols].softmax(-1)
    answers = torch.tensor([answer_token(tokenizer, e) for e in examples])
    return probs[torch.arange(len(examples)), answers], probs.argmax(-1) == answers


def test_matching_adapter_fills_heldout_masks_better_than_the_others(shipped):
    model, tokenizer = shipped
    examples = read_examples(ASSETS / "mini_heldout.tsv")
    languages = sorted({e.language for e in examples})
    # Examples need a whole word the own adapter fills; Dutch, cut into small pieces by a tokenizer that never
    # saw it, has none (see the card), so the file covers the pre-trained languages. All adapters compete.
    assert set(languages) == set(MINI_LANGUAGES)
    matching_prob, mismatched_prob, matching_top1, mismatched_top1 = [], [], [], []
    for language in languages:
        group = [e for e in examples if e.language == language]
        assert all(answer_token(tokenizer, e) != tokenizer.unk_token_id for e in group)
        own_prob, own_top1 = _fill_scores(model, tokenizer, group, language)
        others = [_fill_scores(model, tokenizer, group, a) for a in SHIPPED_LANGUAGES if a != language]
        other_prob = torch.stack([p for p, _ in others]).mean()
        # Per language: the text's own adapter gives its masked words more probability than others do.
        assert own_prob.mean() > other_prob, language
        matching_prob.append(own_prob.mean())
        mismatched_prob.append(other_prob)
        matching_top1.append(own_top1.float().mean())
        mismatched_top1.append(torch.stack([t.float() for _, t in others]).mean())
    assert torch.stack(matching_top1).mean() > torch.stack(mismatched_top1).mean()
    assert torch.stack(matching_prob).mean() > 2 * torch.stack(mismatched_prob).mean()


def test_whole_word_accuracy_scores_each_word_under_the_adapter_asked_for(shipped):
    model, tokenizer = shipped
    rows = [e for e in read_examples(ASSETS / "mini_heldout.tsv") if e.language == "de_DE"]
    texts = [e.text.replace(MASK, e.answer) for e in rows]
    candidates = [e for t in texts if readable(t, "de_DE") for e in mask_candidates(tokenizer, t, "de_DE")]
    assert {(e.text, e.answer) for e in rows} <= {(e.text, e.answer) for e in candidates}
    for adapter in ("de_DE", "ja_XX"):
        result = whole_word_accuracy(model, tokenizer, texts, "de_DE", adapter)
        alone = [
            int(fill_probabilities(model, tokenizer, [e], adapter)[1]) == answer_token(tokenizer, e) for e in candidates
        ]
        assert result["candidates"] == len(candidates) and result["correct"] == sum(alone), adapter
        assert result["accuracy_ci95"] == [round(100 * x, 2) for x in wilson_interval(sum(alone), len(candidates))]
    # The held-out file's words are ones the German adapter fills; the Japanese adapter fills fewer.
    assert whole_word_accuracy(model, tokenizer, texts, "de_DE", "de_DE")["correct"] >= len(rows)
    assert whole_word_accuracy(model, tokenizer, texts, "de_DE", "ja_XX")["correct"] < len(rows)


def test_app_examples_name_mini_languages_and_hold_one_mask():
    with (ASSETS / "mini_examples.tsv").open(encoding="utf-8") as handle:
        header, *rows = [line.rstrip("\n").split("\t") for line in handle if line.strip()]
    assert header == ["languages", "text", "answer", "note"]
    assert len(rows) >= len(SHIPPED_LANGUAGES)
    for codes, text, answer, _ in rows:
        assert set(codes.split(",")) <= set(SHIPPED_LANGUAGES)
        assert text.count(MASK) == 1 and answer


# --- adding a language post hoc: nothing else moves ---------------------------------------------

ORIGINAL_PREDICTIONS = Path(__file__).resolve().parent / "data" / "mini_original_predictions.json"


def original_predictions(explorer: Explorer, languages: list[str]) -> list[dict]:
    """Top-5 ids and probabilities under every given adapter for the first held-out example of each language.

    tests/data/mini_original_predictions.json holds this output for the 12-language model as shipped before
    any language was added (assets/xmod-mini/model.safetensors with SHA-256 99aecfeb...).
    """
    first = {}
    for example in read_examples(ASSETS / "mini_heldout.tsv"):
        first.setdefault(example.language, example)
    results = []
    for language in languages:
        prediction = explorer.predict_masks(first[language].text, languages, top_k=5).to_dict()
        results.append(
            {
                "text": prediction["text"],
                "languages": prediction["languages"],
                "masks": [
                    {
                        "position": slot["position"],
                        "predictions": {
                            code: [{"token_id": g["token_id"], "probability": g["probability"]} for g in guesses]
                            for code, guesses in slot["predictions"].items()
                        },
                    }
                    for slot in prediction["masks"]
                ],
            }
        )
    return results


def _original_hashes() -> dict:
    return json.loads((SHIPPED / ORIGINAL_HASHES).read_text(encoding="utf-8"))


def test_every_original_tensor_of_the_shipped_model_is_bit_identical():
    recorded = _original_hashes()
    assert len(recorded["tensors"]) == 266  # 74 shared tensors + 12 adapters x 4 layers x 4 tensors
    assert changed_tensors(SHIPPED / "model.safetensors", recorded) == []


def test_the_tensor_check_names_a_perturbed_tensor(tmp_path):
    """The check must fail on a copy of the shipped weights with one shared and one adapter value nudged."""
    tensors = load_file(str(SHIPPED / "model.safetensors"))
    nudged = [
        "roberta.encoder.layer.2.attention.self.query.weight",
        "roberta.encoder.layer.0.output.adapter_modules.en_XX.dense2.bias",
    ]
    for name in nudged:
        values = tensors[name].clone()
        values.view(-1).view(torch.int16)[7] ^= 1  # the lowest bit of one float16 value: one step of its precision
        assert not torch.equal(values, tensors[name])
        tensors[name] = values
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    assert changed_tensors(tmp_path / "model.safetensors", _original_hashes()) == sorted(nudged)
    del tensors[nudged[0]]
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    assert nudged[0] in changed_tensors(tmp_path / "model.safetensors", _original_hashes())


def test_original_languages_predict_exactly_as_before_the_addition():
    golden = json.loads(ORIGINAL_PREDICTIONS.read_text(encoding="utf-8"))
    explorer = Explorer.from_pretrained(str(SHIPPED))
    assert explorer.languages[: len(golden["languages"])] == golden["languages"]  # original lang ids unchanged
    now = original_predictions(explorer, golden["languages"])
    assert len(now) == len(golden["predictions"]) == 12
    for before, after in zip(golden["predictions"], now):
        assert after["text"] == before["text"]
        assert_same_predictions(after, before, atol=1e-6)
