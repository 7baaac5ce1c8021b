"""Let go of what Gradio 6.17.3 keeps after requests end; the one module that reads Gradio's internals.

Measured with a minimal app (one gr.api endpoint, 1,000 requests of a 1.2 MB JSON body, RSS after
malloc_trim): Gradio 6.17.3 grew by 601 MiB and held all 1,000 finished events, each with its request and
parsed body, in ``Queue.event_ids_to_events``. Gradio 6.31.0 (which this project cannot use: it needs
huggingface_hub >= 1.16, which transformers 4.57 refuses) frees the events but still grew by 202 MiB, because
every session's ``SessionState`` keeps the last value of each input component (the whole body again), and
sessions are dropped only when 10,000 have piled up. A raw ``/call`` API request is a session of its own.

Besides, 6.17.3's queue appends every event's asyncio task to a list it never prunes, and a finished task keeps
its context, which holds the gr.Request and so the parsed body: 73 MiB after 200 requests of 360 KB even with
the two leaks above plugged.

So, every few seconds (from the serving layer's janitor, and from the request guard for the task list, which
belongs to the event loop's thread):
- finished tasks are dropped from the queue's list;
- finished events are forgotten once their answer has been read, or 30 s after they finished unread;
- the per-session state of sessions idle for 30 s is dropped, except for pages that still hold their
  heartbeat stream open (an open browser tab), together with the queue's per-session leftovers.
Nothing here runs a request; each step checks that the structure it expects is there and does nothing if not.
"""

from __future__ import annotations

import datetime
import logging
import time

import gradio as gr

log = logging.getLogger(__name__)

DONE = {"success", "failed", "cancelled"}
UNREAD_SECONDS = 30.0  # a finished event whose answer nobody read is dropped after this long
IDLE_SESSION_SECONDS = 30.0  # a session without an open page is dropped after this long unused

_warned: set[str] = set()


def _warn_once(what: str) -> None:
    if what not in _warned:
        _warned.add(what)
        log.warning("gradio %s has no %s; finished requests are not freed early", gr.__version__, what)


def forget_finished_events(demo: gr.Blocks, unread_seconds: float = UNREAD_SECONDS) -> int:
    """Drop finished events (and their analytics) from Gradio's queue; returns how many went."""
    queue = getattr(demo, "_queue", None)
    events = getattr(queue, "event_ids_to_events", None)
    analytics = getattr(queue, "event_analytics", None)
    pending = getattr(queue, "pending_event_ids_session", None)
    if not isinstance(events, dict) or not isinstance(analytics, dict) or not isinstance(pending, dict):
        _warn_once("Queue.event_ids_to_events")
        return 0
    now = time.time()
    dropped = 0
    for event_id, event in list(events.items()):
        record = analytics.get(event_id) or {}
        if record.get("status") not in DONE:
            continue  # queued or running
        waiting = pending.get(getattr(event, "session_hash", None))
        unread = waiting is not None and event_id in waiting
        if unread and now - float(record.get("time") or now) < unread_seconds:
            continue  # its answer is on its way to the client
        events.pop(event_id, None)
        analytics.pop(event_id, None)
        if unread:
            waiting.discard(event_id)
        dropped += 1
    # Events that never reached the queue proper (refused, or cancelled while queued) leave analytics only.
    for event_id in [key for key, record in analytics.items() if key not in events and record.get("status") in DONE]:
        analytics.pop(event_id, None)
    return dropped


def forget_finished_tasks(demo: gr.Blocks) -> int:
    """Drop finished tasks from the list Gradio's queue appends every event's task to (and never prunes): each
    keeps its context, and with it the request and its parsed body. Call it in the event loop's thread."""
    tasks = getattr(getattr(demo, "_queue", None), "_asyncio_tasks", None)
    if not isinstance(tasks, list):
        _warn_once("Queue._asyncio_tasks")
        return 0
    running = [task for task in tasks if not task.done()]
    dropped = len(tasks) - len(running)
    tasks[:] = running
    return dropped


def forget_idle_sessions(demo: gr.Blocks, open_pages: set[str], idle_seconds: float = IDLE_SESSION_SECONDS) -> int:
    """Drop Gradio's state of sessions unused for idle_seconds whose page is not open; returns how many."""
    holder = getattr(demo, "state_holder", None)
    queue = getattr(demo, "_queue", None)
    if holder is None or queue is None:
        return 0  # not launched yet
    sessions, last_used = getattr(holder, "session_data", None), getattr(holder, "time_last_used", None)
    pending = getattr(queue, "pending_event_ids_session", None)
    messages = getattr(queue, "pending_messages_per_session", None)
    if not isinstance(sessions, dict) or not isinstance(last_used, dict) or not isinstance(pending, dict):
        _warn_once("StateHolder.session_data")
        return 0
    now = datetime.datetime.now()
    with holder.lock:
        idle = [
            session
            for session, used in list(last_used.items())
            if (now - used).total_seconds() > idle_seconds and session not in open_pages and not pending.get(session)
        ]
    for session in idle:
        holder.delete_state(session)  # runs gr.State delete callbacks, as Gradio's own expiry would
        with holder.lock:
            sessions.pop(session, None)
            last_used.pop(session, None)
        if session in pending and not pending[session]:
            pending.pop(session, None)
        if isinstance(messages, dict):
            messages.pop(session, None)  # answers nobody came for
    return len(idle)
