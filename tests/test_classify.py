"""Classification and the transfer lab: numbers equal plain transformers, probes learn, frozen stays frozen."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import random
import shutil
import time

import pytest
import torch
from helpers import LANGUAGES, ROOT
from transformers import AutoTokenizer, XmodForSequenceClassification, XmodModel

from xmod_explorer import Explorer, ExplorerError, lab
from xmod_explorer.classify import ProbeHead, TransferResult, TransferRow
from xmod_explorer.datasets import (
    SENTIMENT_TARGETS,
    Example,
    read_labelled_csv,
    sentiment_test,
    sentiment_train,
)
from xmod_explorer.limits import Limits
from xmod_explorer.tiny import TinySpec, build_random_checkpoint

LABELS = ["negative", "neutral", "positive"]
TEXT = "Chaque langue a son propre adaptateur."
ORDER = ["de_DE", "ru_RU", "fr_XX", "en_XX", "ja_XX"]  # neither alphabetical nor the model's order


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, tokenizer):
    spec = TinySpec(languages=LANGUAGES, head="classification", labels=LABELS, seed=3)
    return build_random_checkpoint(tmp_path_factory.mktemp("classifier"), spec, tokenizer)


@pytest.fixture(scope="module")
def classifier_converted_dir(tmp_path_factory, classifier_dir):
    from xmod_explorer.convert import convert

    out = tmp_path_factory.mktemp("classifier-converted") / "adapters-format"
    convert(str(classifier_dir), out)
    return out


@pytest.fixture(scope="module")
def task_adapter_dir(tmp_path_factory, classifier_converted_dir):
    """The converted classifier plus a (random, non-trivial) task adapter saved inside the model."""
    from adapters import AutoAdapterModel, SeqBnConfig

    out = tmp_path_factory.mktemp("task") / "with-task"
    shutil.copytree(classifier_converted_dir, out)
    model = AutoAdapterModel.from_pretrained(str(out))
    model.add_adapter("sentiment", config=SeqBnConfig(reduction_factor=4))
    torch.manual_seed(5)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".adapters.sentiment." in name:
                parameter.add_(torch.randn_like(parameter) * 0.3)
    model.save_pretrained(str(out), safe_serialization=True)
    return out


def test_converted_adapters_and_heads_load_with_the_adapters_librarys_plain_calls(
    classifier_dir, classifier_converted_dir
):
    """The README's block, run as written (only the folder filled in), against XmodForSequenceClassification."""
    import re

    from adapters import AutoAdapterModel

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (block,) = [code for code in re.findall(r"```python\n(.+?)```", readme, flags=re.S) if "load_head(" in code]
    line = next(line for line in block.splitlines() if line.startswith("folder = "))
    namespace: dict = {}
    with torch.no_grad():
        exec(block.replace(line, f"folder = {str(classifier_converted_dir)!r}"), namespace)
    expected = reference_probabilities(classifier_dir, "Das Programm stürzt ab.")
    torch.testing.assert_close(namespace["probabilities"][0], expected["de_DE"], atol=1e-5, rtol=0)
    assert (expected["de_DE"] - expected["ja_XX"]).abs().max() > 1e-3  # the adapter that was loaded matters
    # The head folder alone restores the head: drop the one saved inside the model, then load it back.
    model = AutoAdapterModel.from_pretrained(str(classifier_converted_dir)).eval()
    model.delete_head("classification")
    model.load_adapter(str(classifier_converted_dir / "adapters" / "ja_XX"), set_active=True)
    model.load_head(str(classifier_converted_dir / "heads" / "classification"))
    encoded = AutoTokenizer.from_pretrained(str(classifier_converted_dir))(
        "Das Programm stürzt ab.", return_tensors="pt"
    )
    with torch.no_grad():
        got = model(**encoded).logits.softmax(-1)[0]
    torch.testing.assert_close(got, expected["ja_XX"], atol=1e-5, rtol=0)
    record = json.loads((classifier_converted_dir / "xmod_explorer.json").read_text())
    assert "pooler" in record and "random" in record["pooler"]


