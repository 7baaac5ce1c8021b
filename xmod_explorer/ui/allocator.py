"""Keep a long-running server's resident memory flat under concurrent users (glibc only).

Freed request tensors stay cached by glibc's malloc: in one arena per thread by default (up to 8
per core), and at the top of each heap until it is trimmed. Under thirty concurrent clients the
app's resident memory climbed with every burst (+20 % over 1,200 requests on xmod-mini; +33 %
calling the engine from 30 threads). Two arenas and a trim after each request keep it flat; a trim
costs about 0.5 ms against 19 ms for the quickest request. On other C libraries both are no-ops.
"""

from __future__ import annotations

import ctypes

M_ARENA_MAX = -8  # mallopt parameter number in glibc's malloc.h

try:
    _libc = ctypes.CDLL("libc.so.6")
    _mallopt, _malloc_trim = _libc.mallopt, _libc.malloc_trim
except (OSError, AttributeError):
    _mallopt = _malloc_trim = None


def limit_arenas(arenas: int = 2) -> None:
    """Cap malloc arenas; call before the server's worker threads start."""
    if _mallopt is not None:
        _mallopt(M_ARENA_MAX, arenas)


def release_freed_memory() -> None:
    """Hand memory that requests freed back to the operating system."""
    if _malloc_trim is not None:
        _malloc_trim(0)
