"""The server-wide memory budget: estimates that bound measured peaks, queueing, refusals, holds."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
from helpers import LANGUAGES, ROOT

from xmod_explorer import budget as budget_module
from xmod_explorer.budget import Budget, Cost, ModelShape, forward_cost
from xmod_explorer.errors import ExplorerError

XMOD_BASE = ModelShape(layers=12, hidden=768, heads=12, intermediate=3072, vocab=250002, adapter=384)


def test_costs_grow_with_the_shape_of_the_request():
    small = forward_cost(XMOD_BASE, 4, 16)
    assert forward_cost(XMOD_BASE, 8, 16).bytes > small.bytes and forward_cost(XMOD_BASE, 8, 16).flops > small.flops
    assert forward_cost(XMOD_BASE, 4, 64).bytes > small.bytes
    assert forward_cost(XMOD_BASE, 4, 16, layer_copies=1).bytes > small.bytes
    assert forward_cost(XMOD_BASE, 4, 16, output_positions=2).bytes > small.bytes + 4 * 2 * 250002 * 4
    assert forward_cost(XMOD_BASE, 4, 16, grad=True).bytes > small.bytes
    deeper = ModelShape(24, 1024, 16, 4096, 250002, 256)
    assert forward_cost(deeper, 4, 16).flops > 2 * small.flops
    # Attention's scores grow with the square of the length: 512 tokens cost far more than 8 x 64.
    assert forward_cost(XMOD_BASE, 1, 512).bytes > forward_cost(XMOD_BASE, 8, 64).bytes


def test_a_pass_that_fits_runs_at_once_and_one_that_does_not_waits_its_turn():
    budget = Budget(1000)
    first = budget.reserve(Cost(600, 0))
    order = []

    def second():
        with budget.reserve(Cost(600, 0)):
            order.append("second runs")

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.3)
    assert order == [] and budget.status()["waiting"] == 1
    with budget.reserve(Cost(300, 0)):  # a small one fits beside the first and does not wait
        order.append("small runs")
    order.append("first ends")
    first.release()
    thread.join(5)
    assert order == ["small runs", "first ends", "second runs"]
    assert budget.status() == {"capacity": 1000, "in_use": 0, "held": 0, "running": 0, "waiting": 0}


def test_a_pass_that_could_never_fit_is_refused_with_a_message():
    budget = Budget(2**30)
    with pytest.raises(ExplorerError, match=r"Comparing 40 sentences needs about 2\.0 GiB.*has 1\.0 GiB.*never run"):
        budget.reserve(Cost(2 * 2**30, 0, "Comparing 40 sentences"))
    assert budget.status()["waiting"] == 0


def test_a_long_waiting_pass_is_not_overtaken_for_ever(monkeypatch):
    monkeypatch.setattr(budget_module, "AGING_SECONDS", 0.2)
    budget = Budget(1000)
    running = budget.reserve(Cost(500, 0))
    started = []
    big = threading.Thread(target=lambda: (budget.reserve(Cost(800, 0)).release(), started.append("big")))
    big.start()
    time.sleep(0.05)
    budget.reserve(Cost(400, 0)).release()  # young waiter: a small pass may still go beside the running one
    time.sleep(0.3)  # now the big one has waited long enough to keep its place
    late = []
    small = threading.Thread(target=lambda: (budget.reserve(Cost(400, 0)).release(), late.append("small")))
    small.start()
    time.sleep(0.3)
    assert late == [] and started == []
    running.release()
    big.join(5)
    small.join(5)
    assert started == ["big"] and late == ["small"]


def test_waiting_passes_go_shortest_first_within_the_places_there_are():
    budget = Budget(10**6, flops_per_second=1e9, max_running=1)
    running = budget.reserve(Cost(10, 1e9))
    order = []

    def wait_for(name, flops):
        with budget.reserve(Cost(10, flops)):
            order.append(name)
            time.sleep(0.05)

    threads = [threading.Thread(target=wait_for, args=(name, flops)) for name, flops in [("long", 5e9), ("short", 1e8)]]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    assert order == [] and budget.status()["running"] == 1  # one place, taken
    running.release()
    for thread in threads:
        thread.join(5)
    assert order == ["short", "long"]


def test_a_shared_pass_waits_by_its_work_per_request():
    """A pass answering 4 requests with 3e9 operations (0.75e9 each) goes before a lone request of 1e9, which goes
    before a pass of 2 requests with 4e9: the budget orders by work per request served, so short requests gathered
    into one shared pass are not sent behind every smaller single pass."""
    budget = Budget(10**6, flops_per_second=1e9, max_running=1)
    running = budget.reserve(Cost(10, 1e9))
    order = []

    def wait_for(name, flops, serves):
        with budget.reserve(Cost(10, flops), serves=serves):
            order.append(name)
            time.sleep(0.05)

    cases = [("two shared", 4e9, 2), ("single", 1e9, 1), ("four shared", 3e9, 4)]
    threads = [threading.Thread(target=wait_for, args=case) for case in cases]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    assert order == [] and budget.status()["waiting"] == 3
    running.release()
    for thread in threads:
        thread.join(5)
    assert order == ["four shared", "single", "two shared"]


def test_a_shared_pass_job_tells_the_budget_how_many_it_serves():
    from xmod_explorer import jobs

    budget = Budget(10**6, flops_per_second=1e9, max_running=1)
    running = budget.reserve(Cost(10, 1e9))
    order = []

    def shared():
        with jobs.running(jobs.Job(budget=budget, serves=4)), jobs.admitted(Cost(10, 3e9)):
            order.append("shared")

    def single():
        with jobs.running(jobs.Job(budget=budget)), jobs.admitted(Cost(10, 1e9)):
            order.append("single")

    threads = [threading.Thread(target=single), threading.Thread(target=shared)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    running.release()
    for thread in threads:
        thread.join(5)
    assert order == ["shared", "single"]


def test_a_long_pass_that_has_waited_goes_before_a_new_short_one(monkeypatch):
    monkeypatch.setattr(budget_module, "AGING_RATE", 0.1)  # a tenth of a second of waiting: a second of credit
    budget = Budget(10**6, flops_per_second=1e9, max_running=1)
    running = budget.reserve(Cost(10, 1e9))
    order = []
    long = threading.Thread(target=lambda: (budget.reserve(Cost(10, 2e9)).release(), order.append("long")))
    long.start()
    time.sleep(0.5)  # 5 s of credit against 2 s of work
    short = threading.Thread(target=lambda: (budget.reserve(Cost(10, 1e8)).release(), order.append("short")))
    short.start()
    time.sleep(0.1)
    running.release()
    long.join(5)
    short.join(5)
    assert order == ["long", "short"]


def test_waiting_gives_up_when_the_caller_says_so():
    budget = Budget(1000)
    taken = budget.reserve(Cost(900, 0))
    calls = []

    def check():
        calls.append(1)
        if len(calls) >= 2:
            raise ExplorerError("stopped")

    with pytest.raises(ExplorerError, match="stopped"):
        budget.reserve(Cost(500, 0), check=check, poll=0.01)
    assert budget.status()["waiting"] == 0
    taken.release()


def test_holds_for_private_copies_take_at_most_half_and_leave_room_for_requests():
    budget = Budget(1000)
    hold = budget.reserve(Cost(400, 0, "A fine-tuned copy"), hold=True)
    assert budget.status()["held"] == 400
    with pytest.raises(ExplorerError, match=r"A fine-tuned copy needs about .* at most"):
        budget.reserve(Cost(200, 0, "A fine-tuned copy"), hold=True)
    with pytest.raises(ExplorerError, match="held by fine-tuned copies"):
        budget.reserve(Cost(700, 0))
    hold.release()
    hold.release()  # twice is harmless
    assert budget.status()["in_use"] == 0 and budget.status()["held"] == 0
    budget.reserve(Cost(700, 0)).release()


def test_time_estimates_use_the_best_speed_seen():
    budget = Budget(1000, flops_per_second=1e9)
    assert budget.seconds(Cost(0, 4e9)) == pytest.approx(4.0)
    budget.observe(Cost(0, 4e9), 2.0)  # a faster pass than the start-up measurement
    assert budget.seconds(Cost(0, 4e9)) == pytest.approx(2.0)
    budget.observe(Cost(0, 4e9), 8.0)  # a slower one (a busy machine) changes nothing
    assert budget.seconds(Cost(0, 4e9)) == pytest.approx(2.0)
    assert Budget(1000).seconds(Cost(0, 1e9)) is None


# ----- the estimates against measured peaks ---------------------------------------------------------------

MEASURE = r"""
import ctypes, gc, json, sys
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads(2)
from xmod_explorer import Explorer, jobs
from xmod_explorer.budget import Budget