def reference_probabilities(folder, text: str) -> dict[str, torch.Tensor]:
    """The documented way: XmodForSequenceClassification, set_default_language, one language at a time."""
    model = XmodForSequenceClassification.from_pretrained(str(folder)).eval()
    encoded = AutoTokenizer.from_pretrained(str(folder))(text, return_tensors="pt")
    result = {}
    for code in model.config.languages:
        model.set_default_language(code)
        with torch.no_grad():
            result[code] = model(**encoded).logits[0].softmax(-1)
    return result


def count_forward_passes(explorer: Explorer) -> list[int]:
    """Every forward pass, however the backend runs its layers, embeds the input exactly once."""
    calls = [0]
    explorer.backend.encoder.embeddings.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("how", ["transformers", "adapters-in-memory", "adapters-converted"])
def test_classify_equals_per_language_reference(classifier_dir, classifier_converted_dir, how):
    folder = classifier_converted_dir if how == "adapters-converted" else classifier_dir
    backend = {"transformers": "transformers", "adapters-in-memory": "adapters", "adapters-converted": "auto"}[how]
    explorer = Explorer.from_pretrained(str(folder), backend=backend)
    assert explorer.info().backend == how.split("-")[0]
    assert explorer.info().labels == LABELS and not explorer.info().can_fill_masks
    calls = count_forward_passes(explorer)
    result = explorer.classify(TEXT, ORDER)
    assert calls[0] == 1  # all languages in one batched pass
    assert result.languages == ORDER and result.labels == LABELS
    reference = reference_probabilities(classifier_dir, TEXT)
    for code in ORDER:
        got = torch.tensor([result.probabilities[code][label] for label in LABELS])
        assert torch.allclose(got, reference[code], atol=1e-5, rtol=0), (code, got, reference[code])
    # Guard: if every adapter gave the same probabilities, equality above would prove little.
    assert (
        max(
            abs(result.probabilities[a]["positive"] - result.probabilities[b]["positive"]) for a in ORDER for b in ORDER
        )
        > 1e-3
    )


def test_classification_result_shapes(classifier_dir):
    result = Explorer.from_pretrained(str(classifier_dir)).classify(TEXT, ["ja_XX", "de_DE"])
    data = json.loads(json.dumps(result.to_dict()))
    assert data["labels"] == LABELS and data["languages"] == ["ja_XX", "de_DE"]
    assert set(data["probabilities"]) == {"ja_XX", "de_DE"}
    assert sum(data["probabilities"]["ja_XX"].values()) == pytest.approx(1.0, abs=1e-5)
    frame = result.to_frame()
    assert list(frame.columns) == ["language", "predicted", *LABELS] and len(frame) == 2


def test_task_adapter_is_stacked_on_each_language_adapter(task_adapter_dir, classifier_converted_dir):
    from adapters import AutoAdapterModel
    from adapters.composition import Stack

    explorer = Explorer.from_pretrained(str(task_adapter_dir))
    assert explorer.backend.task_adapter == "sentiment"
    result = explorer.classify(TEXT, ORDER)
    model = AutoAdapterModel.from_pretrained(str(task_adapter_dir)).eval()
    for code in LANGUAGES:
        model.load_adapter(str(task_adapter_dir / "adapters" / code), load_as=code, use_safetensors=True)
    encoded = AutoTokenizer.from_pretrained(str(task_adapter_dir))(TEXT, return_tensors="pt")
    without_task = Explorer.from_pretrained(str(classifier_converted_dir)).classify(TEXT, ORDER)
    for code in ORDER:
        model.set_active_adapters(Stack(code, "sentiment"))
        with torch.no_grad():
            expected = model(**encoded).logits[0].softmax(-1)
        got = torch.tensor([result.probabilities[code][label] for label in LABELS])
        assert torch.allclose(got, expected, atol=1e-5, rtol=0), (code, got, expected)
        plain = torch.tensor([without_task.probabilities[code][label] for label in LABELS])
        assert (got - plain).abs().max() > 1e-4  # the task adapter really acts


def test_checkpoint_without_classification_head(base_dir):
    explorer = Explorer.from_pretrained(str(base_dir))
    with pytest.raises(ExplorerError, match=r"no sequence-classification head.*XmodForSequenceClassification"):
        explorer.classify(TEXT, ["en_XX"])


# ----- probes ------------------------------------------------------------------------------------

# Two disjoint word lists the tiny tokenizer knows; a sentence is built from one list only.
GOOD = ["explorer", "shows", "language", "adapter", "changes", "choose", "compare", "predictions"]
BAD = ["modèle", "partage", "poids", "entre", "langues", "chaque", "propre", "autres"]


