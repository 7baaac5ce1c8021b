"""A Hugging Face hub on loopback, answering huggingface_hub's requests the way huggingface.co does.

Tests point HF_ENDPOINT at it and let huggingface_hub's own client make every request: nothing in
the download path is replaced. What it answers (checked against huggingface_hub's file_download.py
and hf_api.py):

- ``HEAD/GET /{repo}/resolve/{revision}/{file}``: small files come back directly with ``ETag`` (the
  git blob id), ``X-Repo-Commit`` and ``Content-Length``; large (LFS) files with a 302 to a
  storage URL on another path plus ``X-Linked-Etag`` (sha256), ``X-Linked-Size`` and
  ``X-Repo-Commit``, as the hub redirects to its CDN. The revision may be URL-quoted (refs%2Fpr%2F3).
- ``GET /lfs/{sha256}``: the bytes, with ``Range: bytes=N-`` answered by 206 (resumed downloads).
- ``GET /api/models/{repo}[/revision/{revision}][?blobs=true]``: commit ``sha`` and ``siblings``
  (with ``size``, ``blobId`` and ``lfs`` when ``blobs=true``).
- Missing repositories, revisions and files: the hub's status codes and ``X-Error-Code`` headers.

Faults that the real network produces, produced for real: a connection dropped mid-file
(``drop_after``) and a slow link (``bytes_per_second``). Every request is logged. The server runs
in a thread on a free loopback port and stops with ``close()``.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlparse

LFS_SUFFIXES = (".bin", ".safetensors", ".model", ".pt", ".h5", ".msgpack")
CHUNK = 1 << 16


@dataclass
class HubFile:
    """One file of a repository revision: its bytes in memory, or a path for large files."""

    name: str
    data: bytes | None = None
    path: Path | None = None
    lfs: bool = False
    sha256: str = ""
    blob_id: str = ""

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.path.stat().st_size

    def read(self, start: int, end: int) -> bytes:
        if self.data is not None:
            return self.data[start:end]
        with self.path.open("rb") as handle:
            handle.seek(start)
            return handle.read(end - start)


def _hash_file(entry: HubFile) -> None:
    sha256, sha1 = hashlib.sha256(), hashlib.sha1()
    sha1.update(b"blob %d\0" % entry.size)
    position = 0
    while position < entry.size:
        chunk = entry.read(position, min(entry.size, position + (8 << 20)))
        sha256.update(chunk)
        sha1.update(chunk)
        position += len(chunk)
    entry.sha256 = sha256.hexdigest()
    entry.blob_id = sha1.hexdigest()
    if entry.lfs:  # git stores the LFS pointer; its blob id is the ETag of the redirect
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{entry.sha256}\nsize {entry.size}\n"
        entry.blob_id = hashlib.sha1(b"blob %d\0" % len(pointer) + pointer.encode()).hexdigest()


@dataclass
class Revision:
    sha: str
    files: dict[str, HubFile] = field(default_factory=dict)


@dataclass
class Drop:
    """Cut the next `times` downloads of a file after `after` bytes of its body."""

    after: int
    times: int


@dataclass
class Logged:
    method: str
    path: str
    range: str | None


class HubEmulator:
    """Serves repositories added with add() under their real ids; see the module docstring."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, Revision]] = {}
        self.by_sha256: dict[str, HubFile] = {}
        self.drops: dict[str, Drop] = {}
        self.requests: list[Logged] = []
        self.bytes_per_second: float | None = None
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"hub": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="hub-emulator", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def add(self, repo: str, files: dict[str, bytes | str | Path], revision: str = "main") -> str:
        """Publish files (name -> bytes, text or a path) as repo at revision; returns the commit sha."""
        entries = {}
        for name, content in files.items():
            if isinstance(content, Path):
                entry = HubFile(name, path=content)
            else:
                entry = HubFile(name, data=content.encode() if isinstance(content, str) else content)
            entry.lfs = name.endswith(LFS_SUFFIXES) or entry.size > 10 << 20
            _hash_file(entry)
            entries[name] = entry
            if entry.lfs:
                self.by_sha256[entry.sha256] = entry
        digest = hashlib.sha1(repo.encode() + revision.encode())
        for name in sorted(entries):
            digest.update(name.encode() + entries[name].sha256.encode())
        sha = digest.hexdigest()
        self.repos.setdefault(repo, {})[revision] = Revision(sha, entries)
        return sha

    def drop_after(self, repo: str, name: str, after: int, times: int = 1, revision: str = "main") -> None:
        """The next `times` downloads of repo's file are cut after `after` bytes, like a lost connection."""
        self.drops[self.repos[repo][revision].files[name].sha256] = Drop(after, times)

    def requests_for(self, fragment: str) -> list[Logged]:
        with self._lock:
            return [r for r in self.requests if fragment in r.path]

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def _log(self, method: str, path: str, range_header: str | None) -> None:
        with self._lock:
            self.requests.append(Logged(method, path, range_header))


