"""Requests batched together give each request the answer it gets alone; a bad one fails alone."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from helpers import LANGUAGES, assert_matches_reference, reference_predictions

from xmod_explorer import Explorer, ExplorerError
from xmod_explorer.batching import MaskBatcher
from xmod_explorer.settings import load_settings

# Different languages (overlapping, in different orders), lengths, mask counts and top-k.
MIXED = [
    ("Choose two <mask> and compare their predictions.", ["ru_RU", "en_XX", "ja_XX"], 5),
    ("Der <mask> jeder Sprache sitzt in jeder <mask>.", ["de_DE", "fr_XX"], 3),
    ("Click the <mask>.", ["fr_XX", "ru_RU", "de_DE", "en_XX"], 7),
    ("Open the <mask> file, then save every document in the folder you chose before.", ["ja_XX"], 5),
    ("Choose two <mask> and compare their predictions.", ["en_XX", "de_DE"], 2),
]
# Each fails alone for its own reason; the message must be the one predict_masks gives.
BAD = [
    ("There is no mask here.", ["en_XX"], 5),
    ("Click the <mask>.", ["xx_YY"], 5),
    ("Click the <mask>.", ["en_XX"], 0),
    ("", ["en_XX"], 5),
]


def assert_same(together, alone, tolerance=1e-5):
    """Same languages, positions and token ids in the same order; probabilities and entropies within tolerance."""
    assert together.languages == alone.languages and together.tokens == alone.tokens
    assert [s.position for s in together.masks] == [s.position for s in alone.masks]
    for a, b in zip(together.masks, alone.masks):
        for code in alone.languages:
            assert [g.token_id for g in a.predictions[code]] == [g.token_id for g in b.predictions[code]], code
            for ga, gb in zip(a.predictions[code], b.predictions[code]):
                assert abs(ga.probability - gb.probability) <= tolerance, (code, ga, gb)
            assert abs(a.entropy_bits[code] - b.entropy_bits[code]) <= tolerance, code


def alone_message(explorer, text, codes, k) -> str:
    with pytest.raises(ExplorerError) as caught:
        explorer.predict_masks(text, codes, k)
    return str(caught.value)


def ask_together(ask, requests, *, catch=(ExplorerError,)) -> dict[int, object]:
    """Call ask(*request) for every request from a thread of its own, all released at once; each number's answer,
    or the exception of a type in catch that it raised."""
    start = threading.Barrier(len(requests))
    outcomes: dict[int, object] = {}

    def one(number: int) -> None:
        start.wait()
        try:
            outcomes[number] = ask(*requests[number])
        except catch as exc:
            outcomes[number] = exc

    threads = [threading.Thread(target=one, args=(n,)) for n in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def test_requests_together_equal_each_alone_and_plain_transformers(model_dir):
    explorer = Explorer.from_pretrained(str(model_dir))
    requests = [explorer.check_mask_request(*request) for request in MIXED]
    together = explorer.predict_masks_together(requests)
    assert len(together) == len(MIXED)
    for result, (text, codes, k) in zip(together, MIXED):
        assert result.text == text
        assert_same(result, explorer.predict_masks(text, codes, k))
        assert_matches_reference(result, reference_predictions(model_dir, text, k))
    # Guards the comparison: the requests really differ from one another.
    assert len({tuple(g.token_id for g in r.masks[0].predictions[r.languages[0]]) for r in together}) > 1


@pytest.fixture(scope="module", params=["base", "prenorm"])
def deep_dir(request, tmp_path_factory, tokenizer):
    """Four layers, so that a pass has middle layers (the two-layer models have none), in both X-MOD layouts."""
    from xmod_explorer.tiny import TinySpec, build_random_checkpoint

    extra = {"adapter_reduction_factor": 4} if request.param == "prenorm" else {}
    spec = TinySpec(languages=LANGUAGES, style=request.param, num_layers=4, seed=2, **extra)
    return build_random_checkpoint(tmp_path_factory.mktemp(f"deep-{request.param}"), spec, tokenizer)


def products(run) -> int:
    """The floating-point operations of the matrix products (linear layers: addmm and mm) run() does, by torch's
    own count; attention's token-by-token products (bmm) are left out."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        run()
    counts = counter.get_flop_counts()["Global"]
    return sum(counts.get(op, 0) for op in (torch.ops.aten.addmm, torch.ops.aten.mm))


