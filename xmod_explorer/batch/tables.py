"""Corpus files read record by record, and result files written whole or not at all, with their metadata.

Inputs: .csv, .tsv (or .tab), .jsonl (or .ndjson) and .parquet, read in chunks so that memory does not grow
with the corpus. Every record gets its row number (0-based, counting every record, readable or not; blank
lines are not records) and, in the text formats, the line it starts on. A record that cannot be read (the
wrong number of fields, bytes that are not UTF-8, a line that is not a JSON object) comes back with the
reason instead of its fields: it becomes a bad row, never the end of a run.

Outputs: .csv, with the metadata in a sidecar FILE.meta.json, or .parquet, with the metadata in the file's
key-value metadata under "xmod_explorer". Every file is written beside its final name and renamed into
place, so a reader never sees half a file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from xmod_explorer.errors import ExplorerError

INPUT_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet"}
METADATA_KEY = b"xmod_explorer"
BLOCK_KEY = b"xmod_explorer_block"
# Rows read from a parquet file at once.
CHUNK_ROWS = 1024
# csv's field limit (131,072 characters, process-wide) is left as it is: it is far above any text the engine takes,
# and a quote that is never closed then ends as one bad row instead of reading the rest of the file into memory.


@dataclass(frozen=True)
class Record:
    """One record of a corpus: its row number, the line it starts on (text formats), and its fields (column
    name -> value, for the columns asked for), or the reason it could not be read."""

    row: int
    line: int | None
    fields: dict[str, object] | None
    problem: str | None = None


def _format_of(path: Path, formats: dict[str, str], what: str) -> str:
    kind = formats.get(path.suffix.lower())
    if kind is None:
        names = ", ".join(sorted(formats))
        raise ExplorerError(f"The {what} {path} has the suffix {path.suffix or '(none)'!r}; use one of {names}.")
    return kind


def _is_text(value: str) -> bool:
    """False when a value read with errors='surrogateescape' held bytes that are not UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Corpus:
    """A corpus file: its format, its columns (lower-cased), its records, one at a time."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.format = _format_of(self.path, INPUT_FORMATS, "input")
        if not self.path.is_file():
            raise ExplorerError(f"The input {self.path} does not exist or is not a file.")
        self.names = self._read_columns()  # lower-cased name -> the name in the file
        self.columns = list(self.names)

    # ----- columns -------------------------------------------------------------------------------------

    def _read_columns(self) -> dict[str, str]:
        if self.format == "parquet":
            try:
                schema = pq.read_schema(self.path)
            except (pa.ArrowException, OSError) as exc:
                raise ExplorerError(f"The input {self.path} is not a readable parquet file ({exc}).") from None
            self.types = {name.strip().lower(): schema.field(name).type for name in schema.names}
            return {name.strip().lower(): name for name in schema.names}
        if self.format == "jsonl":
            for record in self._json_records(None):
                if record.problem is None:
                    return {name: name for name in record.fields}  # the keys of the first object
            raise ExplorerError(
                f"The input {self.path} holds no JSON object on any line. Each line must be one object, such as "
                '{"text": "...", "languages": "en_XX,de_DE"}.'
            )
        with self._open_text() as handle:
            try:
                header = next(csv.reader(handle, delimiter=self._delimiter), None)
            except csv.Error as exc:
                raise ExplorerError(f"The header line of {self.path} is not readable ({exc}).") from None
        if not header or not any(cell.strip() for cell in header):
            raise ExplorerError(
                f"The input {self.path} is empty or its first line is blank; the first line must name the columns, "
                "for example text,languages."
            )
        names = [cell.strip().lower() for cell in header]
        if not all(_is_text(name) for name in names):
            raise ExplorerError(f"The header line of {self.path} is not UTF-8 text. Save the file as UTF-8.")
        return {name: name for name in names}

    def type_of(self, column: str) -> pa.DataType | None:
        """The column's type in a parquet file; None in the text formats, where every value is text."""
        return self.types.get(column) if self.format == "parquet" else None

    # ----- records -------------------------------------------------------------------------------------

    @property
    def _delimiter(self) -> str:
        return "\t" if self.format == "tsv" else ","

    def _open_text(self):
        # surrogateescape: a row with bytes that are not UTF-8 becomes one bad row, not the end of the file.
        return open(self.path, encoding="utf-8-sig", errors="surrogateescape", newline="")

    def records(self, wanted: Sequence[str]) -> Iterator[Record]:
        """Every record, in file order, with the wanted columns (those the file has) as its fields."""
        if self.format == "parquet":
            return self._parquet_records(wanted)
        if self.format == "jsonl":
            return self._json_records(wanted)
        return self._delimited_records(wanted)

    def count(self) -> int:
        """How many records the file holds (a pass over it, except for parquet, whose footer says)."""
        if self.format == "parquet":
            return pq.ParquetFile(self.path).metadata.num_rows
        return sum(1 for _ in self.records(()))

    def _delimited_records(self, wanted: Sequence[str]) -> Iterator[Record]:
        columns = self.columns
        index = {name: columns.index(name) for name in wanted if name in columns}
        kind = self.format.upper()
        with self._open_text() as handle:
            reader = csv.reader(handle, delimiter=self._delimiter)
            next(reader)
            row, line = 0, reader.line_num + 1
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    yield Record(row, line, None, f"is not readable as {kind} ({exc})")
                    row, line = row + 1, reader.line_num + 1
                    continue
                start, line = line, reader.line_num + 1
                if not cells:
                    continue  # a blank line is not a record
                if len(cells) != len(columns):
                    problem = (
                        f"has {len(cells)} fields where the header has {len(columns)} ({','.join(columns)}); "
                        f"quote a text that holds the separator"
                    )
                    yield Record(row, start, None, problem)
                elif not all(_is_text(cell) for cell in cells):
                    yield Record(row, start, None, "holds bytes that are not UTF-8 text; save the file as UTF-8")
                else:
                    yield Record(row, start, {name: cells[at] for name, at in index.items()})
                row += 1

    def _json_records(self, wanted: Sequence[str] | None) -> Iterator[Record]:
        """Records of a JSON-lines file; wanted None: every key of each object."""
        row = 0
        with open(self.path, "rb") as handle:
            for line, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8-sig" if line == 1 else "utf-8")
                    value = json.loads(text)
                except UnicodeDecodeError:
                    yield Record(row, line, None, "holds bytes that are not UTF-8 text; save the file as UTF-8")
                except json.JSONDecodeError as exc:
                    yield Record(row, line, None, f"is not valid JSON ({exc.msg} at column {exc.colno})")
                else:
                    if isinstance(value, dict):
                        fields = {str(key).strip().lower(): item for key, item in value.items()}
                        if wanted is not None:
                            fields = {name: fields[name] for name in wanted if name in fields}
                        yield Record(row, line, fields)
                    else:
                        yield Record(row, line, None, f"is a JSON {type(value).__name__}, not an object with a text")
                row += 1

    def _parquet_records(self, wanted: Sequence[str]) -> Iterator[Record]:
        chosen = [name for name in wanted if name in self.names]
        row = 0
        source = pq.ParquetFile(self.path)
        if not chosen:  # nothing wanted (counting): the footer has the number of rows
            for _ in range(source.metadata.num_rows):
                yield Record(row, None, {})
                row += 1
            return
        for batch in source.iter_batches(batch_size=CHUNK_ROWS, columns=[self.names[name] for name in chosen]):
            data = batch.to_pydict()
            for i in range(batch.num_rows):
                yield Record(row, None, {name: data[self.names[name]][i] for name in chosen})
                row += 1

    # ----- identity ------------------------------------------------------------------------------------

    def fingerprint(self) -> dict:
        """What identifies this input: format, size and SHA-256 of its bytes (a resumed run must see the same)."""
        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        return {"format": self.format, "bytes": self.path.stat().st_size, "sha256": digest.hexdigest()}