libc = ctypes.CDLL("libc.so.6")

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

class Recording(Budget):
    largest = 0
    def reserve(self, cost, **kwargs):
        Recording.largest = max(Recording.largest, cost.bytes)
        return super().reserve(cost, **kwargs)

explorer = Explorer.from_pretrained({folder!r})
codes = explorer.languages
word = "{word} "
results = {{}}
cases = {{
    "predict_masks": lambda: explorer.predict_masks(word * 120 + "<mask>", codes, 5),
    "compare_adapters": lambda: explorer.compare_adapters(word * 250, codes),
    "compare_sentences": lambda: explorer.compare_sentences(
        [(codes[i % 5], word * (60 + 15 * (i % 20))) for i in range(40)]
    ),
    "pooled_features": lambda: explorer.pooled_features([explorer.tokenize(word * 200)] * 40, [codes[0]] * 40),
}}
for name, run in cases.items():
    run()  # warm-up: thread pools and first-use allocations are not the pass's own
    gc.collect(); libc.malloc_trim(0)
    open("/proc/self/clear_refs", "w").write("5")
    base = status("VmRSS:")
    Recording.largest = 0
    with jobs.running(jobs.Job(budget=Recording(2**40))):
        run()
    results[name] = [status("VmHWM:") - base, Recording.largest]
print(json.dumps(results))
"""


@pytest.mark.slow
def test_estimates_bound_the_measured_peaks_at_xmod_base_width(tmp_path, tokenizer):
    """A random model as wide as xmod-base (768, 12 heads, 3072) with 2 layers: every analysis's measured peak
    (resident memory, in a fresh process) stays under its estimate, and the estimate is not wildly larger."""
    from xmod_explorer.tiny import TinySpec, build_random_checkpoint

    spec = TinySpec(languages=LANGUAGES, hidden_size=768, num_heads=12, intermediate_size=3072, adapter_scale=0.0)
    folder = build_random_checkpoint(tmp_path / "wide", spec, tokenizer)
    # A word that stays one token when repeated, so that "word * n" is n tokens (the longest case is 345 of 512).
    word = next(
        token
        for token in sorted(tokenizer.get_vocab())
        if token.isalpha()
        and len(token) > 2
        and len(tokenizer(f"{token} {token}", add_special_tokens=False).input_ids) == 2
    )
    script = MEASURE.format(root=str(ROOT), folder=str(folder), word=word)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(results, indent=1))
    for name, (measured, estimated) in results.items():
        assert measured < estimated, f"{name}: measured {measured / 2**20:.0f} MiB > estimate {estimated / 2**20:.0f}"
        assert estimated < 4 * measured + 64 * 2**20, f"{name}: estimate {estimated / 2**20:.0f} MiB is too pessimistic"