def test_texts_of_different_lengths_share_a_pass_without_computing_their_padding(deep_dir):
    """A shared pass packs its rows' real tokens (a workshop pass: some 14 % of its tokens are padding): its products
    are those of each request alone (one with a single adapter included: its last layer too runs at the masks only),
    plus only what the last layer takes padded (keys and values at the
    padding, and the repeated mask positions of rows with fewer masks than the most), less layer 0 for a text two
    requests share. Answers equal plain transformers'."""
    explorer = Explorer.from_pretrained(str(deep_dir))
    requests = [explorer.check_mask_request(*request) for request in MIXED]
    longest, widest = max(len(r.ids) for r in requests), max(len(r.positions) for r in requests)
    padding = sum(len(r.languages) * (longest - len(r.ids)) for r in requests)
    repeated = sum(len(r.languages) * (widest - len(r.positions)) for r in requests)
    assert padding > 0 and repeated > 0  # the requests differ in length and in masks

    together = explorer.predict_masks_together(requests)
    for result, (text, codes, k) in zip(together, MIXED):
        assert_same(result, explorer.predict_masks(text, codes, k))
        assert_matches_reference(result, reference_predictions(deep_dir, text, k))

    config = explorer.backend.model.config
    hidden, inner = config.hidden_size, config.intermediate_size
    adapter = hidden // config.adapter_reduction_factor
    keys_and_values = 2 * (2 * hidden * hidden)  # a multiply-add counts two
    one_position = 2 * (2 * hidden * hidden + 2 * hidden * inner + 2 * hidden * adapter)  # query, output, FFN, adapter
    first_layer = 2 * (4 * hidden * hidden + 2 * hidden * inner)  # a token through layer 0 before its adapter
    # Requests with the same text (MIXED's first and last) run layer 0's part before the adapters once together.
    repeated_text = sum(len(r.ids) for r in requests) - sum(len(ids) for ids in {tuple(r.ids) for r in requests})
    alone = sum(products(lambda r=r: explorer.run_mask_request(r)) for r in requests)  # each as predict_masks runs it
    shared = products(lambda: explorer.predict_masks_together(requests))
    assert shared == alone + padding * keys_and_values + repeated * one_position - repeated_text * first_layer


@pytest.mark.adapters_backend
def test_requests_together_equal_each_alone_with_the_adapters_backend(converted_dir):
    explorer = Explorer.from_pretrained(str(converted_dir))
    together = explorer.predict_masks_together([explorer.check_mask_request(*request) for request in MIXED])
    for result, request in zip(together, MIXED):
        assert_same(result, explorer.predict_masks(*request))


def test_batcher_shares_passes_between_threads_and_answers_each_as_alone(base_dir):
    explorer = Explorer.from_pretrained(str(base_dir))
    alone = [explorer.predict_masks(*request) for request in MIXED]
    batcher = MaskBatcher(explorer, window=0.5)  # long enough that every thread below joins the first pass
    results = ask_together(batcher.predict_masks, MIXED * 2)
    assert len(results) == len(MIXED) * 2
    for number, result in results.items():
        assert_same(result, alone[number % len(MIXED)])
    assert batcher.answered == len(results) and batcher.passes < len(results)


def test_a_bad_request_fails_alone_with_its_own_message(base_dir):
    explorer = Explorer.from_pretrained(str(base_dir))
    batcher = MaskBatcher(explorer, window=1.0, pass_limit=10**6)  # room and time for every good request in one pass
    mixed = [MIXED[0], BAD[0], MIXED[1], BAD[1], BAD[2], MIXED[2], BAD[3]]
    outcomes = ask_together(batcher.predict_masks, mixed)
    for number, request in enumerate(mixed):
        if request in BAD:
            assert isinstance(outcomes[number], ExplorerError), request
            assert str(outcomes[number]) == alone_message(explorer, *request)
        else:
            assert_same(outcomes[number], explorer.predict_masks(*request))
    assert batcher.passes == 1  # the good ones still shared one pass


def test_a_failing_shared_pass_reruns_each_request_alone(base_dir):
    """If the shared forward pass itself fails (here: a runner that cannot take one of the texts), only the
    request that causes it fails; the others are answered from passes of their own."""
    explorer = Explorer.from_pretrained(str(base_dir))

    def run(explorer, requests):
        if any("Click" in request.text for request in requests):
            raise RuntimeError("this pass cannot take that text")
        return explorer.predict_masks_together(requests)

    def alone(explorer, request):
        return run(explorer, [request])[0]

    batcher = MaskBatcher(explorer, window=0.5, run=run, alone=alone)
    chosen = [MIXED[0], MIXED[2], MIXED[1]]
    outcomes = ask_together(batcher.predict_masks, chosen, catch=(RuntimeError,))
    assert isinstance(outcomes[1], RuntimeError)
    assert_same(outcomes[0], explorer.predict_masks(*chosen[0]))
    assert_same(outcomes[2], explorer.predict_masks(*chosen[2]))


