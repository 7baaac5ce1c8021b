"""Where files come from: a local folder, the Hugging Face cache, or the hub; nothing else touches the network.

Offline machines must find out quickly: with no cache and no network, huggingface_hub retries
for a long time, so the cache is checked first and the endpoint probed with a short timeout.
Downloads go file by file through huggingface_hub's own client, config first, so that a config
the caller refuses costs no weight download; each file's progress (bytes done of bytes total) is
reported to a callback and the log, and an interrupted download keeps its partial file, which the
next try resumes.
"""

from __future__ import annotations

import contextvars
import dataclasses
import fnmatch
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xmod_explorer.errors import ExplorerError

log = logging.getLogger(__name__)

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
CONFIG_FILES = ["config.json"]
TOKENIZER_FILES = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentencepiece.bpe.model",
]
SAFETENSORS_FILES = ["model.safetensors", "model.safetensors.index.json", "model-*.safetensors"]
PICKLE_FILES = ["pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin"]
ADAPTER_WEIGHTS = ["adapter.safetensors", "pytorch_adapter.bin", "head_config.json", "pytorch_model_head.bin"]
ADAPTER_FILES = ["adapter_config.json", *ADAPTER_WEIGHTS]
# Hub repositories whose main branch has only pickle weights, and a revision that has safetensors.
SAFETENSORS_REVISIONS = {"facebook/xmod-base": "refs/pr/3"}
KINDS = ("model", "adapter", "tokenizer")
REQUIRED = {"model": "config.json", "adapter": "adapter_config.json", "tokenizer": None}
PROGRESS_INTERVAL_S = 0.25
LOG_INTERVAL_S = 5.0


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, read now rather than at import."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    if any(flag.strip().lower() in {"1", "true", "yes", "on"} for flag in flags):
        return True
    if any(flag.strip().lower() in {"0", "false", "no", "off"} for flag in flags if flag.strip()):
        return False
    return bool(constants.HF_HUB_OFFLINE)


def cache_dir() -> str:
    """The hub cache folder in effect now (HF_HUB_CACHE, else HF_HOME/hub, else the library default)."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return str(constants.HF_HUB_CACHE)


def endpoint() -> str:
    """The hub's address in effect now (HF_ENDPOINT, read at call time like the cache and offline flags)."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub endpoint answers within timeout seconds (False when offline mode is set)."""
    if hub_offline():
        return False
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint(), method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True  # it answered, if only with an error status
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return True


def download_command(repo: str, files: list[str] | None = None) -> str:
    """The one-line shell command (huggingface_hub's `hf` CLI) that puts repo's files into the cache."""
    return " ".join(["hf", "download", repo, *(files or [])])


@dataclass(frozen=True)
class LocalCopy:
    """A model reference resolved to a folder on disk."""

    reference: str
    path: Path
    from_hub: bool
    revision: str | None = None
    downloaded: bool = False


@dataclass(frozen=True)
class DownloadProgress:
    """How far one file's download has come; total is None where the hub did not say."""

    repo: str
    file: str
    done: int
    total: int | None
    file_number: int
    files: int

    @property
    def fraction(self) -> float | None:
        return None if not self.total else min(1.0, self.done / self.total)

    def describe(self) -> str:
        size = f"{_size(self.done)} of {_size(self.total)}" if self.total else _size(self.done)
        return f"Downloading {self.repo}: {self.file}, {size} (file {self.file_number} of {self.files})"


ProgressCallback = Callable[[DownloadProgress], None]


def _size(count: int | None) -> str:
    value = float(count or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def repo_folder(repo: str) -> Path:
    """The cache folder huggingface_hub keeps repo in (models--owner--name)."""
    return Path(cache_dir()) / ("models--" + repo.replace("/", "--"))


def _check_reference(reference: str) -> Path | None:
    """The local folder for reference if it is a path; None if it is a hub id; else an error."""
    path = Path(reference).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ExplorerError(f"{reference!r} is a file; give the folder that holds config.json and the weights.")
        return path.resolve()
    if not HUB_ID.match(reference):
        raise ExplorerError(
            f"No folder {reference!r} exists, and it is not a hub id of the form owner/name "
            "(for example facebook/xmod-base). Check the path."
        )
    return None


def has_weights(folder: Path, kind: str = "model") -> bool:
    """Whether folder holds the weights (or, for a tokenizer, the vocabulary) of its kind."""
    if kind == "tokenizer":
        return (folder / "tokenizer.json").is_file() or (folder / "sentencepiece.bpe.model").is_file()
    if kind == "adapter":
        return (folder / "adapter.safetensors").is_file() or (folder / "pytorch_adapter.bin").is_file()
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))


