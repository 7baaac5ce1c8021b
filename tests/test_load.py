"""Thirty concurrent clients against the app serving the embedded model, on loopback.

Every client's answers must equal what a lone client gets for the same input (no cross-talk
between languages or sessions); no request may fail; memory must not grow by more than 10 %.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import psutil
import pytest
from gradio_client import Client
from helpers import app_process, assert_same_predictions

from xmod_explorer.defaults import mini_available

pytestmark = pytest.mark.slow  # runs the app or the command line as real processes, or hundreds of inputs

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 30
REQUESTS = 10
WARM_UP = REQUESTS


def workload(languages: list[str]) -> list[tuple]:
    """Thirty different requests: varied texts, language sets and top-k, so cross-talk would show."""
    texts = [
        "Click the <mask> to save the document.",
        "Die <mask> zeigt die Werte der Zellen.",
        "Cliquez sur le <mask> pour enregistrer.",
        "Haga clic en el <mask> para guardar.",
        "Нажмите <mask>, чтобы сохранить документ.",
        "<mask>をクリックして保存します。",
    ]
    jobs = []
    for i in range(CLIENTS):
        start = i % len(languages)
        chosen = [languages[(start + j) % len(languages)] for j in range(1 + i % 4)]
        jobs.append((texts[i % len(texts)], chosen, 3 + i % 5))
    return jobs


@pytest.fixture(scope="module")
def server(tmp_path_factory, base_dir):
    model = "mini" if mini_available() else str(base_dir)
    with app_process(["--model", model], tmp_path_factory.mktemp("load")) as served:
        yield served


def test_thirty_concurrent_clients(server):
    url, process = server
    solo = Client(url, verbose=False)
    languages = solo.predict(api_name="/model_info")["languages"]
    jobs = workload(languages)
    expected = [solo.predict(*job, api_name="/predict_masks") for job in jobs]
    clients = [Client(url, verbose=False) for _ in range(CLIENTS)]

    # A concurrent warm-up round first, as long as the measured one: the server's worker threads, their
    # allocator arenas and the sessions come into being over the first bursts. Six rounds of 300 requests on
    # xmod-mini measured 827, 870, 876, 882, 881, 879 MiB: it settles, it does not climb per request. A warm-up
    # of 3 requests per client left part of the settling inside the measured round (+11.3 % in one CI run).
    # Memory is measured from there, so growth means memory kept per request.
    def warm_up(index: int) -> None:
        for request in range(WARM_UP):
            clients[index].predict(*jobs[(index + request) % CLIENTS], api_name="/predict_masks")

    warm = [threading.Thread(target=warm_up, args=(i,)) for i in range(CLIENTS)]
    for thread in warm:
        thread.start()
    for thread in warm:
        thread.join(timeout=300)
    rss_before = psutil.Process(process.pid).memory_info().rss

    latencies: list[float] = []
    failures: list[str] = []
    mismatches: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(CLIENTS)

    def run(index: int) -> None:
        barrier.wait()
        for request in range(REQUESTS):
            job = jobs[(index + request) % CLIENTS]
            start = time.perf_counter()
            try:
                got = clients[index].predict(*job, api_name="/predict_masks")
            except Exception as exc:  # every failure is collected and reported below
                with lock:
                    failures.append(f"client {index} request {request}: {exc!r}")
                continue
            elapsed = time.perf_counter() - start
            try:
                assert_same_predictions(got, expected[(index + request) % CLIENTS])
            except AssertionError as exc:
                with lock:
                    mismatches.append(f"client {index} request {request}: {exc}")
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CLIENTS)]
    wall = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    wall = time.perf_counter() - wall
    rss_after = psutil.Process(process.pid).memory_info().rss

    latencies.sort()
    p95 = latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan")
    drift = (rss_after - rss_before) / rss_before
    print(
        f"\nload: {CLIENTS} clients x {REQUESTS} requests in {wall:.1f} s; failures {len(failures)}, "
        f"mismatches {len(mismatches)}; latency median {statistics.median(latencies):.3f} s, p95 {p95:.3f} s; "
        f"memory {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB ({drift:+.1%})"
    )
    assert not any(thread.is_alive() for thread in threads), "requests hung"
    assert failures == []
    assert mismatches == []
    assert len(latencies) == CLIENTS * REQUESTS
    assert abs(drift) <= 0.10