def test_a_caller_that_gives_up_leaves_the_line(base_dir):
    explorer = Explorer.from_pretrained(str(base_dir))
    batcher = MaskBatcher(explorer, window=5.0)  # the request would wait 5 s for company

    class Gone(Exception):
        pass

    def check():
        raise Gone

    with pytest.raises(Gone):
        batcher.predict_masks(*MIXED[0], check=check, poll=0.05)
    assert batcher.pending() == 0
    assert batcher.predict_masks(*MIXED[1]).languages == MIXED[1][1]  # the batcher still serves


def test_batching_is_a_setting(monkeypatch):
    assert load_settings([]).batch is False  # off by default: a mixed public load waits longer with it on
    assert load_settings(["--batch", "on"]).batch is True
    assert load_settings(["--batch", "off"]).batch is False
    monkeypatch.setenv("XMOD_BATCH", "off")
    assert load_settings([]).batch is False
    monkeypatch.setenv("XMOD_BATCH", "sometimes")
    with pytest.raises(SystemExit, match="XMOD_BATCH must be on or off"):
        load_settings([])


def holder_for(explorer, budget):
    from xmod_explorer.limits import Limits
    from xmod_explorer.ui.common import ModelHolder
    from xmod_explorer.ui.serving import Serving

    return ModelHolder(explorer, Serving(Limits.local(), budget))


def test_the_servers_batcher_draws_on_its_memory_budget(base_dir):
    """A shared pass too big for the budget is refused by it; its requests then run one by one, each within the
    budget, and get the answers they get alone; the budget is whole again afterwards."""
    from xmod_explorer.budget import Budget

    explorer = Explorer.from_pretrained(str(base_dir))
    chosen = MIXED[:3]
    requests = [explorer.check_mask_request(*request) for request in chosen]

    def pass_bytes(group):
        rows, longest = sum(len(r.languages) for r in group), max(len(r.ids) for r in group)
        return explorer.cost(rows, longest, output_positions=max(len(r.positions) for r in group)).bytes

    single = max(pass_bytes([r]) for r in requests)
    shared = min(pass_bytes(pair) for pair in itertools.combinations(requests, 2))
    assert single < shared
    # Any one request fits; no two together do, however the three arrive and are grouped (with three together
    # refused but two allowed, a loaded machine could group two, and the count of passes depended on timing).
    budget = Budget((single + shared) // 2)
    holder = holder_for(explorer, budget)
    holder.batcher.window = 0.5
    got = ask_together(holder.predict_masks, chosen)
    for number, request in enumerate(chosen):
        assert_same(got[number], explorer.predict_masks(*request))
    assert holder.batcher.passes == len(chosen)  # the shared pass was refused: one pass each
    assert budget.status()["in_use"] == 0 and budget.status()["running"] == 0


def test_a_request_waiting_for_a_shared_pass_stops_with_its_job(base_dir):
    from xmod_explorer import jobs
    from xmod_explorer.budget import Budget

    explorer = Explorer.from_pretrained(str(base_dir))
    holder = holder_for(explorer, Budget(2**34))
    holder.batcher.window = 5.0  # it would wait 5 s for company
    job = jobs.Job(budget=holder.serving.budget)
    threading.Timer(0.3, job.stop, args=("Stop was pressed.",)).start()
    with jobs.running(job), pytest.raises(jobs.JobStopped, match="Stop was pressed"):
        holder.predict_masks(*MIXED[0])
    assert holder.batcher.pending() == 0


def test_the_worker_survives_a_line_that_empties_while_it_gathers(base_dir, monkeypatch):
    # The only waiting request gives up during the gathering window, so the worker finds the line empty
    # when the window ends; it must go back to waiting, not die with an IndexError (seen in a CI run).
    explorer = Explorer.from_pretrained(str(base_dir))
    batcher = MaskBatcher(explorer, window=0.5)
    crashes: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashes.append(args.exc_value))

    class Gone(Exception):
        pass

    def check():
        raise Gone

    with pytest.raises(Gone):
        batcher.predict_masks(*MIXED[0], check=check, poll=0.05)
    time.sleep(1.0)  # past the window: the worker has looked at the (now empty) line
    assert crashes == []
    assert batcher.predict_masks(*MIXED[1]).languages == MIXED[1][1]


