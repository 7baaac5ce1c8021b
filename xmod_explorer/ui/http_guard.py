"""An ASGI middleware in front of Gradio: bodies refused before they are read, uploads capped per request,
the serving layer told when a client's event stream goes away, and a hook for tidy-ups in the event loop.

Gradio 6.17 parses a request's whole JSON body before any cap is checked, and keeps it (a 15 MB body for
compare_sentences added 360 MB that were never freed); its upload route caps each file but takes up to
1,000 files in one request. Here a declared Content-Length over the cap gets 413 at once, without reading a
byte; a body without one is counted as it streams and cut off at the cap; a multipart upload is also cut off
at its (max_upload_files + 1)-th part. The middleware is mounted through ``launch(app_kwargs=...)``, so it
sits inside Gradio's own app, before routing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from urllib.parse import parse_qs

from xmod_explorer.budget import describe_bytes
from xmod_explorer.limits import Limits

log = logging.getLogger(__name__)

Send = Callable
Receive = Callable
MULTIPART_SLACK = 64 * 1024  # part headers and boundaries around the files themselves
EVENT_STREAM = re.compile(r"/queue/data/?$")
CALL_STREAM = re.compile(r"/call/(?:v2/)?[^/]+/([^/]+)/?$")
HEARTBEAT = re.compile(r"/heartbeat/([^/]+)/?$")
UPLOAD = re.compile(r"/upload/?$")


class RequestGuard:
    """ASGI middleware: limits from the app's Limits; on_client_gone(key) when a client's event stream closes
    early; pages (a set) holds the session hashes whose page keeps its heartbeat stream open."""

    def __init__(
        self,
        app,
        *,
        limits: Limits,
        on_client_gone: Callable[[str], object] | None = None,
        pages: set[str] | None = None,
        on_request: Callable[[], object] | None = None,
    ):
        self.app = app
        self.limits = limits
        self.on_client_gone = on_client_gone
        self.pages = pages if pages is not None else set()
        self.on_request = on_request

    async def __call__(self, scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.on_request is not None:
            self.on_request()  # quick tidy-ups that must run in the event loop's thread
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if method in ("POST", "PUT", "PATCH"):
            await self._capped(scope, receive, send, upload=bool(UPLOAD.search(path)))
            return
        key = self._stream_key(scope, path)
        if key is None:
            await self.app(scope, receive, send)
            return
        await self._watched(scope, receive, send, key, page=bool(HEARTBEAT.search(path)))

    # ----- bodies -------------------------------------------------------------------------------------------

    def _cap(self, upload: bool) -> int:
        if upload:
            return self.limits.max_upload_bytes + MULTIPART_SLACK
        return self.limits.max_request_bytes

    async def _capped(self, scope, receive: Receive, send: Send, *, upload: bool) -> None:
        cap = self._cap(upload)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").strip()
        if declared.isdigit() and int(declared) > cap:
            await self._refuse(send, int(declared), cap, upload)
            return
        boundary = _boundary(headers.get(b"content-type", b"")) if upload else None
        parts = _PartCounter(boundary) if boundary else None
        seen = 0
        refused = False

        async def counted() -> dict:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                body = message.get("body", b"")
                seen += len(body)
                too_many = parts is not None and parts.feed(body) > self.limits.max_upload_files
                if seen > cap or too_many:
                    refused = True
                    if too_many:
                        await _respond(send, 413, _files_message(self.limits))
                    else:
                        await self._refuse(send, seen, cap, upload, streamed=True)
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: dict) -> None:
            if not refused:  # once refused, whatever the app still says is dropped
                await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not refused:
                raise

    async def _refuse(self, send: Send, size: int, cap: int, upload: bool, *, streamed: bool = False) -> None:
        shown = f"more than {describe_bytes(cap)}" if streamed else describe_bytes(size)
        if upload:
            message = (
                f"The upload is {shown}; this server accepts files of at most "
                f"{describe_bytes(self.limits.max_upload_bytes)}. Upload a smaller file."
            )
        else:
            message = (
                f"The request is {shown}; this server accepts at most {describe_bytes(cap)} per request. Send less "
                "text, fewer sentences or fewer languages at once."
            )
        log.info("refused a request body of %s bytes (cap %d) with 413", size, cap)
        await _respond(send, 413, message)

    # ----- streams whose end means the client is gone ----------------------------------------------------

    @staticmethod
    def _stream_key(scope, path: str) -> str | None:
        if EVENT_STREAM.search(path):
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            return (query.get("session_hash") or [None])[0]
        for pattern in (CALL_STREAM, HEARTBEAT):
            match = pattern.search(path)
            if match:
                return match.group(1)
        return None

    async def _watched(self, scope, receive: Receive, send: Send, key: str, *, page: bool) -> None:
        finished = False

        async def watch() -> None:
            # A second reader of receive() beside the app's own: both see http.disconnect when the client goes.
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    if not finished and self.on_client_gone is not None:
                        self.on_client_gone(key)
                    return

        if page:
            self.pages.add(key)
        watcher = asyncio.ensure_future(watch())
        try:
            await self.app(scope, receive, send)
        except OSError:
            if self.on_client_gone is not None:  # a write to a closed connection
                self.on_client_gone(key)
            raise
        finally:
            finished = True
            watcher.cancel()
            if page:
                self.pages.discard(key)


def _boundary(content_type: bytes) -> bytes | None:
    match = re.search(rb'boundary="?([^";]+)"?', content_type)
    return match.group(1) if match else None


class _PartCounter:
    """Counts the parts of a multipart body as it streams, across chunk borders."""

    def __init__(self, boundary: bytes):
        self.marker = b"--" + boundary
        self.tail = b""
        self.markers = 0

    def feed(self, chunk: bytes) -> int:
        data = self.tail + chunk
        self.markers += data.count(self.marker)
        # Keep the end, in case a marker straddles two chunks, but not a whole marker already counted.
        keep = len(self.marker) - 1
        self.tail = data[-keep:] if keep > 0 else b""  # too short to hold a marker already counted
        return max(self.markers - 1, 0)  # the last marker closes the body: parts = markers - 1 once complete


def _files_message(limits: Limits) -> str:
    return (
        f"This upload holds more than {limits.max_upload_files} files; this server accepts at most "
        f"{limits.max_upload_files} per request. Upload one file at a time."
    )


async def _respond(send: Send, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