def _complete(folder: Path, kind: str) -> bool:
    required = REQUIRED[kind]
    return (required is None or (folder / required).is_file()) and has_weights(folder, kind)


def cached_snapshot(repo: str, revision: str | None = None) -> Path | None:
    """The cache's snapshot folder of repo at revision (default main), or None; never touches the network."""
    folder = repo_folder(repo)
    revision = revision or "main"
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        commit = revision
    else:
        ref = folder / "refs" / revision
        if not ref.is_file():
            return None
        commit = ref.read_text().strip()
    snapshot = folder / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


def fetch_cached(reference: str, *, kind: str = "model") -> LocalCopy:
    """Like fetch, but only from a local path or the hub cache: never touches the network."""
    path = _check_reference(reference) if kind != "tokenizer" or "/" in reference else None
    if path is not None:
        return LocalCopy(reference, path, from_hub=False)
    revisions: list[str | None] = [None]
    if kind == "model" and reference in SAFETENSORS_REVISIONS:
        revisions.insert(0, SAFETENSORS_REVISIONS[reference])
    for revision in revisions:
        folder = cached_snapshot(reference, revision)
        if folder is not None and _complete(folder, kind):
            log.info("using cached %s from %s", reference, folder)
            return LocalCopy(reference, folder, from_hub=True, revision=revision)
    raise ExplorerError(f"{reference} is not in the local Hugging Face cache ({cache_dir()}).")


def _pick(files: dict[str, int | None], patterns: list[str]) -> list[str]:
    return [name for name in files if any(fnmatch.fnmatch(name, pattern) for pattern in patterns)]


def _repo_files(repo: str, revision: str | None) -> tuple[dict[str, int | None], str]:
    """File names (with sizes where the hub gives them) and commit of repo at revision, in one request."""
    from huggingface_hub import HfApi

    info = HfApi(endpoint=endpoint()).model_info(repo, revision=revision, files_metadata=True)
    return {sibling.rfilename: sibling.size for sibling in info.siblings or []}, info.sha


def _plan(repo: str, kind: str) -> tuple[list[str], dict[str, int | None], str | None]:
    """Which files to download (config first, weights last), their sizes, and from which revision."""
    files, _ = _repo_files(repo, None)
    revision = None
    if kind == "tokenizer":
        return _pick(files, [*TOKENIZER_FILES, "config.json"]), files, None
    if kind == "adapter":
        chosen = _pick(files, ADAPTER_FILES)
        return sorted(chosen, key=lambda name: name != "adapter_config.json"), files, None
    weights = _pick(files, SAFETENSORS_FILES)
    if not weights and repo in SAFETENSORS_REVISIONS:
        try:
            other, _ = _repo_files(repo, SAFETENSORS_REVISIONS[repo])
        except Exception as exc:  # a missing revision only means: fall back to pickle weights
            log.info("no safetensors revision %s for %s (%s)", SAFETENSORS_REVISIONS[repo], repo, exc)
        else:
            if _pick(other, SAFETENSORS_FILES):
                files, revision = other, SAFETENSORS_REVISIONS[repo]
                weights = _pick(files, SAFETENSORS_FILES)
    weights = weights or _pick(files, PICKLE_FILES)
    return _pick(files, CONFIG_FILES) + _pick(files, TOKENIZER_FILES) + weights, files, revision


class _Watcher:
    """Reports a download's progress from the size of the partial file huggingface_hub writes into the cache."""

    def __init__(self, repo: str, file: str, total: int | None, number: int, count: int, callback):
        self.event = DownloadProgress(repo, file, 0, total, number, count)
        self.blobs = repo_folder(repo) / "blobs"
        self.callback = callback
        self.stop = threading.Event()
        # The caller's context travels along: a web app's progress display is found through context variables.
        context = contextvars.copy_context()
        self.thread = threading.Thread(target=context.run, args=(self._run,), name=f"progress {file}", daemon=True)
        self.logged = 0.0

    def partial_size(self) -> int | None:
        try:
            partial = max(self.blobs.glob("*.incomplete"), key=lambda p: p.stat().st_mtime, default=None)
            return None if partial is None else partial.stat().st_size
        except OSError:
            return None

    def report(self, done: int, final: bool = False) -> None:
        self.event = dataclasses.replace(self.event, done=done)
        now = time.monotonic()
        if final or now - self.logged >= LOG_INTERVAL_S:
            self.logged = now
            log.info("%s", self.event.describe())
        if self.callback is not None:
            try:
                self.callback(self.event)
            except Exception:  # a progress display must never break the download
                log.debug("progress callback failed", exc_info=True)

    def _run(self) -> None:
        while not self.stop.wait(PROGRESS_INTERVAL_S):
            size = self.partial_size()
            if size is not None and size != self.event.done:
                self.report(size)

    def __enter__(self):
        self.report(0)
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stop.set()
        self.thread.join(timeout=5)