def separable(count: int, seed: int, language: str | None = None) -> list[Example]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        label, words = ("good", GOOD) if i % 2 == 0 else ("bad", BAD)
        rows.append(Example(" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))), label, language))
    return rows


def model_hash(explorer: Explorer) -> str:
    digest = hashlib.sha256()
    for name, tensor in list(explorer.backend.model.named_parameters()) + list(explorer.backend.model.named_buffers()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("backend", ["transformers", "adapters"])
def test_probe_learns_separable_data_and_leaves_the_model_unchanged(base_dir, backend):
    explorer = Explorer.from_pretrained(str(base_dir), backend=backend)
    before = model_hash(explorer)
    started = time.monotonic()
    training = lab.train_probe(explorer, separable(120, seed=1), "de_DE")
    assert time.monotonic() - started < 30  # seconds on a tiny model
    assert model_hash(explorer) == before
    assert not any(p.requires_grad for p in explorer.backend.model.parameters())
    assert training.head.labels == ["bad", "good"] and training.head.source_language == "de_DE"
    assert training.examples == 120 and training.steps == len(training.losses) >= 2
    assert training.losses[-1] < training.losses[0]
    held_out = separable(60, seed=2, language="de_DE")
    result = lab.evaluate_transfer(explorer, training.head, held_out)
    assert result.rows[0].language == "de_DE" and result.rows[0].examples == 60
    # Chance is 0.5; the tiny model and its tokenizer are the same on every run, so this bar need not absorb noise.
    assert result.rows[0].target_adapter_accuracy >= 0.9
    assert result.rows[0].target_adapter_accuracy == result.rows[0].source_adapter_accuracy  # same adapter twice


def test_probe_features_equal_unbatched_reference(base_dir):
    """Batching by length, padding and mixed languages do not change the pooled features."""
    explorer = Explorer.from_pretrained(str(base_dir))
    texts = [
        "Choose two languages.",
        "The model shares all other weights between languages.",
        "Jede Schicht.",
        "Chaque langue a son propre adaptateur dans le modèle.",
    ]
    codes = ["ja_XX", "de_DE", "ja_XX", "fr_XX"]
    rows = [explorer.tokenize(t) for t in texts]
    features = explorer.pooled_features(rows, codes, batch_size=3)
    model = XmodModel.from_pretrained(str(base_dir)).eval()
    tokenizer = explorer.tokenizer
    special = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}  # <unk> stands for text
    for i, (text, code) in enumerate(zip(texts, codes)):
        model.set_default_language(code)
        ids = torch.tensor([rows[i]])
        with torch.no_grad():
            states = model(input_ids=ids).last_hidden_state[0]
        keep = [j for j, t in enumerate(rows[i]) if t not in special]
        assert torch.allclose(features[i], states[keep].mean(0), atol=1e-5), (text, code)


def test_transfer_equals_one_text_at_a_time(base_dir):
    explorer = Explorer.from_pretrained(str(base_dir))
    training = lab.train_probe(explorer, separable(80, seed=3), "en_XX")
    tests = {"ja_XX": separable(10, seed=4), "fr_XX": separable(12, seed=5)}
    result = lab.evaluate_transfer(explorer, training.head, tests, ["fr_XX", "ja_XX"])
    assert [row.language for row in result.rows] == ["fr_XX", "ja_XX"]
    for row in result.rows:
        rows = tests[row.language]
        target = source = only_target = only_source = 0
        for example in rows:
            single = explorer.classify(example.text, [row.language, "en_XX"], head=training.head).predicted()
            right = (single[row.language] == example.label, single["en_XX"] == example.label)
            target, source = target + right[0], source + right[1]
            only_target, only_source = (
                only_target + (right[0] and not right[1]),
                only_source + (right[1] and not right[0]),
            )
        assert row.examples == len(rows)
        assert row.target_adapter_accuracy == pytest.approx(target / len(rows))
        assert row.source_adapter_accuracy == pytest.approx(source / len(rows))
        assert (row.only_target_correct, row.only_source_correct) == (only_target, only_source)
        assert row.majority_share == 0.5  # separable() alternates the two labels
    frame = result.to_frame()
    assert list(frame.language) == ["fr_XX", "ja_XX"] and "source adapter (en_XX)" in frame.columns


def transfer_row(language, target, source, only_target, only_source, examples=48):
    return TransferRow(language, examples, target, source, only_target, only_source, 0.5)


def test_transfer_rows_carry_wilson_intervals_and_exact_mcnemar_p_values():
    """Checked against scipy.stats: binomtest's Wilson interval, and binomtest on the discordant texts."""
    from scipy import stats as scipy_stats

    row = transfer_row("de_DE", 30, 22, 12, 4)  # 30 - 22 = 12 - 4: the discordant counts fit the totals
    for correct, (low, high) in ((30, row.target_adapter_ci), (22, row.source_adapter_ci)):
        expected = scipy_stats.binomtest(correct, 48).proportion_ci(confidence_level=0.95, method="wilson")
        assert (low, high) == pytest.approx((expected.low, expected.high), abs=1e-12)
    assert row.gap_p_value == pytest.approx(scipy_stats.binomtest(12, 16, 0.5).pvalue, rel=1e-12)
    data = row.to_dict()
    assert data["target_adapter_ci"] == row.target_adapter_ci and data["gap_p_value"] == row.gap_p_value
    assert data["gap"] == pytest.approx(8 / 48)


def test_the_summary_counts_targets_only_and_claims_only_what_the_test_supports():
    result = TransferResult(
        "m",
        "en_XX",
        ["negative", "positive"],
        [
            transfer_row("en_XX", 40, 40, 0, 0),  # the source language: same adapter both ways
            transfer_row("de_DE", 34, 20, 15, 1),  # p < 0.001: better
            transfer_row("fr_XX", 30, 26, 6, 2),  # a gap of 4 texts, p = 0.29: the data cannot tell
            transfer_row("ja_XX", 18, 30, 1, 13),  # p = 0.002: worse
        ],
    )
    assert [row.gap_p_value < 0.05 for row in result.target_rows] == [True, False, True]
    summary = result.summary()
    assert "Transfer to 3 target languages" in summary
    assert "more accurate than the source adapter (en_XX) in 1 (de_DE)" in summary
    assert "less accurate in 1 (ja_XX)" in summary and "in 1 the test data cannot tell" in summary
    assert "The en_XX row uses the same adapter both ways and is not counted." in summary
    assert "fr_XX" not in summary  # a gap without evidence is not named as a result
    frame = result.to_frame()
    assert {"target adapter low", "target adapter high", "gap p-value"} <= set(frame.columns)
    assert result.to_dict()["summary"] == summary


def test_probe_training_reaches_the_optimum_that_scipy_finds():
    """The probe's L-BFGS runs to a gradient tolerance; scipy's L-BFGS-B on the same objective agrees."""
    import numpy as np
    from scipy import optimize

    from xmod_explorer.classify import GRADIENT_TOLERANCE, fit_linear_head

    generator = torch.Generator().manual_seed(0)
    features = torch.randn(200, 48, generator=generator)
    targets = ((features[:, :3].sum(1) + torch.randn(200, generator=generator)) > 0).long()  # noisy, not separable
    fit = fit_linear_head(features, targets, 2, weight_decay=1e-2)
    assert fit.converged and fit.gradient_norm <= GRADIENT_TOLERANCE and not fit.stopped
    x, y = features.double().numpy(), targets.numpy()

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        weight, bias = flat[: 2 * 48].reshape(2, 48), flat[2 * 48 :]
        logits = x @ weight.T + bias
        logits -= logits.max(1, keepdims=True)
        probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        loss = -np.log(probabilities[np.arange(len(y)), y]).mean() + 0.5e-2 * (weight**2).sum()
        error = probabilities.copy()
        error[np.arange(len(y)), y] -= 1
        error /= len(y)
        return loss, np.concatenate([(error.T @ x + 1e-2 * weight).ravel(), error.sum(0)])

    best = optimize.minimize(objective, np.zeros(2 * 48 + 2), jac=True, method="L-BFGS-B", options={"gtol": 1e-10})
    ours = np.concatenate([fit.weight.double().numpy().ravel(), fit.bias.double().numpy()])
    assert objective(ours)[0] - best.fun < 1e-8
    assert np.abs(ours - best.x).max() < 1e-3


def test_probe_on_the_bundled_sentiment_set(base_dir):
    explorer = Explorer.from_pretrained(str(base_dir))
    train = sentiment_train()
    assert len(train) >= 160 and {e.label for e in train} == {"negative", "positive"}
    assert sum(e.label == "positive" for e in train) == len(train) // 2
    test = sentiment_test()
    by_language = {code: [e for e in test if e.language == code] for code in ["en_XX", *SENTIMENT_TARGETS]}
    assert len({len(rows) for rows in by_language.values()}) == 1 and len(by_language["de_DE"]) >= 40
    assert all([e.label for e in rows] == [e.label for e in by_language["en_XX"]] for rows in by_language.values())
    assert not {e.text for e in train} & {e.text for e in by_language["en_XX"]}  # held out
    training = lab.train_probe(explorer, train, "en_XX")
    # All seven languages given, two asked for: rows in es_XX and zh_CN (which this model lacks) are left out.
    result = lab.evaluate_transfer(explorer, training.head, sentiment_test(), ["de_DE", "ja_XX"])
    assert isinstance(result, TransferResult) and [row.examples for row in result.rows] == [48, 48]
    with pytest.raises(ExplorerError, match="Unknown language 'es_XX'"):
        lab.evaluate_transfer(explorer, training.head, sentiment_test())  # all of them asked for, implicitly


def test_time_cap_stops_training_and_says_so(base_dir):
    limits = dataclasses.replace(Limits.local(), max_train_seconds=2.0)
    explorer = Explorer.from_pretrained(str(base_dir), limits=limits)

    def slow_training(fraction, desc=None):
        if desc and desc.startswith("Training"):
            time.sleep(0.8)

    training = lab.train_probe(explorer, separable(40, seed=6), "en_XX", max_steps=50, progress=slow_training)
    assert training.stopped_early and "time cap" in training.note
    assert 1 <= training.steps < 50


@pytest.mark.parametrize(
    "examples, source, message",
    [
        ([("a text", "x"), ("another", "x")], "en_XX", "at least two labels"),
        ([("a text", "x"), ("", "y")], "en_XX", "Row 2.*text is empty"),
        ([("a text", "x"), ("b", None)], "en_XX", "Row 2.*label is empty"),
        ([("a text", "x", "de_DE"), ("b", "y")], "en_XX", "Row 1.*de_DE.*source language en_XX"),
        ([("a", "x"), ("b", "y")], "xx_YY", "Unknown language"),
        ("just a string", "en_XX", "list of"),
    ],
)
def test_bad_training_input(base_dir, examples, source, message):
    with pytest.raises(ExplorerError, match=message):
        lab.train_probe(Explorer.from_pretrained(str(base_dir)), examples, source)


def test_training_is_capped_in_examples(base_dir):
    limits = dataclasses.replace(Limits.local(), max_train_examples=10)
    with pytest.raises(ExplorerError, match="at most 10"):
        lab.train_probe(Explorer.from_pretrained(str(base_dir), limits=limits), separable(11, seed=0), "en_XX")


# ----- heads on disk -------------------------------------------------------------------------------


def test_head_round_trip(base_dir, tmp_path):
    explorer = Explorer.from_pretrained(str(base_dir))
    head = lab.train_probe(explorer, separable(40, seed=7), "fr_XX").head
    path = head.save(tmp_path / "head.safetensors")
    for loaded in (ProbeHead.load(path), ProbeHead.load(path.read_bytes())):
        assert loaded.labels == head.labels and loaded.source_language == "fr_XX" and loaded.model == head.model
        a = explorer.classify("choose compare adapter", ["fr_XX", "ja_XX"], head=head).to_dict()
        b = explorer.classify("choose compare adapter", ["fr_XX", "ja_XX"], head=loaded).to_dict()
        assert a == {**b, "head": a["head"]} and a["head"] == b["head"]
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:  # one plain safetensors file with the label map inside
        assert json.loads(handle.metadata()["labels"]) == head.labels


@pytest.mark.parametrize("make", ["random-bytes", "model-weights", "truncated", "empty"])
def test_a_file_that_is_not_a_head(base_dir, tmp_path, make):
    head = lab.train_probe(Explorer.from_pretrained(str(base_dir)), separable(20, seed=8), "en_XX").head
    data = {
        "random-bytes": bytes(range(256)) * 4,
        "model-weights": (base_dir / "model.safetensors").read_bytes(),
        "truncated": head.to_bytes()[:-40],
        "empty": b"",
    }[make]
    path = tmp_path / "file.safetensors"
    path.write_bytes(data)
    with pytest.raises(ExplorerError, match="not a probe head"):
        ProbeHead.load(path)


def test_a_head_from_another_model_is_refused(base_dir, prenorm_dir):
    head = lab.train_probe(Explorer.from_pretrained(str(base_dir)), separable(20, seed=9), "en_XX").head
    with pytest.raises(ExplorerError, match=r"trained on .* Load that model again"):
        Explorer.from_pretrained(str(prenorm_dir)).classify("choose", ["en_XX"], head=head)


def test_test_labels_must_be_known_to_the_head(base_dir):
    explorer = Explorer.from_pretrained(str(base_dir))
    head = lab.train_probe(explorer, separable(20, seed=10), "en_XX").head
    with pytest.raises(ExplorerError, match="label 'maybe'"):
        lab.evaluate_transfer(explorer, head, [("choose", "maybe", "de_DE")])
    with pytest.raises(ExplorerError, match="No test examples in ja_XX"):
        lab.evaluate_transfer(explorer, head, [("choose", "good", "de_DE")], ["ja_XX"])


# ----- uploads --------------------------------------------------------------------------------------

LOCAL = Limits.local()


def _csv(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8")


@pytest.mark.parametrize(
    "data, limits, message",
    [
        (bytes([0, 159, 146, 150, 0, 1, 2]) * 50, LOCAL, "not a CSV file: it holds binary data"),
        ("text,label\nÜber,positive\n".encode("latin-1"), LOCAL, "not UTF-8"),
        (
            _csv(["sentence,label", "Good,positive", "Bad,negative"]),
            LOCAL,
            "no column 'text'.*columns found: 'sentence', 'label'",
        ),
        (_csv(["text,language", "Good,en_XX"]), LOCAL, "no column 'label'"),
        (
            _csv(["text,label", "Good,positive", " ,negative", "Bad,negative"]),
            LOCAL,
            r"Row 2 \(line 3\): the text is empty",
        ),
        (_csv(["text,label", "Good,positive", "Bad,"]), LOCAL, r"Row 2 \(line 3\): the label is empty"),
        (_csv(["text,label", "Good,positive", "Fine,positive"]), LOCAL, "only one label \\('positive'\\)"),
        (
            _csv(["text,label,language", "Good,positive,en_XX", "Schlecht,negative,de_DX"]),
            LOCAL,
            r"Row 2 \(line 3\), column 'language': Unknown language 'de_DX'.*Did you mean 'de_DE'",
        ),
        (
            _csv(["text,label"] + [f"row {i},{'ab'[i % 2]}" for i in range(11)]),
            dataclasses.replace(LOCAL, max_train_examples=10),
            "more than 10 rows",
        ),
        (
            _csv(["text,label", "Good,positive", "Bad,negative"] + ["x" * 100 + ",negative"] * 20),
            dataclasses.replace(LOCAL, max_upload_bytes=1024),
            "MiB is accepted here",
        ),
        (b"", LOCAL, "is empty"),
        (_csv(["text,label"]), LOCAL, "no labelled rows"),
    ],
    ids=[
        "binary",
        "latin-1",
        "missing-text",
        "missing-label",
        "empty-text",
        "empty-label",
        "one-label",
        "unknown-language",
        "too-many-rows",
        "too-large",
        "empty-file",
        "header-only",
    ],
)
def test_bad_uploads_say_what_is_wrong(tmp_path, data, limits, message):
    path = tmp_path / "upload.csv"
    path.write_bytes(data)
    for source in (path, data):
        with pytest.raises(ExplorerError, match=message):
            read_labelled_csv(source, limits, LANGUAGES)


def test_a_good_upload(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text(
        'Label;Text;Language\npositive;"Fast; and clean";\nnegative;Langsam.;German (de_DE)\n\nnegative;Lent.;fr_XX\n',
        encoding="utf-8-sig",
    )
    rows = read_labelled_csv(path, LOCAL, LANGUAGES)
    assert rows == [
        Example("Fast; and clean", "positive", None),
        Example("Langsam.", "negative", "de_DE"),
        Example("Lent.", "negative", "fr_XX"),
    ]


# ----- fine-tuning a private copy ------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["transformers", "adapters"])
def test_finetune_changes_only_a_private_copy(base_dir, backend):
    explorer = Explorer.from_pretrained(str(base_dir), backend=backend)
    shared_before = model_hash(explorer)
    frozen_names = ("embeddings.", "adapter_modules.", ".adapters.en_XX.", ".adapters.de_DE.")
    before = {n: p.detach().clone() for n, p in explorer.backend.model.named_parameters()}
    finetuned = lab.finetune(explorer, separable(24, seed=11), "en_XX", steps=3, batch_size=8)
    training = finetuned.training
    assert model_hash(explorer) == shared_before  # the shared model is untouched
    tuned = finetuned.explorer
    assert tuned is not None and tuned.backend.model is not explorer.backend.model
    assert training.steps == 3 and training.head.encoder == "fine-tuned"
    changed = [n for n, p in tuned.backend.model.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert not [n for n in changed if any(f in n for f in frozen_names)]  # embeddings and language adapters frozen
    if backend == "transformers":
        assert any(".attention." in n for n in changed) and any(".intermediate." in n for n in changed)
    else:  # the shared weights stay as they were; a new task adapter does the work
        assert changed == []
        assert tuned.backend.task_adapter == lab.TASK_ADAPTER and explorer.backend.task_adapter is None
        assert lab.TASK_ADAPTER not in explorer.backend.model.adapters_config.adapters
    rows = [explorer.tokenize(t) for t in ("choose compare adapter", "modèle partage poids")]
    assert not torch.allclose(tuned.pooled_features(rows, ["en_XX"] * 2), explorer.pooled_features(rows, ["en_XX"] * 2))
    assert not any(p.requires_grad for p in tuned.backend.model.parameters())
    result = lab.evaluate_transfer(tuned, training.head, {"de_DE": separable(6, seed=12)})
    assert result.rows[0].examples == 6
    with pytest.raises(ExplorerError, match="trained on"):
        explorer.classify("choose", ["en_XX"], head=training.head)  # needs the fine-tuned features


def test_finetune_refuses_without_memory(base_dir, monkeypatch):
    monkeypatch.setattr(lab, "available_memory_bytes", lambda device: 1024)  # a fault that cannot be produced for real
    with pytest.raises(ExplorerError, match=r"private copy of the model.*GiB are free"):
        lab.finetune(Explorer.from_pretrained(str(base_dir)), separable(10, seed=0), "en_XX", steps=1)


def test_classifier_config_without_classifier_weights_is_refused(tmp_path, base_dir):
    """A config naming XmodForSequenceClassification over weights that lack the head would give random outputs."""
    import json
    import shutil

    from xmod_explorer import Explorer, ExplorerError

    target = tmp_path / "headless"
    shutil.copytree(base_dir, target)
    config = json.loads((target / "config.json").read_text())
    config.update(
        architectures=["XmodForSequenceClassification"], id2label={"0": "a", "1": "b"}, label2id={"a": 0, "b": 1}
    )
    (target / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExplorerError, match="no classifier"):
        Explorer.from_pretrained(str(target))


def test_the_lab_bar_follows_the_work():
    """Issue 16: the bar gave training a fixed 85 % and the probe's fit step / 1000 though it stops after a few
    dozen steps, so it raced, then jumped. The training share follows the text read (the evaluation reads each
    test text twice); the fit's share keeps rising and never reaches 1 before the fit ends."""
    from xmod_explorer.datasets import Example
    from xmod_explorer.ui.classify import training_share

    train = [Example("a" * 30, "pos")] * 10
    tests = {"de_DE": [Example("b" * 15, "pos")] * 10, "fr_XX": [Example("c" * 15, "neg")] * 10}
    assert training_share(train, tests, ["de_DE"]) == pytest.approx(300 / (300 + 300))
    assert training_share(train, tests, ["de_DE", "fr_XX"]) == pytest.approx(300 / (300 + 600))
    assert training_share(train, tests, []) == 0.95  # nothing to evaluate: training is (nearly) all of it
    shares = [lab.fit_share(step) for step in range(0, 1001)]
    assert shares[0] == 0 and all(b > a for a, b in itertools.pairwise(shares)) and shares[-1] < 1
    assert 0.7 < lab.fit_share(76) < 0.8  # where the bundled set's probe converges: the last jump is small