def test_a_large_request_runs_alone_and_short_ones_do_not_wait_for_it(base_dir, monkeypatch):
    """A request above the share limit runs on its caller's thread, in its caller's job (ordered by the server's
    budget like any other pass), never in the batcher's line: short requests arriving while it runs go first."""
    from xmod_explorer.batching import work

    explorer = Explorer.from_pretrained(str(base_dir))
    large, short = MIXED[2], ("A <mask>.", ["en_XX", "de_DE"], 3)
    large_work = work(explorer.check_mask_request(*large))
    assert work(explorer.check_mask_request(*short)) < large_work
    started, release = threading.Event(), threading.Event()

    run_alone = explorer.run_mask_request

    def held(request):
        if request.languages == large[1]:
            started.set()
            assert release.wait(60)  # the large pass is held until the short ones are answered
        return run_alone(request)

    monkeypatch.setattr(explorer, "run_mask_request", held)
    batcher = MaskBatcher(explorer, window=1.0)  # both short ones arrive within it, even on a loaded machine
    batcher.share_limit = large_work - 1
    results: dict[str, object] = {}

    def ask(name, request):
        results[name] = batcher.predict_masks(*request)

    long_thread = threading.Thread(target=ask, args=("large", large))
    long_thread.start()
    try:
        assert started.wait(30)
        shorts = [threading.Thread(target=ask, args=(f"short{n}", short)) for n in range(2)]
        for thread in shorts:
            thread.start()
        for thread in shorts:
            thread.join(timeout=20)
        assert "short0" in results and "short1" in results, "short requests waited behind a large one"
        assert "large" not in results
    finally:
        release.set()
        long_thread.join(timeout=60)
    monkeypatch.undo()
    assert_same(results["large"], explorer.predict_masks(*large))
    for name in ("short0", "short1"):
        assert_same(results[name], explorer.predict_masks(*short))
    assert batcher.ran_alone == 1 and batcher.passes == 1  # the two short ones shared a pass


def test_a_shared_pass_stays_within_its_padded_size(base_dir):
    """Requests waiting together are split into passes of at most pass_limit padded (rows x tokens)."""
    explorer = Explorer.from_pretrained(str(base_dir))
    chosen = [MIXED[0], MIXED[1], MIXED[2], MIXED[4]]
    checked = [explorer.check_mask_request(*request) for request in chosen]
    widest = max(len(r.ids) for r in checked)
    sizes: list[int] = []

    def run(explorer, requests):
        sizes.append(sum(len(r.languages) for r in requests) * max(len(r.ids) for r in requests))
        return explorer.predict_masks_together(requests)

    batcher = MaskBatcher(explorer, window=0.5, run=run)
    batcher.pass_limit = 7 * widest  # room for two or three of these requests, not all four (12 rows)
    results = ask_together(batcher.predict_masks, chosen)
    for number, request in enumerate(chosen):
        assert_same(results[number], explorer.predict_masks(*request))
    assert batcher.answered == len(chosen)
    assert batcher.passes >= 2 and all(size <= batcher.pass_limit for size in sizes), sizes


def test_a_second_worker_answers_new_requests_while_a_pass_is_held(base_dir):
    """With two workers (a server's two places on two cores), requests that arrive while one pass runs, or waits
    for the budget behind another endpoint's long pass, are answered by the other worker; with one, they waited
    for that pass to end, and short fills waited longer than with no batching at all."""
    explorer = Explorer.from_pretrained(str(base_dir))
    started, release = threading.Event(), threading.Event()

    def held(requests):
        if not started.is_set():  # the first pass is held until the later request is answered
            started.set()
            assert release.wait(60)
        return explorer.predict_masks_together(requests)

    batcher = MaskBatcher(
        explorer,
        window=0.05,
        workers=2,
        run=lambda explorer, requests: held(requests),
        alone=lambda explorer, request: held([request])[0],
    )
    results: dict[str, object] = {}
    first = threading.Thread(target=lambda: results.setdefault("first", batcher.predict_masks(*MIXED[0])))
    first.start()
    try:
        assert started.wait(30)
        later = threading.Thread(target=lambda: results.setdefault("later", batcher.predict_masks(*MIXED[1])))
        later.start()
        later.join(timeout=20)
        assert "later" in results, "a request waited for another worker's held pass"
        assert "first" not in results
    finally:
        release.set()
        first.join(timeout=60)
    assert_same(results["first"], explorer.predict_masks(*MIXED[0]))
    assert_same(results["later"], explorer.predict_masks(*MIXED[1]))
