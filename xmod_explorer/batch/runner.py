"""Batch mode: one operation over every row of a corpus, in blocks, on one process or several; resumable.

The corpus is cut into blocks of ``block_rows`` consecutive rows. Block b belongs to process b % processes:
each process streams the corpus (memory does not grow with it), runs its blocks through the operation, and
writes each block's results to OUTPUT.parts/block-NNNNNNNN.parquet, renamed into place once whole, so a block
file that exists is a block done. A run that is killed resumes where it stopped when the same command runs
again, with the same or another number of processes: no row is computed twice, none is lost. Rows are batched
only within their block, so a block's numbers do not depend on which process ran it; when every block is done,
process 0 merges them in row order into OUTPUT: the same file, row for row, whatever the number of processes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import platform
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import torch

from xmod_explorer import Explorer
from xmod_explorer.batch import tables
from xmod_explorer.batch.operations import OPERATIONS, Item, Operation
from xmod_explorer.batch.processes import Processes, join
from xmod_explorer.batch.tables import Corpus, Record
from xmod_explorer.engine import TOKENS_PER_PASS
from xmod_explorer.errors import ExplorerError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # of the parts folder and the metadata; a resumed run must find the same
INPUT_COLUMNS = ("text", "languages", "language")
BLOCK_NAME = "block-{:08d}.parquet"


@dataclass(frozen=True)
class BatchSettings:
    """What `xmod-explorer batch OPERATION` was asked to do (the command line's flags)."""

    operation: str
    input: Path
    output: Path
    model: str | None = None
    backend: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    load_languages: str | None = None
    languages: str | None = None  # for rows whose languages column is blank or absent
    top_k: int = 5
    layer: str = "last"
    block_rows: int = 256
    tokens_per_pass: int = TOKENS_PER_PASS
    threads: int | None = None
    overwrite: bool = False
    keep_parts: bool = False
    progress: bool = True


@dataclass
class BatchReport:
    """What one process did: rows and blocks computed now, blocks found done, and, on process 0, the result."""

    rank: int
    processes: int
    rows: int = 0
    blocks: int = 0
    blocks_found_done: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # of this process, all its threads: beside seconds, how much of the machine it got
    output: Path | None = None
    result_rows: int = 0
    input_rows: int = 0
    bad_rows: int = 0
    already_complete: bool = False
    notes: list[str] = field(default_factory=list)


# ----- the parts folder ----------------------------------------------------------------------------------


class Parts:
    """OUTPUT.parts/: run.json (what the run is, each attempt) and one parquet file per finished block."""

    def __init__(self, output: Path):
        self.folder = output.with_name(output.name + ".parts")
        self.run_file = self.folder / "run.json"

    def block(self, number: int) -> Path:
        return self.folder / BLOCK_NAME.format(number)

    def done(self) -> set[int]:
        """Numbers of the blocks whose files are in place."""
        if not self.folder.is_dir():
            return set()
        found = set()
        for path in self.folder.iterdir():
            name = path.name
            if name.startswith("block-") and name.endswith(".parquet") and name[6:-8].isdigit():
                found.add(int(name[6:-8]))
        return found

    def block_metadata(self, number: int) -> dict:
        return tables.block_metadata(self.block(number))


class RunLock:
    """Keeps two runs off one output: every process of a run holds a shared lock on a file beside the output
    while it works; a new run's process 0 first takes it exclusively, so it fails while any process of another
    run (the workers of a launcher that was killed alone, say) still holds it. The OS drops the locks of a
    process that dies."""

    def __init__(self, output: Path):
        self.output = output
        self.path = output.with_name(f".{output.name}.lock")
        self.handle = None

    def _open(self) -> None:
        if self.handle is None:
            self.handle = open(self.path, "a+b")  # noqa: SIM115 (held for the run, closed in release)

    def exclusive(self) -> None:
        self._open()
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExplorerError(
                f"Another run is writing to {self.output} now (it holds {self.path}). Wait for it to finish, or "
                "stop it first: the workers of a launcher that was killed on its own may still be running."
            ) from None

    def shared(self) -> None:
        self._open()
        fcntl.flock(self.handle, fcntl.LOCK_SH)

    def release(self, *, remove: bool = False) -> None:
        if self.handle is not None:
            if remove:
                self.path.unlink(missing_ok=True)
            self.handle.close()
            self.handle = None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def model_record(explorer: Explorer) -> tuple[dict, dict]:
    """(identity, description) of the loaded model. The identity is what a resumed run must find again: the hub
    commit (for a model from the hub cache), config.json's hash, the weight files' sizes, backend, dtype and
    device type; the description adds the name, folder and languages."""
    info = explorer.info()
    folder = Path(info.folder)
    revision = folder.name if folder.parent.name == "snapshots" else None  # the hub cache: snapshots/<commit>
    config = folder / "config.json"
    weights = {
        path.name: path.stat().st_size
        for path in sorted(folder.iterdir())
        if path.is_file() and path.suffix in (".safetensors", ".bin")
    }
    identity = {
        "revision": revision,
        "config_sha256": _sha256(config) if config.is_file() else None,
        "weights": weights,
        "backend": info.backend,
        "dtype": info.dtype,
        "device": torch.device(info.device).type,
        "tokenizer": info.tokenizer,
    }
    description = {
        "name": info.model,
        "folder": info.folder,
        "revision": revision or "local files (no hub commit)",
        **{key: value for key, value in identity.items() if key != "revision"},
        "tokenizer_source": info.tokenizer_source,
        "languages": info.languages,
        "random_weights": info.random_weights,
    }
    return identity, description


def _differences(old: object, new: object, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            found += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [prefix.rstrip(".")]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _remove_results(output: Path, parts: Parts) -> None:
    for path in (output, tables.sidecar(output), tables.errors_path(output)):
        path.unlink(missing_ok=True)
    shutil.rmtree(parts.folder, ignore_errors=True)


def _start(settings: BatchSettings, parts: Parts, identity: dict, processes: Processes) -> dict:
    """On process 0: find what is there, refuse what does not match, and record this attempt.
    Returns {"complete": True} when the output is already whole, else {"attempt": n}."""
    output = settings.output
    if settings.overwrite:
        _remove_results(output, parts)
    if parts.folder.is_dir() and parts.run_file.is_file():
        try:
            record = json.loads(parts.run_file.read_text(encoding="utf-8"))
        except ValueError:
            raise ExplorerError(
                f"{parts.run_file} is damaged; delete the folder {parts.folder} and run again."
            ) from None
        differs = _differences(record.get("identity"), identity)
        if differs:
            raise ExplorerError(
                f"{parts.folder} holds an unfinished run with other settings (they differ in: {', '.join(differs)}). "
                "Run the same command as before to resume it, pass --overwrite to discard it, or choose another "
                "--output."
            )
    else:
        if output.exists():
            metadata = tables.read_metadata(output)
            if metadata is not None and not _differences(metadata.get("identity"), identity):
                return {"complete": True}
            why = " by a run with other settings" if metadata is not None else ""
            raise ExplorerError(
                f"{output} was written already{why}. Pass --overwrite to replace it, or choose another --output."
            )
        shutil.rmtree(parts.folder, ignore_errors=True)  # a folder without run.json holds nothing to keep
        parts.folder.mkdir(parents=True)
        record = {"format": FORMAT_VERSION, "identity": identity, "attempts": []}
    for stale in parts.folder.glob(".*.partial-*"):  # the half-written files of a killed run
        stale.unlink(missing_ok=True)
    record["attempts"].append({"attempt": len(record["attempts"]) + 1, "started": _now(), "processes": processes.count})
    tables.write_json(parts.run_file, record)
    return {"attempt": len(record["attempts"])}


# ----- input rows ------------------------------------------------------------------------------------------


def check_columns(corpus: Corpus, operation: type[Operation], languages: str | None) -> None:
    """Refuse, before any model loads, a corpus whose columns cannot serve the operation."""
    found = ", ".join(repr(c) for c in corpus.columns if c) or "none"
    if "text" not in corpus.columns:
        raise ExplorerError(
            f"{corpus.path} has no column 'text' (columns found: {found}). Batch mode reads a column text, and per "
            "row either languages (comma-separated codes such as en_XX,de_DE) or language (one code); or give "
            "--languages for every row."
        )
    if {"languages", "language"} <= set(corpus.columns):
        raise ExplorerError(
            f"{corpus.path} has both a column 'languages' and a column 'language'; keep one (languages: "
            "comma-separated codes, language: one code)."
        )
    if operation.needs_languages and not {"languages", "language"} & set(corpus.columns) and not languages:
        raise ExplorerError(
            f"{corpus.path} has no column 'languages' or 'language' (columns found: {found}), and no --languages was "
            "given. Say which adapters to use: per row in a column languages (e.g. en_XX,de_DE), or for every row "
            "with --languages en_XX,de_DE."
        )
    for column, kinds in (("text", "strings"), ("languages", "strings or lists of strings"), ("language", "strings")):
        kind = corpus.type_of(column)
        if kind is None:
            continue
        allowed = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
        if column == "languages" and (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
            allowed = pa.types.is_string(kind.value_type) or pa.types.is_large_string(kind.value_type)
        if not allowed:
            raise ExplorerError(f"The column {column!r} of {corpus.path} holds {kind}; it must hold {kinds}.")


def _blank(value: object) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
        or (isinstance(value, (list, tuple)) and not value)
    )


def _items(
    records: list[Record], operation: type[Operation], languages: str | None
) -> tuple[list[Item], dict[int, str]]:
    """The readable rows as Items, and the reason for each row that is not."""
    items, failures = [], {}
    for record in records:
        if record.problem is not None:
            failures[record.row] = f"The record {record.problem}."
            continue
        fields = record.fields or {}
        text = fields.get("text")
        if text is None:
            failures[record.row] = "The column 'text' is empty in this row. Every row needs a text."
            continue
        chosen = fields.get("languages", fields.get("language"))
        if _blank(chosen):
            chosen = languages or None
        if chosen is None and operation.needs_languages:
            failures[record.row] = (
                "No languages for this row: fill its column languages (e.g. en_XX,de_DE) or pass --languages."
            )
            continue
        items.append(Item(record.row, text, chosen))
    return items, failures


def _blocks(records: Iterable[Record], size: int) -> Iterator[tuple[int, list[Record]]]:
    block: list[Record] = []
    number = 0
    for record in records:
        block.append(record)
        if len(block) == size:
            yield number, block
            number, block = number + 1, []
    if block:
        yield number, block


def _run_block(operation: Operation, explorer: Explorer, items: list[Item]) -> tuple[pa.Table, dict[int, str]]:
    """The operation over a block's items; if the block fails as a whole (a fault no check caught), its rows
    run one at a time, and a row that still fails becomes a bad row with the error: it never stops the run."""
    try:
        return operation.run(explorer, items)
    except Exception as exc:
        log.warning("a block failed as a whole (%s: %s); running its rows one at a time", type(exc).__name__, exc)
    parts, failures = [], {}
    for item in items:
        try:
            table, failed = operation.run(explorer, [item])
        except Exception as exc:
            failures[item.row] = f"could not be processed: {type(exc).__name__}: {exc}"
            continue
        parts.append(table)
        failures.update(failed)
    return (pa.concat_tables(parts) if parts else operation.block_schema().empty_table()), failures


# ----- progress ----------------------------------------------------------------------------------------------


class Progress:
    """Process 0's progress bar (stderr): rows done of all processes, rows/s, time left. With several processes
    it counts the block files in the shared parts folder, at most every few seconds."""

    def __init__(self, parts: Parts, total: int, block_rows: int, enabled: bool, name: str, processes: int):
        from tqdm import tqdm

        self.parts, self.total, self.block_rows, self.processes = parts, total, block_rows, processes
        self.counted = parts.done()
        self.looked = time.monotonic()
        self.bar = tqdm(
            total=total,
            initial=sum(self.rows_of(b) for b in self.counted),
            unit="rows",
            desc=name,
            file=sys.stderr,
            disable=not enabled,
            dynamic_ncols=True,
            mininterval=0.5 if sys.stderr.isatty() else 10,
            smoothing=0.1,
        )

    def rows_of(self, block: int) -> int:
        return max(0, min(self.block_rows, self.total - block * self.block_rows))

    def finished(self, block: int) -> None:
        """This process finished a block; with several processes, also count the others' now and then."""
        if block not in self.counted:
            self.counted.add(block)
            self.bar.update(self.rows_of(block))
        if self.processes > 1 and time.monotonic() - self.looked > 2:
            self.look()

    def look(self) -> set[int]:
        self.looked = time.monotonic()
        found = self.parts.done()
        new = found - self.counted
        if new:
            self.counted |= new
            self.bar.update(sum(self.rows_of(b) for b in new))
        return found

    def close(self) -> None:
        self.bar.close()


# ----- the run -------------------------------------------------------------------------------------------------


def _output_paths(settings: BatchSettings) -> None:
    tables.output_format(settings.output)
    if settings.output.resolve() == settings.input.resolve():
        raise ExplorerError("--output must not be the input file.")
    if settings.block_rows < 1 or settings.tokens_per_pass < 1:
        raise ExplorerError("--block-rows and --tokens-per-pass must be at least 1.")
    settings.output.parent.mkdir(parents=True, exist_ok=True)


def _operation(settings: BatchSettings) -> Operation:
    kind = OPERATIONS.get(settings.operation)
    if kind is None:
        raise ExplorerError(f"Unknown batch operation {settings.operation!r}; use one of {', '.join(OPERATIONS)}.")
    options: dict[str, object] = {"tokens_per_pass": settings.tokens_per_pass}
    if settings.operation == "predict":
        options["top_k"] = settings.top_k
    if settings.operation == "project":
        options["layer"] = settings.layer
    return kind(**options)


def run_batch(settings: BatchSettings) -> BatchReport:
    """Run settings.operation over every row of settings.input into settings.output (see the module's docstring)."""
    settings = BatchSettings(**{**settings.__dict__, "input": Path(settings.input), "output": Path(settings.output)})
    operation = _operation(settings)
    _output_paths(settings)
    corpus = Corpus(settings.input)
    check_columns(corpus, type(operation), settings.languages)
    threads = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    processes = join(settings.device)
    try:
        return _run(settings, operation, corpus, processes)
    finally:
        processes.close()
        torch.set_num_threads(threads)  # a library call leaves the caller's setting as it found it


def _run(settings: BatchSettings, operation: Operation, corpus: Corpus, processes: Processes) -> BatchReport:
    report = BatchReport(rank=processes.rank, processes=processes.count)
    explorer = Explorer.from_pretrained(
        settings.model,
        backend=settings.backend,
        device=processes.device or settings.device,
        dtype=settings.dtype,
        languages=settings.load_languages,
    )
    operation.prepare(explorer)
    identity, model = model_record(explorer)
    parts = Parts(settings.output)
    run_identity = {
        "format": FORMAT_VERSION,
        "operation": operation.name,
        "settings": {**operation.settings(), "languages": settings.languages, "block_rows": settings.block_rows},
        "model": identity,
    }
    lock = RunLock(settings.output)
    try:
        return _work(settings, operation, explorer, corpus, processes, parts, run_identity, model, lock, report)
    finally:
        lock.release()


def _work(
    settings: BatchSettings,
    operation: Operation,
    explorer: Explorer,
    corpus: Corpus,
    processes: Processes,
    parts: Parts,
    run_identity: dict,
    model: dict,
    lock: RunLock,
    report: BatchReport,
) -> BatchReport:
    decision: dict = {}
    if processes.rank == 0:
        try:
            lock.exclusive()
            run_identity["input"] = corpus.fingerprint()
            decision = _start(settings, parts, run_identity, processes)
            lock.shared()  # the others join under the same lock
        except ExplorerError as exc:
            decision = {"error": str(exc)}
    decision = processes.share(decision)
    if "error" in decision:
        raise ExplorerError(decision["error"])
    if processes.rank > 0:
        lock.shared()
    if decision.get("complete"):
        report.already_complete, report.output = True, settings.output
        if processes.rank == 0:
            print(f"{settings.output} is complete already (same model, input and settings); nothing to do.")
            lock.release(remove=True)
        return report

    total = corpus.count() if processes.rank == 0 else 0
    progress = (
        Progress(parts, total, settings.block_rows, settings.progress, f"batch {operation.name}", processes.count)
        if processes.rank == 0
        else None
    )
    done = parts.done()
    start, cpu = time.perf_counter(), time.process_time()
    for number, records in _blocks(corpus.records(INPUT_COLUMNS), settings.block_rows):
        if number % processes.count != processes.rank:
            continue
        if number in done:
            report.blocks_found_done += 1
            continue
        began = time.perf_counter()
        items, failures = _items(records, type(operation), settings.languages)
        table, failed = _run_block(operation, explorer, items)
        failures.update(failed)
        lines = {record.row: record.line for record in records}
        metadata = {
            "block": number,
            "rows": [records[0].row, records[-1].row + 1],
            "errors": [[row, lines[row], reason] for row, reason in sorted(failures.items())],
            "attempt": decision["attempt"],
            "rank": processes.rank,
            "processes": processes.count,
            "seconds": round(time.perf_counter() - began, 4),
        }
        tables.write_block(parts.block(number), table, metadata)
        report.rows += len(records)
        report.blocks += 1
        if progress is not None:
            progress.finished(number)
    report.seconds, report.cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    rate = report.rows / report.seconds if report.seconds > 0 else 0.0
    print(
        f"rank {processes.rank} of {processes.count}: computed {report.rows:,} rows in {report.blocks:,} blocks in "
        f"{report.seconds:.2f} s ({rate:,.1f} rows/s, {report.cpu_seconds:.2f} s of CPU); "
        f"{report.blocks_found_done:,} of its blocks were done already",
        file=sys.stderr,
        flush=True,
    )
    if progress is not None and processes.count > 1:
        blocks = set(range(math.ceil(total / settings.block_rows)))
        while not blocks <= progress.look():
            time.sleep(1)  # the others' last blocks; a process that dies ends the whole launch
    processes.barrier()
    if processes.rank == 0:
        progress.close()
        model["threads_per_process"] = torch.get_num_threads()
        _merge(settings, operation, parts, corpus, total, run_identity, model, report)
        lock.release(remove=True)
    return report


def _merge(
    settings: BatchSettings,
    operation: Operation,
    parts: Parts,
    corpus: Corpus,
    total: int,
    identity: dict,
    model: dict,
    report: BatchReport,
) -> None:
    """Process 0, once every block is done: the blocks in row order into the output, the bad rows into
    OUTPUT's errors file, the metadata, and then the parts folder removed (unless --keep-parts)."""
    count = math.ceil(total / settings.block_rows)
    missing = sorted(set(range(count)) - parts.done())
    if missing:
        raise ExplorerError(
            f"{len(missing)} blocks are missing from {parts.folder} (the first: {missing[0]}); run the same command "
            "again to compute them."
        )
    blocks = [parts.block_metadata(number) for number in range(count)]
    runs: dict[int, dict] = {}
    for block in blocks:
        run = runs.setdefault(block["attempt"], {"attempt": block["attempt"], "rows_by_rank": {}})
        run["processes"] = block["processes"]
        rows = block["rows"][1] - block["rows"][0]
        run["rows_by_rank"][str(block["rank"])] = run["rows_by_rank"].get(str(block["rank"]), 0) + rows
    attempts = json.loads(parts.run_file.read_text(encoding="utf-8"))["attempts"]
    for attempt in attempts:
        if attempt["attempt"] in runs:
            runs[attempt["attempt"]]["started"] = attempt["started"]

    def block_tables() -> Iterator[pa.Table]:
        for number in range(count):
            yield tables.read_block(parts.block(number))

    result = tables.ResultFile(settings.output, operation.schema())
    try:
        for table in operation.finish(block_tables):
            result.write(table)
        errors = (tuple(error) for block in blocks for error in block["errors"])
        bad = tables.write_errors(tables.errors_path(settings.output), errors)
        metadata = {
            "tool": "xmod-explorer",
            "operation": operation.name,
            "written": _now(),
            "identity": identity,
            "model": model,
            "settings": identity["settings"],
            "input": {"path": str(settings.input), **identity["input"], "rows": total},
            "output": {
                "path": str(settings.output),
                "rows": result.rows,
                "input_rows_with_results": total - bad,
                "bad_rows": bad,
                "errors_file": tables.errors_path(settings.output).name,
            },
            "columns": operation.meanings(),
            "runs": [runs[key] for key in sorted(runs)],
            "versions": _versions(),
            **operation.summary(),
        }
        result.close(metadata)
    except BaseException:
        result.discard()
        raise
    if not settings.keep_parts:
        shutil.rmtree(parts.folder)
    report.output, report.result_rows, report.input_rows, report.bad_rows = settings.output, result.rows, total, bad
    note = f" ({bad:,} bad rows: {tables.errors_path(settings.output).name})" if bad else ""
    print(f"wrote {result.rows:,} result rows for {total:,} input rows{note} to {settings.output}")


def _versions() -> dict:
    import transformers

    try:
        from importlib.metadata import version

        ours = version("xmod-explorer")
    except Exception:
        ours = None
    return {
        "xmod_explorer": ours,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "pyarrow": pa.__version__,
    }