# ----- writing -------------------------------------------------------------------------------------------


def output_format(path: Path) -> str:
    return _format_of(path, OUTPUT_FORMATS, "output")


def sidecar(path: Path) -> Path:
    """Where a CSV result's metadata goes: results.csv -> results.csv.meta.json."""
    return path.with_name(path.name + ".meta.json")


def errors_path(path: Path) -> Path:
    """Where the bad rows go: results.csv or results.parquet -> results.errors.csv."""
    return path.with_name(path.stem + ".errors.csv")


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def _into_place(partial: Path, path: Path) -> None:
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, path)


def write_json(path: Path, value: object) -> None:
    """JSON, written whole or not at all."""
    partial = _partial(path)
    partial.write_text(json.dumps(value, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    _into_place(partial, path)


def write_block(path: Path, table: pa.Table, metadata: dict) -> None:
    """One block of results as parquet, with metadata, written whole or not at all (its name is the record
    that the block is done)."""
    partial = _partial(path)
    pq.write_table(table.replace_schema_metadata({BLOCK_KEY: json.dumps(metadata)}), partial)
    _into_place(partial, path)


def block_metadata(path: Path) -> dict:
    """The metadata of a block file (read from its footer only)."""
    return json.loads(pq.read_schema(path).metadata[BLOCK_KEY])


def read_block(path: Path) -> pa.Table:
    """A block's results, without its metadata."""
    return pq.read_table(path).replace_schema_metadata(None)


def write_errors(path: Path, failures: Iterable[tuple[int, int | None, str]]) -> int:
    """The bad rows as CSV (row, line, reason), written whole or not at all; returns how many."""
    partial = _partial(path)
    count = 0
    with open(partial, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["row", "line", "reason"])
        for row, line, reason in failures:
            writer.writerow([row, "" if line is None else line, reason])
            count += 1
    _into_place(partial, path)
    return count


class ResultFile:
    """The final result file: tables written in order into a partial file that close() renames into place."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        self.format = output_format(path)
        self.partial = _partial(path)
        self.rows = 0
        if self.format == "parquet":
            self.writer = pq.ParquetWriter(self.partial, schema)
        else:
            self.handle = open(self.partial, "w", encoding="utf-8", newline="")  # noqa: SIM115 (closed in close)
            self.writer = csv.writer(self.handle, lineterminator="\n")
            self.writer.writerow(schema.names)

    def write(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        if self.format == "parquet":
            self.writer.write_table(table)
            return
        for batch in table.to_batches():
            # Floats are written as Python's repr: the shortest text that reads back as the same number.
            self.writer.writerows(zip(*(column.to_pylist() for column in batch.columns)))

    def close(self, metadata: dict) -> None:
        """Finish the file with metadata (in the file, or in its sidecar first) and move it into place."""
        text = json.dumps(metadata, ensure_ascii=False)
        if self.format == "parquet":
            self.writer.add_key_value_metadata({METADATA_KEY: text})
            self.writer.close()
        else:
            self.handle.close()
            write_json(sidecar(self.path), metadata)
        _into_place(self.partial, self.path)

    def discard(self) -> None:
        if self.format == "parquet":
            self.writer.close()
        else:
            self.handle.close()
        self.partial.unlink(missing_ok=True)


def read_metadata(path: Path) -> dict | None:
    """The metadata a finished result file carries, or None if it has none that can be read."""
    try:
        if output_format(path) == "parquet":
            metadata = pq.read_metadata(path).metadata or {}
            return json.loads(metadata[METADATA_KEY]) if METADATA_KEY in metadata else None
        return json.loads(sidecar(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, pa.ArrowException):
        return None