class _Handler(BaseHTTPRequestHandler):
    hub: HubEmulator
    protocol_version = "HTTP/1.1"
    timeout = 30  # a stalled client cannot hold a server thread forever

    def log_message(self, format, *args):
        pass

    def do_HEAD(self):
        self._answer(head=True)

    def do_GET(self):
        self._answer(head=False)

    # ----- routing ---------------------------------------------------------------------------

    def _answer(self, head: bool) -> None:
        url = urlparse(self.path)
        self.hub._log(self.command, self.path, self.headers.get("Range"))
        parts = [unquote(part) for part in url.path.strip("/").split("/")] if url.path.strip("/") else []
        if not parts:
            return self._send(200, b"", {"Content-Type": "text/plain"}, head)
        if parts[0] == "lfs" and len(parts) == 2:
            return self._lfs(parts[1], head)
        if parts[:2] == ["api", "models"]:
            return self._api(parts[2:], parse_qs(url.query), head)
        if "resolve" in parts:
            at = parts.index("resolve")
            if 0 < at <= 2 and len(parts) > at + 2:
                return self._resolve("/".join(parts[:at]), parts[at + 1], "/".join(parts[at + 2 :]), head)
        return self._error(404, "EntryNotFound", "Not found", head)

    def _revision(self, repo: str, revision: str, head: bool) -> Revision | None:
        revisions = self.hub.repos.get(repo)
        if revisions is None:
            # The hub answers 401 for both missing and private repositories.
            self._error(401, "RepoNotFound", "Repository not found", head)
            return None
        found = revisions.get(revision) or next((r for r in revisions.values() if r.sha == revision), None)
        if found is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
        return found

    def _resolve(self, repo: str, revision: str, name: str, head: bool) -> None:
        found = self._revision(repo, revision, head)
        if found is None:
            return
        entry = found.files.get(name)
        if entry is None:
            return self._error(404, "EntryNotFound", f"{name} does not exist", head, {"X-Repo-Commit": found.sha})
        headers = {"X-Repo-Commit": found.sha, "ETag": f'"{entry.blob_id}"', "Accept-Ranges": "bytes"}
        if entry.lfs:
            headers.update(
                {
                    "Location": f"{self.hub.url}/lfs/{entry.sha256}",
                    "X-Linked-Etag": f'"{entry.sha256}"',
                    "X-Linked-Size": str(entry.size),
                }
            )
            return self._send(302, b"", headers, head)
        return self._body(entry, headers, head)

    def _lfs(self, sha256: str, head: bool) -> None:
        entry = self.hub.by_sha256.get(sha256)
        if entry is None:
            return self._send(404, b"", {}, head)
        self._body(entry, {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"}, head, lfs=True)

    def _api(self, parts: list[str], query: dict, head: bool) -> None:
        if "revision" in parts:
            at = parts.index("revision")
            repo, revision = "/".join(parts[:at]), "/".join(parts[at + 1 :])
        else:
            repo, revision = "/".join(parts), "main"
        found = self._revision(repo, revision, head)
        if found is None:
            return
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for entry in found.files.values():
            sibling = {"rfilename": entry.name}
            if blobs:
                sibling.update({"blobId": entry.blob_id, "size": entry.size})
                if entry.lfs:
                    sibling["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": 134}
            siblings.append(sibling)
        body = {
            "_id": hashlib.md5(repo.encode()).hexdigest()[:24],
            "id": repo,
            "modelId": repo,
            "author": repo.split("/")[0] if "/" in repo else None,
            "sha": found.sha,
            "private": False,
            "gated": False,
            "disabled": False,
            "tags": [],
            "siblings": siblings,
        }
        self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)

    # ----- responses -------------------------------------------------------------------------

    def _error(self, status: int, code: str, message: str, head: bool, extra: dict | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        headers = {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message}
        self._send(status, body, {**headers, **(extra or {})}, head)

    def _send(self, status: int, body: bytes, headers: dict, head: bool) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _body(self, entry: HubFile, headers: dict, head: bool, lfs: bool = False) -> None:
        size, start = entry.size, 0
        requested = self.headers.get("Range")
        status = 200
        if requested and requested.startswith("bytes=") and not head:
            first, _, last = requested[len("bytes=") :].partition("-")
            start = int(first or 0)
            end = int(last) + 1 if last else size
            if start >= size:
                return self._send(416, b"", {"Content-Range": f"bytes */{size}"}, head)
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end - 1}/{size}"}
        else:
            end = size
        self.send_response(status)
        for key, value in {**headers, "Content-Type": "application/octet-stream"}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        if head:
            return
        drop = self.hub.drops.get(entry.sha256) if lfs or entry.lfs else None
        cut = None
        if drop is not None and drop.times > 0:
            drop.times -= 1
            cut = start + drop.after
        position = start
        limit = end if cut is None else min(end, cut)
        chunk = CHUNK if not self.hub.bytes_per_second else 4096  # small pieces make a slow link visible
        while position < limit:
            stop = min(limit, position + chunk)
            self.wfile.write(entry.read(position, stop))
            if self.hub.bytes_per_second:
                time.sleep((stop - position) / self.hub.bytes_per_second)
            position = stop
        if cut is not None and position < end:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # the client sees the connection die mid-body


def resolve_url(base: str, repo: str, name: str, revision: str = "main") -> str:
    """The URL huggingface_hub asks for a file (hf_hub_url's shape), for tests that check the log."""
    return f"{base}/{repo}/resolve/{quote(revision, safe='')}/{name}"