def _download(repo: str, kind: str, before_weights, progress: ProgressCallback | None) -> LocalCopy:
    from huggingface_hub import hf_hub_download

    try:
        names, sizes, revision = _plan(repo, kind)
    except Exception as exc:
        raise ExplorerError(_hub_error(repo, exc)) from exc
    required = REQUIRED[kind]
    if required is not None and required not in names:
        what = {"model": "model", "adapter": "adapter"}[kind]
        raise ExplorerError(f"{repo} has no {required}; it is not an X-MOD {what} repository.")
    if kind == "tokenizer" and not _has_tokenizer_name(names):
        raise ExplorerError(f"{repo} has no tokenizer.json or sentencepiece.bpe.model; it holds no tokenizer.")
    log.info("downloading %s%s: %s", repo, f" (revision {revision})" if revision else "", ", ".join(names))
    folder = None
    for number, name in enumerate(names, start=1):
        with _Watcher(repo, name, sizes.get(name), number, len(names), progress) as watcher:
            try:
                path = Path(hf_hub_download(repo, name, revision=revision, cache_dir=cache_dir(), endpoint=endpoint()))
            except Exception as exc:
                done = watcher.partial_size() or watcher.event.done
                raise ExplorerError(_interrupted(repo, name, done, sizes.get(name), exc)) from exc
            watcher.report(path.stat().st_size, final=True)
        folder = path.parent
        if name == required and before_weights is not None:
            before_weights(folder)  # refuses (raises) before a single weight byte is fetched
    assert folder is not None
    if kind == "tokenizer" and before_weights is not None:
        before_weights(folder)
    return LocalCopy(repo, folder, from_hub=True, revision=revision, downloaded=True)


def _has_tokenizer_name(names: list[str]) -> bool:
    return "tokenizer.json" in names or "sentencepiece.bpe.model" in names


def _hub_error(repo: str, exc: Exception) -> str:
    kind = type(exc).__name__
    if "RepositoryNotFound" in kind:
        return f"{repo} does not exist on the hub (or is private). Check the name, e.g. facebook/xmod-base."
    if "RevisionNotFound" in kind:
        return f"{repo} has no such revision on the hub."
    return f"Could not ask the hub about {repo} ({kind}: {str(exc)[:200]}). Check the connection and try again."


def _interrupted(repo: str, name: str, done: int, total: int | None, exc: Exception) -> str:
    got = f"{_size(done)} of {_size(total)}" if total else _size(done)
    return (
        f"The download of {name} from {repo} stopped after {got} ({type(exc).__name__}: {str(exc)[:200]}). "
        "What arrived is kept in the Hugging Face cache: try again and the download resumes where it stopped."
    )


def fetch(
    reference: str,
    *,
    kind: str = "model",
    before_weights: Callable[[Path], None] | None = None,
    progress: ProgressCallback | None = None,
) -> LocalCopy:
    """Resolve a model, adapter or tokenizer reference to a local folder.

    Looks at an existing path, then the hub cache, then downloads (kind 'model': config.json, tokenizer
    files and one set of weights; 'adapter': adapter_config.json and its weights; 'tokenizer': the
    tokenizer files). before_weights(folder) runs on the downloaded config before any weights are
    fetched and may raise to stop the download. Raises ExplorerError when the folder does not exist,
    or the hub cannot be reached and the files are not cached.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    try:
        return fetch_cached(reference, kind=kind)
    except ExplorerError:
        if "/" in reference and _check_reference(reference) is not None:
            raise
    if hub_offline():
        raise ExplorerError(
            f"{reference} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set. "
            f"Unset HF_HUB_OFFLINE to download it (or run `{download_command(reference)}` where there is a "
            "connection), or give a local folder."
        )
    if not hub_reachable():
        raise ExplorerError(
            f"{reference} is not in the local Hugging Face cache and the hub ({endpoint()}) cannot be reached. "
            "Connect to the internet, or give a local folder."
        )
    return _download(reference, kind, before_weights, progress)
