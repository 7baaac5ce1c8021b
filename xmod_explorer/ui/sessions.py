"""What a browser session owns on the server (trained heads, a fine-tuned copy), behind unguessable handles.

Gradio keys its own per-session state by a session hash that the browser makes up and sends in the clear, so
another client that learns it could act as that session. Here the server makes the handle
(``secrets.token_urlsafe``), the page keeps it in a hidden field and sends it with each request, and
nothing else leads to the object. Unused entries expire: what they hold (a fine-tuned copy of the model is
gigabytes on xmod-base) is freed, and the budget's hold on it ends with it.
"""

from __future__ import annotations

import gc
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class SessionStore(Generic[T]):
    """Objects by server-made handle, forgotten after idle_seconds without use."""

    def __init__(self, idle_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._items: dict[str, tuple[T, float]] = {}
        self._owners: dict[str, set[str]] = {}  # page (session hash) -> its handles, only to free them on close
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, handle: object) -> T | None:
        """The object behind handle (and it counts as used now), or None if there is none or it expired."""
        if not isinstance(handle, str) or not handle:
            return None
        with self._lock:
            entry = self._items.get(handle)
            if entry is None:
                return None
            self._items[handle] = (entry[0], self._clock())
            return entry[0]

    def put(self, item: T, handle: object = None, *, owner: str | None = None) -> str:
        """Store item under handle if that is a live handle of this store, else under a new one; returns it.

        Whatever the handle held before is let go here, so a session never keeps two fine-tuned copies.
        owner (the page's session hash) is remembered only so that drop_owner() can free the entry when the
        page closes; it never leads to the item.
        """
        with self._lock:
            if not (isinstance(handle, str) and handle in self._items):
                handle = secrets.token_urlsafe(24)
            self._items[handle] = (item, self._clock())
            if owner:
                self._owners.setdefault(owner, set()).add(handle)
            return handle

    def drop(self, handle: object) -> None:
        """Forget handle's entry now (and collect its memory)."""
        with self._lock:
            gone = self._items.pop(handle, None) if isinstance(handle, str) else None
        if gone is not None:
            del gone
            gc.collect()

    def drop_owner(self, owner: str) -> int:
        """Forget every entry stored for owner (its page was closed); returns how many went."""
        with self._lock:
            handles = self._owners.pop(owner, set())
            gone = [handle for handle in handles if self._items.pop(handle, None) is not None]
        if gone:
            gc.collect()
        return len(gone)

    def expire(self) -> int:
        """Forget entries unused for idle_seconds; returns how many went (their memory is collected)."""
        now = self._clock()
        with self._lock:
            old = [handle for handle, (_, used) in self._items.items() if now - used > self.idle_seconds]
            for handle in old:
                del self._items[handle]
            for owner, handles in list(self._owners.items()):
                handles.intersection_update(self._items)
                if not handles:
                    del self._owners[owner]
        if old:
            gc.collect()  # a model copy can sit in reference cycles; free it now rather than some time later
            log.info("%d idle session(s) expired; their heads and fine-tuned copies are freed", len(old))
        return len(old)
