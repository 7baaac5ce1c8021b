"""Deadlines, cancellation, progress and the memory budget for long work, without threading them through
every call.

A server runs each request inside ``running(job)``. The engine's and the lab's loops then call
``checkpoint()`` between steps (it raises ``JobStopped`` once the job's client has gone, its Stop button was
pressed or its deadline passed, and reports progress) and wrap each forward pass in ``admitted(cost)``
(it waits for the job's Budget, or refuses a pass that could never fit or finish in time). Outside a job
both do nothing, so notebooks and the command line run as before.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Callable, Iterator

from xmod_explorer.budget import Budget, Cost, Reservation
from xmod_explorer.errors import ExplorerError
from xmod_explorer.machine import pass_threads

Progress = Callable[..., object]  # called as progress(fraction, desc="..."); a gr.Progress fits


class JobStopped(ExplorerError):
    """The job was stopped (client gone, Stop pressed, deadline passed); the message says which."""


class Job:
    """One request's deadline, stop flag, progress callback and budget; shared with the thread running it."""

    def __init__(
        self,
        *,
        seconds: float | None = None,
        budget: Budget | None = None,
        progress: Progress | None = None,
        what: str = "This request",
        serves: int = 1,
    ):
        self.seconds = seconds
        self.serves = serves  # requests its passes answer (a shared pass: several users'), for the budget's order
        self.budget = budget
        self.progress = progress
        self.what = what
        self.started = time.monotonic()
        self.deadline = None if seconds is None else self.started + seconds
        self._stopped = threading.Event()
        self._reason = ""
        self.reservation: Reservation | None = None
        self.finished = threading.Event()  # set by whoever ran the job once it has let go of everything

    def stop(self, reason: str) -> None:
        """Ask the job to stop at its next checkpoint; the first reason given is the one reported."""
        if not self._stopped.is_set():
            self._reason = reason
            self._stopped.set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def check(self) -> None:
        """Raise JobStopped if the job should stop now."""
        left = self.time_left()
        if left is not None and left <= 0:
            self.stop(
                f"{self.what} was stopped after {self.seconds:.0f} s, the most one request may take here. Use "
                "fewer languages, rows or shorter texts."
            )
        if self._stopped.is_set():
            raise JobStopped(self._reason)


_current: contextvars.ContextVar[Job | None] = contextvars.ContextVar("xmod_explorer_job", default=None)


def current() -> Job | None:
    """The job this thread (or task) is running, if any."""
    return _current.get()


@contextlib.contextmanager
def running(job: Job) -> Iterator[Job]:
    """Run the body as job: checkpoints and admissions inside it use the job's limits."""
    token = _current.set(job)
    try:
        yield job
    finally:
        _current.reset(token)


def checkpoint(done: int | None = None, total: int | None = None, text: str | None = None) -> None:
    """Between two steps of long work: stop here if the job must stop, and report progress."""
    job = current()
    if job is None:
        return
    job.check()
    if job.progress is not None and text is not None:
        fraction = 0.0 if not total else min(max((done or 0) / total, 0.0), 1.0)
        job.progress(fraction, desc=text)


def feasible(cost: Cost) -> None:
    """Refuse now, before any of it runs, work that could never fit the budget or finish before the deadline."""
    job = current()
    if job is None or job.budget is None:
        return
    job.budget.refuse_if_it_could_never_fit(cost)
    left = job.time_left()
    seconds = job.budget.seconds(cost)
    if left is not None and seconds is not None and seconds > left:
        raise ExplorerError(
            f"{cost.what} would take about {seconds:.0f} s on this server even with the "
            f"machine to itself, and {job.seconds:.0f} s is the most one request may take here. Use fewer "
            "languages, rows or shorter texts."
        )


@contextlib.contextmanager
def admitted(cost: Cost, *, hold: bool = False) -> Iterator[Reservation | None]:
    """Run the body once the job's budget has room for cost (at once outside a job or without a budget).

    Nested passes inside an admitted one are already paid for. With hold=True the reservation is handed to
    the caller to keep (a private copy of the model) and is not released when the body ends.
    """
    job = current()
    if job is None or job.budget is None or (job.reservation is not None and not hold):
        yield None
        return
    job.check()
    if not hold:
        feasible(cost)
    told = []

    def check() -> None:  # called only while the pass waits for its turn
        job.check()
        if job.progress is not None and not told:
            told.append(True)
            job.progress(0.0, desc="Waiting: the server is busy with other requests")

    reservation = job.budget.reserve(cost, check=check, hold=hold, serves=job.serves)
    if hold:
        yield reservation
        return
    job.reservation = reservation
    start = time.monotonic()
    try:
        with pass_threads(reservation.threads):  # its share of the cores, beside the passes already running
            yield reservation
        job.budget.observe(cost, time.monotonic() - start)
    finally:
        job.reservation = None
        reservation.release()
