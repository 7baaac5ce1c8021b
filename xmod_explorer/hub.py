"""Turn a model reference (local folder or hub id) into a local folder, honouring the HF cache.

Offline machines must find out quickly: with no cache and no network, huggingface_hub retries
for a long time, so we check the cache first and probe the endpoint with a short timeout.
"""

from __future__ import annotations

import logging
import os
import re
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
ADAPTER_FILES = ["adapter_config.json", "head_config.json", "*.safetensors", "*.bin"]
# Hub repositories whose main branch has only pickle weights, and a revision that has safetensors.
SAFETENSORS_REVISIONS = {"facebook/xmod-base": "refs/pr/3"}


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, read now rather than at import."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(flag.strip().lower() in {"1", "true", "yes", "on"} for flag in flags) or bool(constants.HF_HUB_OFFLINE)


def cache_dir() -> str | None:
    """The hub cache folder in effect now (HF_HUB_CACHE, else HF_HOME/hub, else the library default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub endpoint answers within timeout seconds (False when offline mode is set)."""
    if hub_offline():
        return False
    import requests
    from huggingface_hub import constants

    try:
        requests.head(constants.ENDPOINT, timeout=timeout, allow_redirects=False)
    except requests.RequestException:
        return False
    return True


@dataclass(frozen=True)
class LocalCopy:
    """A model reference resolved to a folder on disk."""

    reference: str
    path: Path
    from_hub: bool
    revision: str | None = None


def _snapshot(repo: str, patterns: list[str], *, revision: str | None, local_only: bool) -> Path:
    from huggingface_hub import snapshot_download

    folder = snapshot_download(
        repo,
        revision=revision,
        allow_patterns=patterns,
        cache_dir=cache_dir(),
        local_files_only=local_only,
    )
    return Path(folder)


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))


def _weight_patterns_online(repo: str) -> tuple[list[str], str | None]:
    """Choose safetensors when the repository (or its known safetensors revision) offers them."""
    from huggingface_hub import HfApi

    api = HfApi()
    files = api.list_repo_files(repo)
    if any(name.endswith(".safetensors") for name in files):
        return SAFETENSORS_FILES, None
    revision = SAFETENSORS_REVISIONS.get(repo)
    if revision:
        try:
            if any(name.endswith(".safetensors") for name in api.list_repo_files(repo, revision=revision)):
                return SAFETENSORS_FILES, revision
        except Exception as exc:  # a missing revision only means: fall back to pickle weights
            log.info("no safetensors revision %s for %s (%s)", revision, repo, exc)
    return PICKLE_FILES, None


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


def fetch_cached(reference: str, *, adapter: bool = False) -> LocalCopy:
    """Like fetch, but only from a local path or the hub cache: never touches the network."""
    path = _check_reference(reference)
    if path is not None:
        return LocalCopy(reference, path, from_hub=False)
    required = "adapter_config.json" if adapter else "config.json"
    base = ADAPTER_FILES if adapter else CONFIG_FILES + TOKENIZER_FILES
    for revision in [None if adapter else SAFETENSORS_REVISIONS.get(reference), None]:
        try:
            folder = _snapshot(reference, base + SAFETENSORS_FILES + PICKLE_FILES, revision=revision, local_only=True)
        except Exception:
            continue
        if (folder / required).exists() and _has_weights(folder):
            log.info("using cached %s from %s", reference, folder)
            return LocalCopy(reference, folder, from_hub=True, revision=revision)
    raise ExplorerError(f"{reference} is not in the local Hugging Face cache.")


def fetch(reference: str, *, adapter: bool = False) -> LocalCopy:
    """Resolve a model (or, with adapter=True, an adapter) reference to a local folder.

    Looks at an existing path, then the hub cache, then downloads. Raises ExplorerError when the
    folder does not exist, or the hub cannot be reached and the files are not cached.
    """
    try:
        return fetch_cached(reference, adapter=adapter)
    except ExplorerError:
        if _check_reference(reference) is not None:
            raise
    required = "adapter_config.json" if adapter else "config.json"
    base = ADAPTER_FILES if adapter else CONFIG_FILES + TOKENIZER_FILES
    if hub_offline():
        raise ExplorerError(
            f"{reference} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set. "
            "Unset HF_HUB_OFFLINE to download it, or give a local folder."
        )
    if not hub_reachable():
        raise ExplorerError(
            f"{reference} is not in the local Hugging Face cache and the hub cannot be reached. "
            "Connect to the internet, or give a local folder."
        )
    try:
        patterns, revision = ([], None) if adapter else _weight_patterns_online(reference)
        log.info("downloading %s", reference)
        folder = _snapshot(reference, base + patterns, revision=revision, local_only=False)
    except Exception as exc:
        raise ExplorerError(f"Could not download {reference} from the hub: {exc}") from exc
    if not (folder / required).exists():
        raise ExplorerError(
            f"{reference} has no {required}; it is not an X-MOD {'adapter' if adapter else 'model'} repository."
        )
    return LocalCopy(reference, folder, from_hub=True, revision=revision)
