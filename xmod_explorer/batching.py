"""Serve many users' fill-mask requests as one stream of forward passes.

A room of people each filling masks with a few adapters on a short sentence sends many small
requests (5 rows of 15 tokens), each too small to use the CPU's matrix units well. ``MaskBatcher``
sits in front of the engine: callers from any thread call ``predict_masks``, which checks the
request on the caller's thread (a bad one fails alone, with its own message) and blocks; a worker
thread takes the small requests waiting (after a short gathering window when it was idle) and runs
them through ``Explorer.predict_masks_together``: one forward pass, rows sorted by language,
texts of different lengths packed (no work on padding), results split back. Each answer equals
what ``Explorer.predict_masks`` gives for that request alone. If the shared pass itself fails, each
request of it runs again alone, so one request's failure stays its own.

Only small requests share passes: one whose rows x tokens exceed ``SHARE_LIMIT`` (16 adapters on a
long sentence) runs alone on its caller's thread, as it would with batching off, so the server's
memory budget orders it among every other pass (least work first) and short fills never wait in the
batcher's line behind it or share its pass; a shared pass holds at most ``PASS_LIMIT`` padded row
tokens, so it stays about as short as the requests in it. Up to ``workers`` passes run at once (a server
passes its budget's places: one per core), each worker taking what waits when it is free: while one pass runs, or
waits for the budget behind another endpoint's long pass, the next short fills do not wait for it to end (a single
worker made them, and short fills waited longer than with no batching at all).
A caller that stops waiting (its ``check`` raises: Stop pressed, client gone, deadline) is taken
out of the line if its pass has not started.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

from xmod_explorer.engine import Explorer, MaskRequest
from xmod_explorer.errors import ExplorerError
from xmod_explorer.masks import MaskPrediction

log = logging.getLogger(__name__)

# How long an idle worker waits for company before running a lone request: long enough for requests
# that arrive together to share a pass, short against the 20 ms or more of the quickest pass.
WINDOW_SECONDS = 0.004
# The most (text, language) rows one shared pass may hold; more wait for the next pass.
MAX_ROWS = 256
# A request with more (adapter rows x tokens) than this runs alone on its caller's thread: 5 adapters on a
# 32-token sentence share passes; 16 adapters on a 15-token one do not.
SHARE_LIMIT = 160
# The most padded (rows x tokens) of one shared pass, about five workshop requests: every request of a pass waits
# for all of it, and passes of 5 requests already give most of what passes of 10 or 20 give on the engine
# (`python -m benchmarks.workshop --engine`); with 1,536, short fills in a public mix waited seconds for passes
# of some 25 requests.
PASS_LIMIT = 384
# Passes at once by default (a server passes its budget's places instead).
WORKERS = 1


def work(request: MaskRequest) -> int:
    """A checked request's size: its (adapter rows x tokens)."""
    return len(request.languages) * len(request.ids)


@dataclass
class _Waiting:
    explorer: Explorer
    request: MaskRequest
    future: Future = field(default_factory=Future)
    since: float = field(default_factory=time.monotonic)

    @property
    def rows(self) -> int:
        return len(self.request.languages)


