"""The server under hostile or careless clients: every request a job with a deadline, one memory budget, Stop
and disconnects that stop work, sessions that expire. The real app on a real port, driven by gradio_client
and by Gradio's own HTTP protocol; a model as wide as xmod-base (2 layers) makes long jobs long for real."""

from __future__ import annotations

import dataclasses
import gc
import threading
import time
import uuid
import weakref

import gradio as gr
import httpx
import pytest
from gradio_client.exceptions import AppError
from helpers import LANGUAGES, event_index, join, messages, serve

from xmod_explorer import Explorer
from xmod_explorer.budget import Budget
from xmod_explorer.settings import load_settings
from xmod_explorer.ui.layout import serving_of

pytestmark = pytest.mark.slow  # real servers, and jobs that run for tens of seconds when nothing stops them


def wait_for(condition, limit: float, step: float = 0.05) -> float:
    """Seconds until condition() held; fails after limit seconds."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > limit:
            raise AssertionError(f"not within {limit} s")
        time.sleep(step)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def long_pairs(tokenizer):
    """400 sentences of about 450 tokens: some 45 batches, a minute or more on two cores."""
    return [[LANGUAGES[i % len(LANGUAGES)], text_of(tokenizer, 450)] for i in range(400)]


def text_of(tokenizer, tokens: int) -> str:
    """A text of about this many tokens for the test tokenizer (<s> and </s> included)."""
    word = next(token for token in tokenizer.get_vocab() if token.isalpha() and len(token) > 2)
    per_word = len(tokenizer(f"{word} " * 100)["input_ids"]) / 100
    return f"{word} " * int((tokens - 2) / per_word)


def app(folder, *flags, budget: Budget | None = None, **limits):
    settings = load_settings(["--model", str(folder), *flags])
    settings = dataclasses.replace(settings, limits=dataclasses.replace(settings.limits, **limits))
    explorer = Explorer.from_pretrained(str(folder), limits=settings.limits)
    demo, client = serve(settings, explorer, budget=budget)
    return demo, client, serving_of(demo)


def idle(serving) -> bool:
    status = serving.budget.status()
    return serving.running_jobs() == 0 and status["in_use"] == status["held"] and status["running"] == 0


# ----- Stop, cancel and disconnects ---------------------------------------------------------------------------


def test_a_cancelled_api_job_stops_at_its_next_step_and_frees_its_memory(wide_dir, long_pairs):
    demo, client, serving = app(wide_dir)
    try:
        job = client.submit(long_pairs, api_name="/compare_sentences")
        wait_for(lambda: serving.budget.status()["running"] >= 1, 60)
        time.sleep(1.0)
        job.cancel()
        stopped_in = wait_for(lambda: idle(serving), 60)
        assert stopped_in < 20, f"took {stopped_in:.1f} s to stop"
        # The server keeps serving.
        assert client.predict(api_name="/model_info")["languages"] == LANGUAGES
    finally:
        demo.close()


def test_a_closed_page_stream_stops_the_job_after_showing_progress(wide_dir, long_pairs):
    """The Across-languages tab's event through /queue/join and /queue/data, as the page sends it; the page goes
    away (its event stream closes) after the first progress message."""
    demo, client, serving = app(wide_dir)
    base = client.src.rstrip("/")
    try:
        config = httpx.get(f"{base}/config").json()
        index = event_index(config, "sentences-run")
        table = {"headers": ["language", "text"], "data": long_pairs, "metadata": None}
        session = uuid.uuid4().hex
        join(base, index, [table, 2, False], session)
        progress = None
        with (
            httpx.Client(timeout=120) as http,
            http.stream("GET", f"{base}/gradio_api/queue/data", params={"session_hash": session}) as stream,
        ):
            for message in messages(stream):
                if message.get("msg") == "progress":
                    progress = message["progress_data"][0]["desc"]
                    break
                assert message.get("msg") != "process_completed", message
        assert progress is not None and progress.startswith("Sentences: batch")
        stopped_in = wait_for(lambda: idle(serving), 60)
        assert stopped_in < 20, f"took {stopped_in:.1f} s to stop"
    finally:
        demo.close()


def test_an_api_client_that_disconnects_has_its_job_stopped(wide_dir, long_pairs):
    """The plain HTTP API (/call): the client posts, starts reading the answer, and goes away."""
    demo, client, serving = app(wide_dir)
    base = client.src.rstrip("/")
    try:
        with httpx.Client(timeout=60) as http:
            event = http.post(f"{base}/gradio_api/call/compare_sentences", json={"data": [long_pairs]}).json()
            with http.stream("GET", f"{base}/gradio_api/call/compare_sentences/{event['event_id']}"):
                wait_for(lambda: serving.budget.status()["running"] >= 1, 60)
        stopped_in = wait_for(lambda: idle(serving), 60)
        assert stopped_in < 20, f"took {stopped_in:.1f} s to stop"
    finally:
        demo.close()


# ----- deadlines -------------------------------------------------------------------------------------------------


def test_a_request_past_its_deadline_is_stopped_with_a_message(wide_dir, long_pairs):
    # A budget that believes the machine is very fast, so the work is not refused up front as too long.
    demo, client, serving = app(wide_dir, max_job_seconds=4.0, budget=Budget(2**34, flops_per_second=1e15))
    try:
        start = time.monotonic()
        with pytest.raises(AppError, match="stopped after 4 s, the most one request may take here"):
            client.predict(long_pairs, api_name="/compare_sentences")
        assert time.monotonic() - start < 20
        wait_for(lambda: idle(serving), 20)
        assert client.predict([["en_XX", "Short."], ["de_DE", "Kurz."]], api_name="/compare_sentences")["pairs"]
    finally:
        demo.close()


def test_work_that_could_never_finish_in_time_is_refused_at_once(wide_dir, long_pairs):
    demo, client, _ = app(wide_dir, max_job_seconds=4.0, budget=Budget(2**34, flops_per_second=1e9))
    try:
        start = time.monotonic()
        with pytest.raises(AppError, match=r"would take about \d+ s on this server"):
            client.predict(long_pairs, api_name="/compare_sentences")
        assert time.monotonic() - start < 3
    finally:
        demo.close()


# ----- one budget for every endpoint ----------------------------------------------------------------------------


def test_every_endpoint_draws_from_one_budget(wide_dir, tokenizer):
    text = text_of(tokenizer, 300)
    explorer = Explorer.from_pretrained(str(wide_dir))
    one = explorer.cost(len(LANGUAGES), len(explorer.tokenize(text)), layer_copies=3).bytes
    budget = Budget(int(one * 1.5))  # room for one such comparison at a time, not two
    demo, client, _ = app(wide_dir, budget=budget)
    peak = {"running": 0, "waiting": 0}
    done = threading.Event()

    def watch():
        while not done.is_set():
            status = budget.status()
            peak["running"] = max(peak["running"], status["running"])
            peak["waiting"] = max(peak["waiting"], status["waiting"])
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        other = type(client)(client.src, verbose=False)
        jobs = [c.submit(text, LANGUAGES, None, api_name="/compare_adapters") for c in (client, other, client)]
        results = [job.result(timeout=300) for job in jobs]
        assert all(result["languages"] == LANGUAGES for result in results)
        assert peak == {"running": 1, "waiting": 2} or (peak["running"] == 1 and peak["waiting"] >= 1)
        with pytest.raises(AppError, match="could never run here"):
            client.predict([[LANGUAGES[i % 5], text] for i in range(40)], api_name="/compare_sentences")
    finally:
        done.set()
        watcher.join()
        demo.close()


def test_one_visitor_cannot_fill_the_server(wide_dir, long_pairs):
    demo, client, serving = app(wide_dir, max_jobs_per_session=2)
    try:
        jobs = [client.submit(long_pairs, api_name="/compare_sentences") for _ in range(2)]
        wait_for(lambda: serving.running_jobs() == 2, 60)
        with pytest.raises(AppError, match="You already have 2 requests running or waiting here"):
            client.predict(long_pairs, api_name="/compare_sentences")
        for job in jobs:
            job.cancel()
        wait_for(lambda: idle(serving), 60)
    finally:
        demo.close()


# ----- sessions expire -------------------------------------------------------------------------------------------


def test_idle_lab_sessions_expire_and_their_heads_and_copies_are_freed(base_dir):
    from gradio.state_holder import SessionState

    from xmod_explorer.ui.classify import DEFAULT_SET, SESSION_HEAD

    budget = Budget(2**34)
    demo, _, serving = app(base_dir, "--allow-finetune", budget=budget, session_idle_seconds=2.0)
    try:
        functions = {fn.name: fn for fn in demo.fns.values()}
        session = SessionState(demo)

        def run(name, inputs):
            import asyncio

            return asyncio.run(demo.process_api(functions[name], inputs, state=session))["data"]

        handle = run("train_head", [DEFAULT_SET, None, "en_XX", ["de_DE"], True, ""])[-1]
        state = serving.sessions.get(handle)
        head, copy = weakref.ref(state.head), weakref.ref(state.tuned)
        assert budget.status()["held"] > 0  # the fine-tuned copy holds part of the budget while it lives
        del state
        assert "probe with a fine" in str(run("classify_text", ["Works well.", ["en_XX"], SESSION_HEAD, handle])[0])
        wait_for(lambda: len(serving.sessions) == 0, 10, step=0.2)  # (get() would count as a use)
        gc.collect()
        assert head() is None and copy() is None
        assert budget.status()["held"] == 0 and budget.status()["in_use"] == 0
        with pytest.raises(gr.Error, match="unused for 0 minutes and has expired"):
            run("classify_text", ["Works well.", ["en_XX"], SESSION_HEAD, handle])
    finally:
        demo.close()
