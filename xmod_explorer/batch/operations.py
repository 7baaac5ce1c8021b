"""What batch mode can run over a corpus: each operation a small adapter from input rows to output rows.

An operation takes a block of readable rows, makes the engine calls (batched across rows and languages
where the engine has a batch method), and returns a table of output rows, each led by its input row
number, plus the reason for every row that failed. ``finish`` turns the blocks' tables, in row order,
into the final file's tables: a copy for most operations; for ``project``, the 2-D fit over every point.
Each output column carries a sentence saying what it holds, its unit and its range (in the metadata).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
import torch

from xmod_explorer.engine import TOKENS_PER_PASS, Explorer
from xmod_explorer.errors import ExplorerError
from xmod_explorer.streaming_pca import CovarianceSums, Extremes, PrincipalAxes

ROW = ("row", pa.int64(), "the input row: 0-based position of the record in the input file (blank lines not counted)")


@dataclass(frozen=True)
class Item:
    """One readable input row: its number, its text, and its languages (a comma-separated string or a list;
    None: the operation's default)."""

    row: int
    text: object
    languages: object


def _schema(columns: Sequence[tuple[str, pa.DataType, str]]) -> pa.Schema:
    return pa.schema([pa.field(name, kind) for name, kind, _ in columns])


def _table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    values = list(zip(*rows)) if rows else [[] for _ in schema.names]
    return pa.Table.from_arrays([pa.array(list(v), type=f.type) for v, f in zip(values, schema)], schema=schema)


class Operation:
    """An analysis run over a corpus. Subclasses set the class attributes and implement run()."""

    name: ClassVar[str]
    help: ClassVar[str]
    needs_languages: ClassVar[bool] = True  # False: a row without languages gets the operation's default
    columns: ClassVar[tuple[tuple[str, pa.DataType, str], ...]]  # the final file's columns: name, type, meaning

    def __init__(self, *, tokens_per_pass: int = TOKENS_PER_PASS, **settings: object):
        self.tokens_per_pass = tokens_per_pass
        self.options = settings

    def settings(self) -> dict:
        """What the results depend on besides the model and the input (recorded; a resumed run must match)."""
        return {"tokens_per_pass": self.tokens_per_pass, **self.options}

    def prepare(self, explorer: Explorer) -> None:
        """Check the settings against the loaded model before any row runs; raise ExplorerError if they do not fit."""

    @classmethod
    def schema(cls) -> pa.Schema:
        return _schema(cls.columns)

    @classmethod
    def meanings(cls) -> dict[str, str]:
        return {name: meaning for name, _, meaning in cls.columns}

    def block_schema(self) -> pa.Schema:
        """The schema of a block's table (the final one, unless finish() transforms it)."""
        return self.schema()

    def run(self, explorer: Explorer, items: list[Item]) -> tuple[pa.Table, dict[int, str]]:
        """Output rows for items (in item order), and the reason for each row that failed."""
        raise NotImplementedError

    def finish(self, blocks: Callable[[], Iterator[pa.Table]]) -> Iterator[pa.Table]:
        """The final tables from the blocks' tables in row order; blocks() starts a new pass over them."""
        yield from blocks()

    def summary(self) -> dict:
        """Metadata that only finish() knows (after the tables it yields have been written)."""
        return {}


class Predict(Operation):
    name = "predict"
    help = "fill each row's <mask> tokens under each of its languages' adapters"
    columns = (
        ROW,
        ("mask", pa.int32(), "which <mask> of the text: 1 is the first"),
        ("position", pa.int32(), "the mask's index in the token sequence (<s> is 0)"),
        ("language", pa.string(), "the adapter the prediction was made with"),
        ("rank", pa.int32(), "1 is the adapter's most probable token, up to top_k"),
        ("token", pa.string(), "the vocabulary piece as readable text"),
        ("token_id", pa.int64(), "the piece's id in the tokenizer's vocabulary"),
        ("probability", pa.float64(), "softmax probability over the whole vocabulary, 0 to 1"),
        ("entropy_bits", pa.float64(), "entropy of the adapter's distribution at this mask, bits, 0 (certain) up"),
    )

    def __init__(self, *, top_k: int = 5, tokens_per_pass: int = TOKENS_PER_PASS):
        super().__init__(tokens_per_pass=tokens_per_pass, top_k=top_k)
        self.top_k = top_k

    def prepare(self, explorer: Explorer) -> None:
        explorer.predict_masks_batch([], [], self.top_k)  # no texts: checks top_k and the masked-LM head only

    def run(self, explorer: Explorer, items: list[Item]) -> tuple[pa.Table, dict[int, str]]:
        results = explorer.predict_masks_batch(
            [item.text for item in items],
            [item.languages for item in items],
            self.top_k,
            tokens_per_pass=self.tokens_per_pass,
        )
        rows, failures = [], {}
        for item, result in zip(items, results):
            if isinstance(result, ExplorerError):
                failures[item.row] = str(result)
                continue
            for number, slot in enumerate(result.masks, start=1):
                for code in result.languages:
                    bits = slot.entropy_bits[code]
                    for rank, guess in enumerate(slot.predictions[code], start=1):
                        rows.append(
                            (
                                item.row,
                                number,
                                slot.position,
                                code,
                                rank,
                                guess.token,
                                guess.token_id,
                                guess.probability,
                                bits,
                            )
                        )
        return _table(rows, self.schema()), failures


class Compare(Operation):
    name = "compare"
    help = "compare each row's hidden states under its languages' adapters, layer by layer"
    columns = (
        ROW,
        ("layer", pa.int32(), "0 is the embedding output (the same under every adapter), then each layer"),
        ("language_a", pa.string(), "one adapter of the pair (pairs in the row's order of languages)"),
        ("language_b", pa.string(), "the other adapter of the pair"),
        (
            "pooled_cosine",
            pa.float64(),
            "cosine of the two adapters' mean-pooled states of the text, -1 to 1; raw cosines run high for any "
            "two inputs, so read it beside centred_cosine",
        ),
        (
            "centred_cosine",
            pa.float64(),
            "cosine of the two adapters' mean-pooled states after subtracting the model's centring vector (the "
            "mean sentence vector of a fixed reference set, per layer; see centring in the metadata), -1 to 1",
        ),
    )

    def __init__(self, *, tokens_per_pass: int = TOKENS_PER_PASS):
        super().__init__(tokens_per_pass=tokens_per_pass)
        self.centring = ""

    def prepare(self, explorer: Explorer) -> None:
        self.centring = explorer.centring().describe()  # what centred_cosine subtracts: the same for every row

    def summary(self) -> dict:
        return {"centring": self.centring}

    def run(self, explorer: Explorer, items: list[Item]) -> tuple[pa.Table, dict[int, str]]:
        results = explorer.compare_adapters_batch(
            [item.text for item in items], [item.languages for item in items], tokens_per_pass=self.tokens_per_pass
        )
        rows, failures = [], {}
        for item, result in zip(items, results):
            if isinstance(result, ExplorerError):
                failures[item.row] = str(result)
                continue
            codes = result.languages
            if len(codes) < 2:
                failures[item.row] = f"compare needs at least two languages; this row has one ({codes[0]})."
                continue
            pooled, centred = result.pooled_cosine.tolist(), result.centred_cosine.tolist()
            for layer in range(len(pooled)):
                for a in range(len(codes)):
                    for b in range(a + 1, len(codes)):
                        rows.append((item.row, layer, codes[a], codes[b], pooled[layer][a][b], centred[layer][a][b]))
        return _table(rows, self.schema()), failures


class Score(Operation):
    """Explorer.score_languages(text, languages=None), row by row."""

    name = "score"
    help = "rank each row's candidate adapters by pseudo-log-likelihood (no languages: every adapter)"
    needs_languages = False
    columns = (
        ROW,
        ("language", pa.string(), "the adapter"),
        ("rank", pa.int32(), "1 is the adapter under which the text is most likely"),
        ("per_token", pa.float64(), "pseudo-log-likelihood per scored token, natural log, <= 0 (higher fits better)"),
        ("total", pa.float64(), "pseudo-log-likelihood summed over the scored tokens, natural log, <= 0"),
        ("pseudo_perplexity", pa.float64(), "exp(-per_token), from 1 (certain) up"),
        ("tokens", pa.int32(), "how many tokens were scored (each masked in turn; <mask> tokens are not scored)"),
    )

    def run(self, explorer: Explorer, items: list[Item]) -> tuple[pa.Table, dict[int, str]]:
        # Each text is already many forward rows (scored tokens x adapters), which score_languages batches.
        rows, failures = [], {}
        for item in items:
            try:
                result = explorer.score_languages(item.text, item.languages)
            except ExplorerError as exc:
                failures[item.row] = str(exc)
                continue
            count = len(result.tokens)
            for score in result.scores:
                rows.append(
                    (item.row, score.language, score.rank, score.per_token, score.total, score.pseudo_perplexity, count)
                )
        return _table(rows, self.schema()), failures


class Project(Operation):
    """Each (row, language) is a point: the text's mean-pooled states under that adapter. The blocks keep the
    pooled vectors; finish() fits a 2-D PCA per layer from sums gathered over every point (memory O(hidden²),
    whatever the corpus size), orients each axis so that its farthest point is positive, and maps the points."""

    name = "project"
    help = "a 2-D PCA map of every row's mean-pooled states under its languages' adapters"
    columns = (
        ROW,
        ("language", pa.string(), "the adapter the text went through"),
        ("layer", pa.int32(), "0 is the embedding output (the same under every adapter), then each layer"),
        ("x", pa.float64(), "coordinate on the layer's first principal axis (the units of the hidden states)"),
        ("y", pa.float64(), "coordinate on the layer's second principal axis"),
    )

    def __init__(self, *, layer: str = "last", tokens_per_pass: int = TOKENS_PER_PASS):
        super().__init__(tokens_per_pass=tokens_per_pass, layer=str(layer))
        self.layer = str(layer).strip().lower()
        self.layers: list[int] = []
        self.hidden = 0
        self.axes: dict[int, PrincipalAxes] = {}

    def prepare(self, explorer: Explorer) -> None:
        config = explorer.backend.model.config
        last, self.hidden = int(config.num_hidden_layers), int(config.hidden_size)
        if self.layer == "last":
            self.layers = [last]
        elif self.layer == "all":
            self.layers = list(range(last + 1))
        elif self.layer.isdigit() and int(self.layer) <= last:
            self.layers = [int(self.layer)]
        else:
            raise ExplorerError(f"--layer must be last, all, or a layer from 0 to {last}; got {self.layer!r}.")

    def block_schema(self) -> pa.Schema:
        return pa.schema(
            [
                pa.field("row", pa.int64()),
                pa.field("language", pa.string()),
                pa.field("layer", pa.int32()),
                pa.field("vector", pa.list_(pa.float32(), self.hidden)),
            ]
        )

    def run(self, explorer: Explorer, items: list[Item]) -> tuple[pa.Table, dict[int, str]]:
        points: list[tuple[int, str]] = []
        token_rows: list[list[int]] = []
        failures = {}
        for item in items:
            try:
                codes = explorer.check_languages(item.languages)
                ids = explorer.tokenize(item.text)
            except ExplorerError as exc:
                failures[item.row] = str(exc)
                continue
            points += [(item.row, code) for code in codes]
            token_rows += [ids] * len(codes)
        pooled = explorer.pooled_layers(token_rows, [code for _, code in points], tokens_per_pass=self.tokens_per_pass)
        chosen = pooled[self.layers].transpose(0, 1).contiguous()  # (points, layers, hidden)
        count = len(points) * len(self.layers)
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(chosen.reshape(-1).numpy()), self.hidden)
        table = pa.Table.from_arrays(
            [
                pa.array([row for row, _ in points for _ in self.layers], pa.int64()),
                pa.array([code for _, code in points for _ in self.layers], pa.string()),
                pa.array(self.layers * len(points), pa.int32()),
                vectors if count else pa.array([], self.block_schema().field("vector").type),
            ],
            schema=self.block_schema(),
        )
        return table, failures

    def _by_layer(self, table: pa.Table) -> Iterator[tuple[int, np.ndarray, torch.Tensor]]:
        """(layer, the table's row indices at that layer, their vectors) for each layer in the table."""
        layers = table.column("layer").to_numpy()
        flat = table.column("vector").combine_chunks().flatten().to_numpy()
        vectors = torch.from_numpy(flat.reshape(-1, self.hidden).copy())
        for layer in self.layers:
            at = np.flatnonzero(layers == layer)
            if len(at):
                yield layer, at, vectors[torch.from_numpy(at)]

    def finish(self, blocks: Callable[[], Iterator[pa.Table]]) -> Iterator[pa.Table]:
        sums = {layer: CovarianceSums(self.hidden) for layer in self.layers}
        for table in blocks():
            for layer, _, vectors in self._by_layer(table):
                sums[layer].add(vectors)
        fitted = {layer: s.fit() for layer, s in sums.items() if s.count}
        extremes = {layer: Extremes() for layer in fitted}
        for table in blocks():
            for layer, _, vectors in self._by_layer(table):
                extremes[layer].add(fitted[layer].project(vectors))
        self.axes = {layer: axes.oriented(extremes[layer].values) for layer, axes in fitted.items()}
        for table in blocks():
            coordinates = np.zeros((table.num_rows, 2))
            for layer, at, vectors in self._by_layer(table):
                coordinates[at] = self.axes[layer].project(vectors).numpy()
            yield pa.Table.from_arrays(
                [
                    table.column("row"),
                    table.column("language"),
                    table.column("layer"),
                    pa.array(coordinates[:, 0], pa.float64()),
                    pa.array(coordinates[:, 1], pa.float64()),
                ],
                schema=self.schema(),
            )

    def summary(self) -> dict:
        return {
            "projection": {
                "method": "PCA from the covariance accumulated over every point (float64), axes oriented so that "
                "the point farthest from the centre along each lies on its positive side",
                "layers": {
                    str(layer): {"points": axes.count, "explained_variance": [float(v) for v in axes.explained]}
                    for layer, axes in self.axes.items()
                },
            }
        }


OPERATIONS: dict[str, type[Operation]] = {op.name: op for op in (Predict, Compare, Score, Project)}