class MaskBatcher:
    """Fill-mask requests from many threads, run together in shared forward passes (see the module docstring).

    explorer: the Explorer to use, or a callable returning the current one (a server that can swap its
    model); requests are only ever batched with others for the same Explorer. run: how a shared pass
    runs (default: Explorer.predict_masks_together), and alone: how one request runs by itself (default:
    Explorer.run_mask_request, what predict_masks runs after its checks); a server passes ones that wait
    for its memory budget first. workers: how many passes may run at once.
    """

    def __init__(
        self,
        explorer: Explorer | Callable[[], Explorer],
        *,
        window: float = WINDOW_SECONDS,
        max_rows: int = MAX_ROWS,
        share_limit: int = SHARE_LIMIT,
        pass_limit: int = PASS_LIMIT,
        workers: int = WORKERS,
        run: Callable[[Explorer, list[MaskRequest]], list[MaskPrediction]] | None = None,
        alone: Callable[[Explorer, MaskRequest], MaskPrediction] | None = None,
    ):
        self._source = explorer if callable(explorer) and not isinstance(explorer, Explorer) else lambda: explorer
        self.window = window
        self.max_rows = max_rows
        self.share_limit = share_limit
        self.pass_limit = pass_limit
        self.workers = max(1, int(workers))
        self._run = run or (lambda explorer, requests: explorer.predict_masks_together(requests))
        self._alone = alone or (lambda explorer, request: explorer.run_mask_request(request))
        self._waiting: list[_Waiting] = []
        self._cond = threading.Condition()
        self._workers: set[threading.Thread] = set()
        self._idle = 0  # workers waiting for requests
        self.passes = 0  # shared passes run, and requests answered in them (for tests and the benchmark)
        self.answered = 0
        self.ran_alone = 0  # requests too large to share, run on their callers' threads

    def predict_masks(
        self,
        text: str,
        languages: Sequence[str] | str,
        top_k: int = 5,
        *,
        check: Callable[[], None] | None = None,
        poll: float = 0.1,
    ) -> MaskPrediction:
        """Explorer.predict_masks's answer for this request, computed in a pass shared with whoever else is
        waiting, or alone on this thread if it is large (more than share_limit rows x tokens) or the model is
        int8. check() is called every `poll` seconds while the request waits and may raise to give up."""
        explorer = self._source()
        request = explorer.check_mask_request(text, languages, top_k)  # a bad request fails here, alone
        if explorer.loaded.quantization or work(request) > self.share_limit:
            # int8 scales each pass's activations by its largest value, so an answer would depend on the other
            # requests of its pass; a large request would make the short ones of its pass wait for it.
            # It runs in the caller's own job, as predict_masks does with batching off.
            self.ran_alone += 1
            return explorer.run_mask_request(request)
        item = _Waiting(explorer, request)
        with self._cond:
            self._waiting.append(item)
            self._start_worker()
            self._cond.notify_all()
        while True:
            try:
                return item.future.result(timeout=poll)
            except FutureTimeout:
                pass
            if check is not None:
                try:
                    check()
                except BaseException:
                    with self._cond:
                        if item in self._waiting:
                            self._waiting.remove(item)
                    item.future.cancel()
                    raise

    def pending(self) -> int:
        """Requests waiting for a pass now."""
        with self._cond:
            return len(self._waiting)

    # ----- the worker ---------------------------------------------------------------------------------

    def _start_worker(self) -> None:
        """Under the lock: start a worker if none is free to take what waits and fewer than `workers` run."""
        if self._idle == 0 and len(self._workers) < self.workers:
            worker = threading.Thread(target=self._serve, name="xmod-explorer-mask-batcher", daemon=True)
            self._workers.add(worker)
            worker.start()

    def _take(self) -> list[_Waiting]:
        """Wait for requests; return the next pass's: the oldest request's Explorer, up to max_rows rows and
        pass_limit padded row tokens, oldest first; [] after long idleness (the worker then ends)."""
        with self._cond:
            while True:
                while not self._waiting:
                    self._idle += 1
                    try:
                        if not self._cond.wait(timeout=30):
                            return []  # idle for long: _serve lets the thread end; the next request starts one
                    finally:
                        self._idle -= 1
                # Gather for a moment after the oldest request arrived (no wait for requests that queued during
                # the previous pass: they are older than the window already).
                until = self._waiting[0].since + self.window
                while self._waiting and time.monotonic() < until and sum(i.rows for i in self._waiting) < self.max_rows:
                    self._cond.wait(max(0.0, until - time.monotonic()))
                if self._waiting:
                    break
                # Everyone waiting gave up during the window, or another worker took them: wait again.
            explorer = self._waiting[0].explorer
            chosen, rows, longest = [], 0, 0
            for item in list(self._waiting):
                if item.explorer is not explorer:
                    continue
                width = max(longest, len(item.request.ids))
                if chosen and (rows + item.rows > self.max_rows or (rows + item.rows) * width > self.pass_limit):
                    break
                chosen.append(item)
                rows, longest = rows + item.rows, width
                self._waiting.remove(item)
            return chosen

    def _serve(self) -> None:
        while True:
            chosen = self._take()
            if not chosen:
                with self._cond:
                    if not self._waiting:
                        # Decided under the lock a request takes to join the line, so a request that arrives
                        # now sees one worker fewer and starts one if needed (a thread still ending counts as none).
                        self._workers.discard(threading.current_thread())
                        return
                continue
            try:
                self._answer(chosen)
            except BaseException as exc:  # the worker must outlive anything one pass does
                log.exception("mask batcher pass failed")
                for item in chosen:
                    if not item.future.done():
                        item.future.set_exception(exc)

    def _answer(self, chosen: list[_Waiting]) -> None:
        explorer = chosen[0].explorer
        # Requests whose callers gave up are dropped; the rest were checked on their callers' threads.
        ready = [(item, item.request) for item in chosen if item.future.set_running_or_notify_cancel()]
        if not ready:
            return
        if len(ready) == 1:  # a request with no company runs predict_masks's own path
            self._each_alone(explorer, ready)
            return
        try:
            results = self._run(explorer, [request for _, request in ready])
        except Exception:
            # The shared pass failed: run each request alone, so a failure stays with the request that causes it.
            log.warning("a shared pass of %d requests failed; running them one by one", len(ready), exc_info=True)
            self._each_alone(explorer, ready)
            return
        if len(results) != len(ready):
            raise ExplorerError(f"A shared pass returned {len(results)} results for {len(ready)} requests.")
        for (item, _), result in zip(ready, results):
            item.future.set_result(result)
        self.passes += 1
        self.answered += len(ready)

    def _each_alone(self, explorer: Explorer, ready: list[tuple[_Waiting, MaskRequest]]) -> None:
        for item, request in ready:
            try:
                item.future.set_result(self._alone(explorer, request))
            except Exception as exc:
                item.future.set_exception(exc)
            self.passes += 1
            self.answered += 1
