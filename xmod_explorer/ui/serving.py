"""How the web app runs heavy work: every request a job with a deadline, one memory budget for the whole
server, a Stop that stops, and work stopped when its client goes away.

Each heavy handler (UI or API) is wrapped by ``Serving.heavy``: Gradio sees an async function, which runs the
handler in a worker thread inside ``jobs.running(job)``. The engine and the lab then wait for the budget before
each forward pass and check the job between steps. When Gradio cancels the task (a Stop button, or an API
client's cancel), or the request guard sees the client's event stream close, the job is told to stop, and
its thread stops at the next step and lets go of its memory. Gradio's own concurrency limits no longer decide
how much runs at once: the budget does, for all endpoints together.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import time
import typing
import uuid
import weakref
from collections.abc import Callable

import anyio
import anyio.to_thread
import gradio as gr

from xmod_explorer import jobs
from xmod_explorer.budget import Budget, describe_bytes
from xmod_explorer.jobs import Job
from xmod_explorer.limits import Limits
from xmod_explorer.ui.common import ui_errors
from xmod_explorer.ui.sessions import SessionStore

log = logging.getLogger(__name__)

STOPPED = "The request was stopped (Stop was pressed, or the client cancelled it)."
GONE = "The request was stopped because its client went away (the tab was closed or the connection dropped)."
WORKER_THREADS = 64  # threads running or waiting for the budget; more requests wait in the event loop


class Serving:
    """The server's budget, the jobs running per client, and the sessions' private objects."""

    def __init__(self, limits: Limits, budget: Budget):
        self.limits = limits
        self.budget = budget
        self.sessions: SessionStore = SessionStore(limits.session_idle_seconds)
        self.live_pages: set[str] = set()  # session hashes whose page holds its heartbeat stream open
        self._jobs: dict[str, set[Job]] = {}
        self._lock = threading.Lock()
        self._limiter: anyio.CapacityLimiter | None = None
        self._upkeep: list[Callable[[], None]] = []
        self._loop_upkeep: list[Callable[[], None]] = []
        self._loop_upkeep_at = 0.0

    # ----- jobs per client ------------------------------------------------------------------------------

    def start(self, client: str, *, progress=None, what: str = "This request") -> Job:
        """A new job for client (a session hash), or gr.Error if the client has too many already."""
        with self._lock:
            running = self._jobs.setdefault(client, set())
            if len(running) >= self.limits.max_jobs_per_session:
                raise gr.Error(
                    f"You already have {len(running)} requests running or waiting here, the most one visitor may "
                    "have. Wait for one to finish, or press Stop.",
                    print_exception=False,
                )
            job = Job(seconds=self.limits.max_job_seconds, budget=self.budget, progress=progress, what=what)
            running.add(job)
            return job

    def finish(self, client: str, job: Job) -> None:
        with self._lock:
            running = self._jobs.get(client)
            if running is not None:
                running.discard(job)
                if not running:
                    del self._jobs[client]
        job.finished.set()

    def client_gone(self, client: str, reason: str = GONE) -> int:
        """Stop every job of client at its next step; returns how many were told."""
        with self._lock:
            running = list(self._jobs.get(client, ()))
        for job in running:
            job.stop(reason)
        if running:
            log.info("client %s went away; stopping its %d request(s)", client[:8], len(running))
        return len(running)

    def running_jobs(self) -> int:
        with self._lock:
            return sum(len(running) for running in self._jobs.values())

    # ----- the wrapper --------------------------------------------------------------------------------------

    def heavy(self, fn: Callable, *, escape_html: bool = True, progress: bool = True) -> Callable:
        """fn as an async Gradio handler that runs as one job (see the module's docstring); errors become gr.Error
        as with ui_errors. fn keeps its name, docstring and inputs; progress and gr.Request parameters of its own
        still work. progress=False for gr.api endpoints, which take no gr.Progress."""
        signature = inspect.signature(fn)
        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # annotations that do not resolve: Gradio then sees none, as it would for fn
            hints = {}
        progress_name = next(
            (p.name for p in signature.parameters.values() if isinstance(p.default, gr.Progress)), None
        )
        request_name = next((name for name, hint in hints.items() if hint in (gr.Request, gr.Request | None)), None)
        inputs = [p for p in signature.parameters.values() if p.name not in (progress_name, request_name)]
        safe = ui_errors(fn, escape_html=escape_html)

        @functools.wraps(fn)
        async def wrapper(*args):
            if progress:
                *values, tracker, request = args
            else:
                *values, request = args
                tracker = None
            client = getattr(request, "session_hash", None) or uuid.uuid4().hex
            job = self.start(client, progress=tracker if isinstance(tracker, gr.Progress) else None)
            kwargs = {progress_name: tracker} if progress_name else {}
            if request_name:
                kwargs[request_name] = request
            state = {"started": False, "cancelled": False}
            state_lock = threading.Lock()

            def work():
                with state_lock:
                    if state["cancelled"]:
                        return None
                    state["started"] = True
                try:
                    with jobs.running(job):
                        return safe(*values, **kwargs)
                finally:
                    self.finish(client, job)

            try:
                return await anyio.to_thread.run_sync(work, abandon_on_cancel=True, limiter=self.limiter())
            except (asyncio.CancelledError, anyio.get_cancelled_exc_class()):
                job.stop(STOPPED)  # the thread stops at its next step; Gradio is told at once
                with state_lock:
                    state["cancelled"] = True
                    started = state["started"]
                if not started:
                    self.finish(client, job)
                raise

        tracking = [inspect.Parameter("job_progress", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=gr.Progress())]
        wrapper.__signature__ = signature.replace(
            parameters=[
                *inputs,
                *(tracking if progress else []),
                inspect.Parameter(
                    "job_request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request
                ),
            ]
        )
        wrapper.__annotations__ = {
            **{name: hint for name, hint in hints.items() if name not in (progress_name, request_name)},
            "job_request": gr.Request,
        }
        return wrapper

    def limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:  # made inside the event loop, on first use
            self._limiter = anyio.CapacityLimiter(WORKER_THREADS)
        return self._limiter

    # ----- what is kept, and for how long --------------------------------------------------------------

    def add_upkeep(self, task: Callable[[], None], *, in_loop: bool = False) -> None:
        """Run task every few seconds (it must be quick): from the janitor thread, or with in_loop=True from
        the event loop's thread, between requests (for structures only the loop may touch)."""
        (self._loop_upkeep if in_loop else self._upkeep).append(task)

    def loop_upkeep(self, every: float = 2.0) -> None:
        """Called by the request guard for each request, in the event loop: runs the in-loop tasks at most
        once every `every` seconds."""
        now = time.monotonic()
        if now - self._loop_upkeep_at < every:
            return
        self._loop_upkeep_at = now
        for task in list(self._loop_upkeep):
            try:
                task()
            except Exception:  # a failed tidy-up must never fail a request
                log.exception("upkeep task %s failed", getattr(task, "__name__", task))

    def upkeep(self) -> None:
        self.sessions.expire()
        for task in list(self._upkeep):
            try:
                task()
            except Exception:  # the janitor must keep going whatever one task does
                log.exception("upkeep task %s failed", getattr(task, "__name__", task))

    def describe(self) -> str:
        status = self.budget.status()
        return (
            f"memory budget {describe_bytes(status['capacity'])} for requests ({describe_bytes(status['in_use'])} in "
            f"use, {status['running']} passes running, {status['waiting']} waiting); deadline "
            f"{self.limits.max_job_seconds:.0f} s per request; sessions kept {self.limits.session_idle_seconds:.0f} s "
            "after their last use"
        )


def start_janitor(serving: Serving, interval: float | None = None) -> threading.Thread:
    """A daemon thread running serving.upkeep() every interval seconds (default: 10, or a quarter of the
    session lifetime if that is shorter), for as long as serving exists."""
    interval = interval or min(10.0, serving.limits.session_idle_seconds / 4)
    reference = weakref.ref(serving)

    def loop() -> None:
        while True:
            time.sleep(interval)
            current = reference()
            if current is None:
                return
            current.upkeep()
            del current

    thread = threading.Thread(target=loop, name="xmod-explorer-janitor", daemon=True)
    thread.start()
    return thread
