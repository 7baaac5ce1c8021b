"""A real browser (Debian's Chromium, driven by Playwright) against the app started as a subprocess.

Skips with a reason where Chromium is missing, except in CI (CI=1), where that is a failure.
Set XMOD_SCREENSHOTS=assets/screenshots to refresh the README's screenshots.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from pathlib import Path

import pytest
from helpers import app_process

from xmod_explorer.defaults import mini_available

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the browser tests, but no chromium is installed (apt-get install -y chromium)")
    pytest.skip("no Chromium here (apt-get install -y chromium to run the browser tests)", allow_module_level=True)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, base_dir):
    model = "mini" if mini_available() else str(base_dir)
    folder = tmp_path_factory.mktemp("browser-app")
    with app_process(["--model", model], folder, env={"HF_HUB_CACHE": str(folder / "hub")}) as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_FLAGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser, app_url):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.errors = []
    page.on("console", lambda message: page.errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(app_url)
    page.wait_for_selector("#fill-run", timeout=30_000)
    yield page
    page.close()


def screenshot(page, name: str) -> None:
    folder = os.environ.get("XMOD_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def choose_languages(page, dropdown: str, names: list[str]) -> None:
    box = page.locator(dropdown)
    while box.locator(".token-remove").count():
        box.locator(".token-remove").first.click()
    for name in names:
        box.locator("input").click()
        box.locator("input").fill(name)
        page.get_by_role("option", name=f"{name} (").first.click()


def test_fill_the_mask_shows_one_column_per_language(page):
    page.locator("#fill-text textarea").fill("Klicken Sie auf die <mask>, um das Dokument zu speichern.")
    choose_languages(page, "#fill-languages", ["German", "Japanese"])
    page.click("#fill-run")
    page.wait_for_function("document.querySelectorAll('#fill-table th').length >= 4", timeout=30_000)
    headers = [cell.inner_text().strip() for cell in page.locator("#fill-table th").all()]
    assert headers[-2:] == ["de_DE", "ja_XX"]
    rows = page.locator("#fill-table tbody tr").all()
    cells = [[cell.text_content().strip() for cell in row.locator("td").all()] for row in rows]
    filled = [row for row in cells if len(row) == 4 and row[0]]
    assert filled and all(row[2].endswith(")") and row[3].endswith(")") for row in filled)  # token (p) in both
    page.wait_for_selector("#fill-chart .js-plotly-plot", timeout=30_000)
    assert "Mask 1" in page.locator("#fill-summary").inner_text()
    screenshot(page, "fill_the_mask")
    assert page.errors == []


def test_the_mask_selector_works_from_the_first_two_mask_run(page):
    """Issue 16: with several masks, the chart's mask selector was missing after the first predict. A fresh page
    predicts a two-mask sentence once; the selector shows both masks, and choosing mask 2 redraws the chart."""
    page.locator("#fill-text textarea").fill("Klicken Sie auf die <mask>, um das <mask> zu speichern.")
    choose_languages(page, "#fill-languages", ["German", "Japanese"])
    page.click("#fill-run")
    page.wait_for_selector("#fill-chart .js-plotly-plot .gtitle", timeout=60_000)
    page.wait_for_function(
        "document.querySelector('#fill-chart .gtitle')?.textContent.startsWith('Mask 1 of 2')", timeout=30_000
    )
    selector = page.locator("#fill-mask-number")
    selector.wait_for(state="visible", timeout=10_000)
    assert [label.inner_text().strip() for label in selector.locator("label").all()] == ["1", "2"]
    selector.get_by_label("2", exact=True).check()
    page.wait_for_function(
        "document.querySelector('#fill-chart .gtitle')?.textContent.startsWith('Mask 2 of 2')", timeout=30_000
    )
    selector.get_by_label("1", exact=True).check()
    page.wait_for_function(
        "document.querySelector('#fill-chart .gtitle')?.textContent.startsWith('Mask 1 of 2')", timeout=30_000
    )
    # With mask 2 chosen, a three-mask sentence sent with Enter offers three masks and starts at mask 1 again.
    selector.get_by_label("2", exact=True).check()
    page.wait_for_function(
        "document.querySelector('#fill-chart .gtitle')?.textContent.startsWith('Mask 2 of 2')", timeout=30_000
    )
    page.locator("#fill-text textarea").fill("Die <mask> und die <mask> sind <mask>.")
    page.locator("#fill-text textarea").press("Enter")
    page.wait_for_function(
        "document.querySelector('#fill-chart .gtitle')?.textContent.startsWith('Mask 1 of 3')", timeout=60_000
    )
    assert [label.inner_text().strip() for label in selector.locator("label").all()] == ["1", "2", "3"]
    assert selector.get_by_label("1", exact=True).is_checked()
    selector.get_by_label("3", exact=True).check()
    page.wait_for_function(
        "document.querySelector('#fill-chart .gtitle')?.textContent.startsWith('Mask 3 of 3')", timeout=30_000
    )
    assert page.errors == []


def test_compare_tab_renders_the_heatmap(page):
    page.get_by_role("tab", name="Compare adapters").click()
    choose_languages(page, "#compare-languages", ["English", "German", "French"])
    page.click("#compare-run")
    page.wait_for_selector("#compare-heatmap .js-plotly-plot .heatmaplayer", timeout=30_000)
    page.wait_for_selector("#compare-lines .js-plotly-plot .scatterlayer", timeout=30_000)
    page.wait_for_selector("#compare-tokens .js-plotly-plot .heatmaplayer", timeout=30_000)
    labels = [tick.text_content() for tick in page.locator("#compare-heatmap .xtick text").all()]
    assert labels == ["en_XX", "de_DE", "fr_XX"]
    screenshot(page, "compare_adapters")
    assert page.errors == []


def test_across_languages_and_the_other_tabs(page):
    page.get_by_role("tab", name="Across languages").click()
    page.click("#sentences-run")
    page.wait_for_selector("#sentences-heatmap .js-plotly-plot .heatmaplayer", timeout=60_000)
    page.wait_for_selector("#sentences-cka .js-plotly-plot", timeout=30_000)
    screenshot(page, "across_languages")
    page.get_by_role("tab", name="Model").click()
    assert "Parameters" in page.locator("#model-summary").inner_text()
    screenshot(page, "model")
    page.get_by_role("tab", name="About").click()
    page.wait_for_selector("text=Lifting the Curse of Multilinguality")
    screenshot(page, "about")
    assert page.errors == []


def test_an_old_link_without_a_tab_fills_and_runs_the_first_tab(browser, app_url):
    page = browser.new_page()
    page.goto(f"{app_url}/?text=Die+<mask>+ist+neu.&languages=de_DE,fr_XX")
    page.wait_for_selector("#fill-chart .js-plotly-plot .main-svg", timeout=60_000)  # computed, no click
    assert page.locator("#fill-text textarea").input_value() == "Die <mask> ist neu."
    tokens = page.locator("#fill-languages .token").all_inner_texts()
    assert tokens == ["German (de_DE)", "French (fr_XX)"]
    assert "de_DE: Die " in page.locator("#fill-summary").inner_text()  # the completed sentence
    page.close()


def test_a_bad_deep_link_parameter_is_dropped_alone_with_a_message(browser, app_url):
    page = browser.new_page()
    page.goto(f"{app_url}/?text=Die+<mask>+ist+neu.&languages=de_DE,fr_XX&top_k=%C2%B2")  # top_k=² (not ASCII)
    page.wait_for_selector("#fill-text textarea", timeout=30_000)
    page.wait_for_function("document.querySelector('#fill-text textarea').value.includes('ist neu')", timeout=30_000)
    assert page.locator("#fill-languages .token").all_inner_texts() == ["German (de_DE)", "French (fr_XX)"]
    toast = page.locator(".toast-body", has_text="top_k")
    toast.first.wait_for(timeout=30_000)
    assert "top_k parameter was not used: give a whole number" in toast.first.inner_text()  # named, never echoed
    page.wait_for_selector("#fill-chart .js-plotly-plot .main-svg", timeout=60_000)  # and the rest of it ran
    page.close()


PAYLOADS = [
    '<img src=x onerror="window.__xss=1">',
    "<script>window.__xss=2</script>",
    '<svg onload="window.__xss=3"></svg>',
]


def test_user_text_and_model_tokens_are_escaped(page):
    page.on("dialog", lambda dialog: (page.errors.append(f"dialog opened: {dialog.message}"), dialog.dismiss()))
    hostile = " ".join(PAYLOADS)
    page.locator("#fill-text textarea").fill(f"{hostile} <mask>")
    page.click("#fill-run")
    page.wait_for_selector("#fill-chart .js-plotly-plot", timeout=30_000)
    page.get_by_role("tab", name="Compare adapters").click()
    page.locator("#compare-text textarea").fill(hostile)
    page.click("#compare-run")
    page.wait_for_selector("#compare-tokens .js-plotly-plot .heatmaplayer", timeout=30_000)
    page.wait_for_timeout(500)
    assert page.evaluate("window.__xss") is None
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("svg[onload]").count() == 0
    # The pieces of the payload are shown as text: the token view lists '<' rather than swallowing it.
    tick_labels = "".join(tick.text_content() for tick in page.locator("#compare-tokens .ytick text").all())
    assert "<" in tick_labels
    assert page.errors == []


def test_failed_model_loads_keep_the_old_model_serving(page, tmp_path, base_dir):
    not_xmod = tmp_path / "bert"
    not_xmod.mkdir()
    (not_xmod / "config.json").write_text('{"model_type": "bert"}')
    truncated = tmp_path / "truncated"
    shutil.copytree(base_dir, truncated)
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 3])
    faults = {
        "/no/such/folder": "No folder",
        str(not_xmod): "not X-MOD",
        str(truncated): "could not be read",
        "facebook/xmod-large-prenorm": "HF_HUB_OFFLINE",  # the app runs with HF_HUB_OFFLINE=1 and an empty cache
    }
    banner = page.locator("#model-banner").inner_text()
    page.get_by_role("tab", name="Model").click()
    for reference, message in faults.items():
        page.locator("#model-reference textarea, #model-reference input").first.fill(reference)
        page.click("#model-load")
        assert "for everyone" in page.locator("#model-load-question").inner_text()  # it asks first
        page.click("#model-load-confirm")
        toast = page.locator(".toast-body", has_text=message)
        toast.first.wait_for(timeout=30_000)
        assert "Traceback" not in toast.first.inner_text()
        for close in page.locator(".toast-close").all():
            close.click()
        assert banner in page.locator("#model-banner").inner_text()
    page.get_by_role("tab", name="Fill the mask").click()
    page.click("#fill-run")
    page.wait_for_selector("#fill-chart .js-plotly-plot", timeout=30_000)
    assert page.errors == []


# The Classify tab's panels that a failed run marks "Error" (Gradio's status tracker on each output).
CLASSIFY_ERRORS = """() => [...document.querySelectorAll('[data-testid="status-tracker"].error, .wrap .error')]
    .filter(e => e.offsetParent !== null && e.closest('#component-0') === null)
    .map(e => e.closest('[id^="classify-"]')?.id || 'classify tab')"""
# Records every progress percentage the page shows, as it is drawn (polling could miss some).
PROGRESS_RECORDER = """() => {
    window.__progress = [];
    new MutationObserver(() => {
        const shown = document.querySelector('[data-testid="status-tracker"] .progress-level-inner');
        const found = shown?.textContent.match(/ - ([0-9.]+)%/);
        const value = found ? parseFloat(found[1]) : null;
        if (value !== null && window.__progress.at(-1)?.[0] !== value)
            window.__progress.push([value, shown.textContent.trim()]);
    }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def one_update_apart(before: list, after: list) -> bool:
    """Two progress readings [percent, text] of the lab's bar that the server sent one after the other."""
    import re

    def batch(text: str):
        found = re.search(r"batch (\d+) of (\d+)", text)
        return (int(found[1]), int(found[2])) if found else None

    a, b = batch(before[1]), batch(after[1])
    fitting_a, fitting_b = (
        re.search("Training the probe|Probe trained", text) is not None for text in (before[1], after[1])
    )
    if a and b:
        return a[1] == b[1] and b[0] == a[0] + 1
    if a and fitting_b:
        return a[0] == a[1]  # the last batch of features, then the fit
    if fitting_a and b:
        return b[0] == 1  # the fit, then the evaluation's first batch
    return fitting_a and fitting_b


def test_classify_clears_stale_errors_and_its_progress_moves_smoothly(page, tmp_path):
    """Issue 16: "Error" stayed over the probabilities after the probe it asked for had been trained, and the
    training bar raced to 85 % and then jumped. A good run anywhere on the tab clears the markers failed runs left;
    the bar never goes back and never jumps by 10 points or more from one update to the next."""
    page.get_by_role("tab", name="Classify").click()
    page.get_by_label("my probe (trained or loaded below)").check()
    page.click("#classify-run")  # no probe yet: an error
    page.locator(".toast-body", has_text="no probe yet").first.wait_for(timeout=30_000)
    page.wait_for_function(f"({CLASSIFY_ERRORS})().length >= 3", timeout=10_000)
    assert {"classify-chart", "classify-probabilities"} <= set(page.evaluate(CLASSIFY_ERRORS))
    close_toasts(page)

    page.evaluate(PROGRESS_RECORDER)
    page.click("#classify-train")  # the bundled data: a good run
    page.wait_for_selector("#classify-transfer-chart .js-plotly-plot .barlayer", timeout=120_000)
    page.wait_for_function(f"({CLASSIFY_ERRORS})().length === 0", timeout=10_000)
    shown = page.evaluate("window.__progress")
    print("progress shown (%):", shown)
    assert len(shown) >= 10, shown
    values = [value for value, _ in shown]
    assert all(after >= before for before, after in itertools.pairwise(values)), shown
    # A busy page may draw two updates as one; judge only readings one update apart: the next batch, or the step
    # from one phase to the next (features -> the probe's fit -> the evaluation's features).
    steps = [after[0] - before[0] for before, after in itertools.pairwise(shown) if one_update_apart(before, after)]
    assert steps and max(steps) < 10, shown

    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,verdict\nnot the columns,x\n", encoding="utf-8")
    page.locator("#classify-upload input[type=file]").set_input_files(str(bad))
    page.wait_for_function(  # the upload has arrived and chosen itself as the data
        "document.querySelector('#classify-dataset input[value=\"My CSV file\"]')?.checked", timeout=30_000
    )
    page.click("#classify-train")  # the upload lacks its columns: an error on the lab's panels
    page.locator(".toast-body", has_text="no column").first.wait_for(timeout=30_000)
    page.wait_for_function(f"({CLASSIFY_ERRORS})().includes('classify-summary')", timeout=10_000)
    close_toasts(page)
    page.get_by_label("my probe (trained or loaded below)").check()
    page.click("#classify-run")  # the probe trained above: a good run
    page.wait_for_selector("#classify-chart .js-plotly-plot .barlayer", timeout=30_000)
    page.wait_for_function(f"({CLASSIFY_ERRORS})().length === 0", timeout=10_000)


def test_error_toast_shows_the_mask_token_as_text(page):
    """Toasts render HTML: a message naming <mask> must still show the word (it once read "has no ")."""
    page.locator("#fill-text textarea").fill("This sentence has no mask at all.")
    page.click("#fill-run")
    toast = page.locator(".toast-body", has_text="has no <mask>")
    toast.first.wait_for(timeout=30_000)
    assert "Put <mask> where a word should be predicted" in toast.first.inner_text()


def test_transfer_lab_trains_and_shows_one_row_per_target_language(page):
    page.get_by_role("tab", name="Classify").click()
    targets = [token.split("(")[-1].rstrip(")") for token in page.locator("#classify-targets .token").all_inner_texts()]
    assert len(targets) >= 2
    page.click("#classify-train")
    page.wait_for_selector("#classify-transfer-chart .js-plotly-plot .barlayer", timeout=120_000)
    page.wait_for_selector("#classify-loss .js-plotly-plot .scatterlayer", timeout=30_000)
    # Gradio 6.17 draws table rows as divs carrying data-row and data-col.
    script = """() => {
        const rows = {};
        for (const cell of document.querySelectorAll('#classify-table [data-row][data-col]')) {
            (rows[cell.dataset.row] ||= [])[Number(cell.dataset.col)] = cell.textContent.trim();
        }
        return Object.keys(rows).sort((a, b) => a - b).map(key => rows[key])
            .filter(cells => /^[a-z]{2}_[A-Z]{2}$/.test(cells[0] || ''));
    }"""
    page.wait_for_function(f"({script})().length >= {len(targets)}", timeout=30_000)
    rows = page.evaluate(script)
    assert [row[0] for row in rows] == targets  # one row per target language, in the chosen order
    for row in rows:  # language, examples, target %, its interval, source %, its interval, gap, gap p, majority
        for accuracy, interval in ((row[2], row[3]), (row[4], row[5])):
            low, high = (float(bound) for bound in interval.split(" to "))
            assert 0 <= low <= float(accuracy) <= high <= 100
        assert 0 <= float(row[7]) <= 1
    summary = page.locator("#classify-summary").inner_text()
    assert "Probe trained" in summary and f"Transfer to {len(targets)} target languages" in summary
    assert page.locator("#classify-download").is_visible()
    page.click("#classify-run")  # classify with the session's new probe
    page.wait_for_selector("#classify-chart .js-plotly-plot .barlayer", timeout=30_000)
    assert "probe trained on en_XX" in page.locator("#classify-note").inner_text()
    screenshot(page, "classify")
    assert page.errors == []


def test_model_tab_shows_download_progress_per_file(browser, tmp_path, tokenizer):
    """Loading a hub model from the Model tab shows each file's bytes done of bytes total while it downloads
    (from a loopback hub on a slow link; the file is larger than huggingface_hub's 10 MB write size)."""
    import re

    from hub_emulator import HubEmulator

    from xmod_explorer.tiny import TinySpec, build_random_checkpoint

    spec = TinySpec(languages=["en_XX", "de_DE"], hidden_size=256, num_layers=1, num_heads=4, intermediate_size=256)
    spec.vocab_size = 40_000
    folder = build_random_checkpoint(tmp_path / "model", spec, tokenizer)
    emulator = HubEmulator()
    emulator.add("xmod-test/slow-download", {path.name: path for path in folder.iterdir()})
    emulator.bytes_per_second = (folder / "model.safetensors").stat().st_size / 4
    env = {"HF_HUB_OFFLINE": "0", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_ENDPOINT": emulator.url}
    try:
        with app_process(["--model", str(folder)], tmp_path, env=env) as (url, _):
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.get_by_role("tab", name="Model").click()
            page.locator("#model-reference textarea, #model-reference input").first.fill("xmod-test/slow-download")
            page.click("#model-load")
            page.click("#model-load-confirm")
            progress = page.get_by_text(re.compile(r"model\.safetensors, [\d.]+ MB of [\d.]+ MB \(file \d of \d\)"))
            progress.first.wait_for(timeout=30_000)
            # The progress text shows inside the outputs (the banner among them) while loading; the banner's own
            # sentence comes when the model is in.
            banner = page.locator("#model-banner", has_text=re.compile(r"Model: xmod-test/slow-download \("))
            banner.wait_for(timeout=60_000)
            page.close()
    finally:
        emulator.close()
    log = tmp_path / "app.log"
    assert re.search(r"model\.safetensors, [\d.]+ MB of [\d.]+ MB", log.read_text())  # the log says it too


# ----- the logit lens, which language, mixing two adapters, the map ------------------------------------------


def test_logit_lens_tab_shows_the_grid_and_the_lines(page):
    page.get_by_role("tab", name="Logit lens").click()
    page.locator("#lens-text textarea").fill("Click the <mask> to save the document.")
    choose_languages(page, "#lens-languages", ["English", "German", "Japanese"])
    page.click("#lens-run")
    page.wait_for_selector("#lens-grid .js-plotly-plot .heatmaplayer", timeout=60_000)
    page.wait_for_selector("#lens-lines .js-plotly-plot .scatterlayer", timeout=30_000)
    labels = [tick.text_content() for tick in page.locator("#lens-grid .xtick text").all()]
    assert labels == ["en_XX", "de_DE", "ja_XX"]
    assert "Mask 1" in page.locator("#lens-summary").inner_text()
    page.wait_for_function("document.querySelectorAll('#lens-table th').length >= 5", timeout=30_000)
    screenshot(page, "logit_lens")
    assert page.errors == []


def test_which_language_tab_ranks_the_adapters_and_fill_the_mask_uses_auto(page):
    page.get_by_role("tab", name="Which language?").click()
    page.locator("#identify-text textarea").fill("Klicken Sie auf die Schaltfläche, um das Dokument zu speichern.")
    page.click("#identify-run")
    page.wait_for_selector("#identify-chart .js-plotly-plot .barlayer", timeout=60_000)
    summary = page.locator("#identify-summary").inner_text()
    assert "forward rows" in summary and "py3langid" in summary
    screenshot(page, "which_language")
    page.get_by_role("tab", name="Fill the mask").click()
    page.locator("#fill-text textarea").fill("Klicken Sie auf die <mask>, um das Dokument zu speichern.")
    box = page.locator("#fill-languages")
    while box.locator(".token-remove").count():
        box.locator(".token-remove").first.click()
    box.locator("input").click()
    box.locator("input").fill("auto")
    page.get_by_role("option", name="auto: ").first.click()
    page.click("#fill-run")
    page.wait_for_function("document.querySelector('#fill-summary').innerText.includes('auto')", timeout=60_000)
    chosen = page.locator("#fill-summary").inner_text().split("auto chose ")[1].split(":")[0].strip()
    best = summary.split("with the ")[1].split(" adapter")[0].strip()
    assert chosen == best
    assert page.errors == []


def test_mix_tab_and_its_alpha_slider(page):
    page.get_by_role("tab", name="Mix two adapters").click()
    page.locator("#mix-text textarea").fill("Click the <mask> to save the document.")
    page.click("#mix-run")
    page.wait_for_selector("#mix-chart .js-plotly-plot .scatterlayer", timeout=60_000)
    assert "alone says" in page.locator("#mix-summary").inner_text()
    script = (
        """() => [...document.querySelectorAll('#mix-table [data-row][data-col="0"]')].map(c => c.textContent.trim())"""
    )
    page.wait_for_function(f"({script})().length > 0", timeout=30_000)
    assert set(page.evaluate(script)) == {"0"}
    number = page.locator("#mix-alpha input[type=number]")
    number.fill("1")
    number.press("Enter")
    page.wait_for_function(f"({script})().every(v => v === '1')", timeout=30_000)
    screenshot(page, "mix_adapters")
    assert page.errors == []


def test_map_tab_draws_each_layer(page):
    page.get_by_role("tab", name="Map").click()
    page.click("#map-run")
    page.wait_for_selector("#map-chart .js-plotly-plot .scatterlayer", timeout=60_000)
    legend = [item.text_content() for item in page.locator("#map-chart .legendtext").all()]
    assert len(legend) >= 3 and all(len(code) == 5 and "_" in code for code in legend)
    assert "of the variance" in page.locator("#map-notes").inner_text()
    number = page.locator("#map-layer input[type=number]")
    number.fill("0")
    number.press("Enter")
    page.wait_for_function(
        "document.querySelector('#map-chart .gtitle').textContent.startsWith('Layer 0')", timeout=30_000
    )
    screenshot(page, "map")
    assert page.errors == []


# Per tab: the link, its text box (None: a table), and the chart its result ends with.
LINKS = {
    "fill": ("?tab=fill&text=Die+<mask>+ist+neu.&languages=de_DE,fr_XX&top_k=3", "#fill-text", "#fill-chart"),
    "compare": (
        "?tab=compare&text=Die+Datei+ist+neu.&languages=de_DE,fr_XX,en_XX&reference=fr_XX&layer=1",
        "#compare-text",
        "#compare-tokens",
    ),
    "sentences": ("?tab=sentences&languages=de_DE,fr_XX,en_XX&layer=2", None, "#sentences-cka"),
    "lens": ("?tab=lens&text=Die+<mask>+ist+neu.&languages=de_DE,fr_XX&top_k=3", "#lens-text", "#lens-lines"),
    "identify": (
        "?tab=identify&text=Bonjour+tout+le+monde.&languages=fr_XX,de_DE",
        "#identify-text",
        "#identify-chart",
    ),
    "mix": ("?tab=mix&text=Die+<mask>+ist+neu.&a=de_DE&b=fr_XX&steps=5", "#mix-text", "#mix-chart"),
    "map": ("?tab=map&text=Die+Datei+ist+neu.&languages=de_DE,fr_XX,en_XX&layer=2", "#map-text", "#map-chart"),
    "classify": (
        "?tab=classify&text=Das+Programm+ist+gut.&languages=de_DE,fr_XX&targets=de_DE,fr_XX",
        "#classify-text",
        "#classify-chart",
    ),
}


def link_codes(query: str, key: str = "languages") -> list[str]:
    return query.split(f"{key}=")[1].split("&")[0].split(",")


@pytest.mark.parametrize("name", list(LINKS))
def test_deep_links_open_each_tab_with_its_inputs_and_its_result(browser, app_url, name):
    query, text_box, chart = LINKS[name]
    page = browser.new_page()
    page.goto(f"{app_url}/{query}")
    page.wait_for_selector(f"{chart} .js-plotly-plot .main-svg", timeout=90_000)  # the result, without a click
    if text_box:
        expected = query.split("text=")[1].split("&")[0].replace("+", " ")
        assert page.locator(f"{text_box} textarea").input_value() == expected
    if name in ("fill", "compare", "lens", "identify", "map", "classify"):
        tokens = page.locator(f"#{name}-languages .token").all_inner_texts()
        assert [token.split("(")[-1].rstrip(")") for token in tokens] == link_codes(query)
    if name == "compare":
        assert page.locator("#compare-heatmap .xtick text").all_text_contents() == link_codes(query)
        assert "fr_XX" in page.locator("#compare-lines .gtitle").text_content()  # the link's reference
    if name == "sentences":
        labels = page.locator("#sentences-heatmap .xtick text").all_text_contents()
        assert {label.split(" ")[0] for label in labels} == {"de_DE", "fr_XX", "en_XX"}
        assert page.locator("#sentences-heatmap .gtitle").text_content().startswith("Layer 2")
    if name == "mix":
        assert page.locator("#mix-a input").input_value() == "German (de_DE)"
        assert page.locator("#mix-b input").input_value() == "French (fr_XX)"
    if name == "map":
        assert page.locator("#map-mode input[value='adapters']").is_checked()
        assert page.locator("#map-chart .gtitle").text_content().startswith("Layer 2")
    if name == "lens":  # a link fills only the tab it names
        page.get_by_role("tab", name="Mix two adapters").click()
        page.wait_for_selector("#mix-run", state="visible", timeout=30_000)
        page.wait_for_timeout(1000)
        assert page.locator("#mix-text textarea").input_value() == "Click the <mask> to save the document."
    page.close()


def test_copy_link_reproduces_the_view(browser, app_url):
    page = browser.new_page()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(app_url)
    page.get_by_role("tab", name="Compare adapters").click()
    page.locator("#compare-text textarea").fill("Ein ganz anderer Satz.")
    choose_languages(page, "#compare-languages", ["Japanese", "German"])
    page.locator("#compare-centred input").check()
    page.click("#compare-copy-link")
    page.wait_for_function(
        "document.querySelector('#compare-link textarea, #compare-link input').value.includes('tab=')"
    )
    link = page.locator("#compare-link textarea, #compare-link input").first.input_value()
    assert link.startswith(app_url) and "tab=compare" in link and "centred=1" in link
    assert page.evaluate("navigator.clipboard.readText()") == link
    page.close()
    again = browser.new_page()
    again.goto(link)
    again.wait_for_selector("#compare-tokens .js-plotly-plot .main-svg", timeout=60_000)
    assert again.locator("#compare-text textarea").input_value() == "Ein ganz anderer Satz."
    assert again.locator("#compare-heatmap .xtick text").all_text_contents() == ["ja_XX", "de_DE"]
    assert again.locator("#compare-centred input").is_checked()
    assert "centred" in again.locator("#compare-heatmap .gtitle").text_content()
    again.close()


def test_bad_link_parameters_are_dropped_one_by_one(browser, app_url):
    page = browser.new_page()
    # top_k "²" passes str.isdigit(); languages has a code the model lacks; the text is fine and is used.
    page.goto(f"{app_url}/?tab=lens&text=Der+<mask>+ist+da.&top_k=%C2%B2&languages=xx_YY")
    for key in ("top_k", "languages"):
        page.locator(".toast-body", has_text=f"The link's {key} parameter was not used").first.wait_for(timeout=30_000)
    page.wait_for_selector("#lens-lines .js-plotly-plot .main-svg", timeout=60_000)
    assert page.locator("#lens-text textarea").input_value() == "Der <mask> ist da."
    page.close()


def test_a_hostile_deep_link_is_dropped_with_a_fixed_message(browser, app_url):
    page = browser.new_page()
    page.on("dialog", lambda dialog: dialog.dismiss())
    payload = '<img src=x onerror="window.__xss=1">'
    page.goto(f"{app_url}/?tab=mix&a={payload}&b=fr_XX&text={payload}")
    page.locator(".toast-body", has_text="The link's a parameter was not used").first.wait_for(timeout=30_000)
    page.wait_for_function(
        "document.querySelector('#mix-text textarea').value.includes('onerror')", timeout=30_000
    )  # the text arrives as text, in a text box
    assert page.evaluate("window.__xss") is None and page.locator("img[src='x']").count() == 0
    page.close()


# ----- no long tasks: every tab's result, with every adapter of the mini model (12 or more) ---------------------

# Records every main-thread task over 50 ms (the Long Tasks API), from the start of the page on.
LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) window.__longTasks.push([entry.startTime, entry.duration]);
}).observe({type: "longtask", buffered: true});
"""
# The bound for any one task after a result arrives; a page that holds the main thread longer stutters.
LONGEST_TASK_MS = 200


def mini_languages() -> list[str]:
    import json

    from xmod_explorer.defaults import MINI_PATH

    return json.loads((MINI_PATH / "config.json").read_text())["languages"]


def heldout_rows(codes: list[str]) -> str:
    """Four sentences per language from the mini model's held-out set (mask filled in), as a rows= parameter."""
    import csv

    from xmod_explorer.defaults import ASSETS

    with open(ASSETS / "mini_heldout.tsv", encoding="utf-8", newline="") as handle:
        records = [r for r in csv.DictReader(handle, delimiter="\t") if r["language"] in codes]
    return "\n".join(f"{r['language']}\t{r['text'].replace('<mask>', r['answer'])}" for r in records)


def busy_links() -> dict[str, tuple[str, str]]:
    """Per tab: a link that runs it with every adapter of the mini model, and the chart its result ends with."""
    from urllib.parse import urlencode

    codes = mini_languages()
    every = ",".join(codes)
    masked = "Klicken Sie auf die <mask>, um das <mask> zu speichern."
    plain = "Die Datei ist neu."
    return {
        "fill": (urlencode({"tab": "fill", "text": masked, "languages": every}), "#fill-chart"),
        "compare": (urlencode({"tab": "compare", "text": plain, "languages": every}), "#compare-tokens"),
        "sentences": (urlencode({"tab": "sentences", "rows": heldout_rows(codes)}), "#sentences-cka"),
        "lens": (urlencode({"tab": "lens", "text": masked, "languages": every}), "#lens-lines"),
        "identify": (urlencode({"tab": "identify", "text": plain, "languages": every}), "#identify-chart"),
        "mix": (urlencode({"tab": "mix", "text": masked, "a": codes[0], "b": codes[-1], "steps": 11}), "#mix-chart"),
        "map": (urlencode({"tab": "map", "mode": "sentences", "rows": heldout_rows(codes)}), "#map-chart"),
        "classify": (
            urlencode({"tab": "classify", "text": "Das Programm stürzt ab.", "languages": every, "targets": every}),
            "#classify-chart",
        ),
    }


def longest_task_after_link_run(page, chart: str, settle_ms: int = 1500, limit_s: float = 120) -> tuple[float, list]:
    """Wait for the link's run (its performance mark), for its result's chart, then for the page to be quiet for
    settle_ms; return the longest task since the run started, and every long task then (start, duration) in ms."""
    page.wait_for_function("performance.getEntriesByName('xmod-link-run').length > 0", timeout=limit_s * 1000)
    page.wait_for_selector(f"{chart} .js-plotly-plot .main-svg", timeout=limit_s * 1000)
    page.wait_for_function(
        f"""() => {{
            const last = Math.max(0, ...window.__longTasks.map(([start, duration]) => start + duration));
            return performance.now() - last > {settle_ms};
        }}""",
        timeout=limit_s * 1000,
        polling=250,
    )
    started = page.evaluate("performance.getEntriesByName('xmod-link-run')[0].startTime")
    tasks = page.evaluate(f"window.__longTasks.filter(([start]) => start >= {started})")
    return max([duration for _, duration in tasks], default=0.0), [(round(s - started), round(d)) for s, d in tasks]


@pytest.mark.parametrize("name", list(busy_links()))
def test_a_result_with_every_adapter_never_holds_the_page(browser, app_url, name):
    """Issue 16: with 12 adapters the page froze for 45-107 s in one task once a result arrived. Each tab's link
    runs it with every adapter of the mini model; no main-thread task from the run on may last 200 ms or more."""
    if not mini_available():
        pytest.skip("needs the embedded mini model (12+ languages)")
    assert len(mini_languages()) >= 12
    query, chart = busy_links()[name]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.add_init_script(LONG_TASKS)
    page.goto(f"{app_url}/?{query}")
    longest, tasks = longest_task_after_link_run(page, chart)
    print(f"{name}: longest task {longest:.0f} ms; long tasks (start, ms) {tasks}; load {os.getloadavg()}")
    assert longest < LONGEST_TASK_MS, (name, tasks)
    page.close()


@pytest.fixture(scope="module")
def app81_url(tmp_path_factory, all_languages_dir):
    folder = tmp_path_factory.mktemp("browser-app-81")
    with app_process(["--model", str(all_languages_dir)], folder, env={"HF_HUB_CACHE": str(folder / "hub")}) as (
        url,
        _,
    ):
        yield url


# The tabs whose result held the page 300-560 ms at 81 adapters (a trace, legend entry or table column per language).
MANY_ADAPTER_TABS = ["fill", "compare", "sentences", "lens", "map"]


def test_a_result_with_all_81_adapters_never_holds_the_page(browser, app81_url, all_languages_dir):
    """Issue 16, at xmod-base's 81 languages (a tiny random model: what the browser draws depends on the number of
    languages, not on the hidden size): the tabs that drew one trace, legend entry or table column per language
    held the page 300-560 ms; their summary views keep every task under 200 ms."""
    import json

    from benchmarks.longtasks import links

    codes = json.loads((all_languages_dir / "config.json").read_text())["languages"]
    assert len(codes) == 81
    every = links(codes)

    def measured(name: str) -> tuple[float, list]:
        query, chart = every[name]
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.add_init_script(LONG_TASKS)
        page.goto(f"{app81_url}/?{query}")
        try:
            return longest_task_after_link_run(page, chart)
        finally:
            page.close()

    found = {}
    for name in MANY_ADAPTER_TABS:
        found[name] = measured(name)
        if found[name][0] >= LONGEST_TASK_MS:
            # On 2 shared cores another process can stretch one task past the bound: measure once more and keep
            # the shorter. A view that draws a trace or a column per language (300-560 ms here) fails both times.
            found[name] = min(found[name], measured(name))
    print({name: found[name][0] for name in found}, "load", os.getloadavg())
    assert all(longest < LONGEST_TASK_MS for longest, _ in found.values()), found


# ----- nothing a visitor sends becomes markup -------------------------------------------------------------------

# Each payload would leave an element (or run code) if it were rendered as HTML anywhere on the page.
INJECTIONS = [
    '<style id="xss-style">body { display: none !important; }</style>',
    '<img id="xss-img" src="x" onerror="window.__xss = 1">',
    '<form id="xss-form" action="https://phish.example/login"><input name="password"></form>',
    '<a id="xss-a" href="javascript:window.__xss = 2">open</a>',
    '<script id="xss-script">window.__xss = 3</script>',
]
FOUND = """() => {
    const selector = '[id^="xss-"], img[src="x"], form[action*="phish"], a[href^="javascript:"], svg a';
    const hits = [...document.querySelectorAll(selector)].map(e => e.outerHTML.slice(0, 80));
    for (const e of document.querySelectorAll('style, script')) {
        const text = e.textContent;
        if (text.includes('__xss') || text.includes('display: none !important')) hits.push(e.outerHTML.slice(0, 80));
    }
    if (window.__xss !== undefined) hits.push('window.__xss = ' + window.__xss);
    return hits;
}"""


def assert_inert(page, where: str) -> None:
    page.wait_for_timeout(300)
    assert page.evaluate(FOUND) == [], where
    assert page.locator("#fill-run").count() == 1 and page.locator("body").is_visible(), where


def close_toasts(page) -> None:
    for close in page.locator(".toast-close").all():
        close.click()


def edit_cell(page, table: str, row: int, column: int, value: str) -> None:
    page.locator(f"{table} [data-row='{row}'][data-col='{column}']").first.dblclick()
    editor = page.locator(f"{table} textarea[aria-label='Edit cell']").first
    editor.fill(value)
    editor.press("Enter")


def finished(page, selector: str, timeout: float = 60_000) -> None:
    """Wait until the result (selector) or an error toast shows."""
    page.wait_for_selector(f"{selector}, .toast-body", timeout=timeout)


def test_no_payload_becomes_markup_anywhere(browser, tmp_path, base_dir):
    """<style>, <img onerror>, <form>, <a href=javascript:> and <script> through every query parameter and every
    text field (and an uploaded CSV's name, texts and labels, and a head file's names): the DOM must hold no
    element from any of them, and no script may have run. Local mode, so the Model tab's fields are there too."""
    from urllib.parse import quote

    folder = tmp_path / "app"
    folder.mkdir()
    with app_process(["--model", str(base_dir)], folder, env={"HF_HUB_CACHE": str(folder / "hub")}) as (url, _):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("dialog", lambda dialog: dialog.dismiss())
        for payload in INJECTIONS:  # every query parameter
            page.goto(f"{url}/?text={quote(payload)}&languages={quote(payload)}&top_k={quote(payload)}")
            page.wait_for_selector("#fill-run", timeout=30_000)
            page.locator(".toast-body").first.wait_for(state="attached", timeout=30_000)
            assert_inert(page, f"deep link {payload}")
            toasts = " ".join(page.locator(".toast-body").all_inner_texts())
            assert "The link's top_k parameter was not used" in toasts  # dropped by name, the value never echoed
            assert page.locator("#fill-text textarea").input_value() == payload  # the text arrives as text
        page.goto(url)
        page.wait_for_selector("#fill-run", timeout=30_000)
        hostile = " ".join(INJECTIONS)

        page.locator("#fill-text textarea").fill(f"{hostile} <mask>")
        page.click("#fill-run")
        finished(page, "#fill-chart .js-plotly-plot")
        assert_inert(page, "fill the mask")

        page.get_by_role("tab", name="Compare adapters").click()
        page.locator("#compare-text textarea").fill(hostile)
        page.click("#compare-run")
        finished(page, "#compare-tokens .js-plotly-plot .heatmaplayer")
        assert_inert(page, "compare adapters")

        page.get_by_role("tab", name="Across languages").click()
        edit_cell(page, "#sentences-table", 0, 1, hostile)
        edit_cell(page, "#sentences-table", 1, 0, INJECTIONS[1])  # a language code that is markup
        page.click("#sentences-run")
        finished(page, "#sentences-heatmap .js-plotly-plot")
        assert_inert(page, "across languages, bad language")
        close_toasts(page)
        edit_cell(page, "#sentences-table", 1, 0, "de_DE")
        page.click("#sentences-run")
        page.wait_for_selector("#sentences-heatmap .js-plotly-plot", timeout=60_000)
        assert_inert(page, "across languages")

        page.get_by_role("tab", name="Classify").click()
        page.locator("#classify-text textarea").fill(hostile)
        page.click("#classify-run")
        finished(page, "#classify-chart .js-plotly-plot")
        assert_inert(page, "classify")
        close_toasts(page)
        rows = "".join(f'"{text} {i}",{INJECTIONS[i % 2]}\n' for i, text in enumerate(INJECTIONS * 4))
        csv_file = tmp_path / '<img src=x onerror="window.__xss=4">.csv'
        csv_file.write_text("text,label\n" + rows, encoding="utf-8")
        page.locator("#classify-upload input[type=file]").set_input_files(str(csv_file))
        page.wait_for_timeout(1000)
        page.click("#classify-train")
        page.wait_for_selector(
            "#classify-transfer-chart .js-plotly-plot, #classify-loss .js-plotly-plot", timeout=120_000
        )
        page.wait_for_timeout(1000)
        assert INJECTIONS[0][:20] in page.locator("#classify-summary").inner_text()  # the labels, as text
        assert_inert(page, "transfer lab")

        head = _hostile_head(tmp_path, base_dir)
        page.locator("#classify-head-file input[type=file]").set_input_files(str(head))
        page.locator(".toast-body").first.wait_for(timeout=30_000)
        assert_inert(page, "head file")
        close_toasts(page)

        page.get_by_role("tab", name="Model").click()
        page.locator("#model-reference textarea, #model-reference input").first.fill(INJECTIONS[1])
        page.click("#model-load")
        page.click("#model-load-confirm")
        page.locator(".toast-body").first.wait_for(timeout=30_000)
        assert_inert(page, "model reference")
        page.close()


def _hostile_head(tmp_path, base_dir):
    """A probe head file whose labels, language and model name are payloads."""
    import torch

    from xmod_explorer.classify import ProbeHead

    hidden = 32
    head = ProbeHead(
        torch.zeros(2, hidden),
        torch.zeros(2),
        torch.zeros(hidden),
        torch.ones(hidden),
        [INJECTIONS[2], INJECTIONS[3]],
        INJECTIONS[4],
        INJECTIONS[0],
    )
    return head.save(tmp_path / "hostile.safetensors")


# ----- Stop and a closed tab stop the work on the server -------------------------------------------------------


def server_cpu(process, seconds: float = 2.0) -> float:
    """The share of one core (percent) the server process used over the next few seconds."""
    return process.cpu_percent(interval=seconds)


def test_stop_and_a_closed_tab_stop_the_training_on_the_server(browser, tmp_path, wide_dir, tokenizer):
    """The lab on a model as wide as xmod-base with 1,500 long rows: minutes of sentence features. Stop, and then
    closing the tab during a second run, must each leave the server idle within seconds."""
    import re

    import psutil

    word = next(token for token in tokenizer.get_vocab() if token.isalpha() and len(token) > 2)
    rows = "".join(f"{(word + ' ') * 150},{'ab'[i % 2]}\n" for i in range(1500))
    data = tmp_path / "long.csv"
    data.write_text("text,label\n" + rows, encoding="utf-8")
    folder = tmp_path / "app"
    folder.mkdir()
    with app_process(["--model", str(wide_dir)], folder) as (url, process):
        server = psutil.Process(process.pid)
        for ending in ("Stop", "closed tab"):
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_selector("#fill-run", timeout=30_000)
            page.get_by_role("tab", name="Classify").click()
            page.locator("#classify-upload input[type=file]").set_input_files(str(data))
            page.wait_for_timeout(1500)
            page.click("#classify-train")
            page.get_by_text(re.compile(r"Sentence features: batch \d+ of \d+")).first.wait_for(timeout=120_000)
            # A training pass takes whole cores; on a machine shared with other work it still gets a fifth of one.
            assert server_cpu(server) > 20, "the training should keep the server busy"
            if ending == "Stop":
                page.click("#classify-stop")
            else:
                page.close()
            deadline = time.monotonic() + 30
            while server_cpu(server) > 10:  # an idle server with a page open uses a few percent
                assert time.monotonic() < deadline, f"the server still works 30 s after: {ending}"
            if ending == "Stop":
                page.close()


# ----- any screen, any user: axe-core on every tab with its result, light and dark; a phone-wide page --------------

# The README's screenshots come from here (XMOD_SCREENSHOTS=assets/screenshots), one per tab with its result.
SCREENSHOT_NAMES = {
    "fill": "fill_the_mask",
    "compare": "compare_adapters",
    "sentences": "across_languages",
    "lens": "logit_lens",
    "identify": "which_language",
    "mix": "mix_adapters",
    "map": "map",
    "classify": "classify",
}


def serious_violations(page) -> list:
    from axe_playwright_python.sync_playwright import Axe

    found = Axe().run(page).response["violations"]
    return [
        (v["id"], v["impact"], [node["target"] for node in v["nodes"][:3]])
        for v in found
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize("name", list(LINKS))
def test_axe_finds_no_serious_violation_on_a_tab_with_its_result(browser, app_url, name, theme):
    query, _, chart = LINKS[name]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{app_url}/{query}" + ("&__theme=dark" if theme == "dark" else ""))
    page.wait_for_selector(f"{chart} .js-plotly-plot .main-svg", timeout=90_000)
    page.wait_for_timeout(500)
    assert serious_violations(page) == []
    if theme == "light":
        screenshot(page, SCREENSHOT_NAMES[name])
    else:  # the chart follows the theme: its background lets the page through, its labels are light
        fill = page.locator(f"{chart} .main-svg .gtitle").first.evaluate("e => getComputedStyle(e).fill")
        assert fill not in ("rgb(42, 63, 95)", "rgb(68, 68, 68)"), fill  # Plotly's dark text on a light page
    page.close()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_axe_finds_no_serious_violation_on_the_model_and_about_tabs(browser, app_url, theme):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url + ("/?__theme=dark" if theme == "dark" else "/"))
    page.wait_for_selector("#fill-run", timeout=30_000)
    for tab in ("Model", "About"):
        page.get_by_role("tab", name=tab).click()
        page.wait_for_timeout(500)
        assert serious_violations(page) == [], tab
    page.close()


def test_each_tab_is_one_tab_stop(page):
    """Gradio keeps a hidden copy of the tab bar; its buttons must not be in the keyboard order as well."""
    hidden = page.locator('.tab-container[aria-hidden="true"] button')
    page.wait_for_function(
        """() => [...document.querySelectorAll('.tab-container[aria-hidden="true"] button')]
            .every(button => button.tabIndex === -1)""",
        timeout=10_000,
    )
    assert hidden.count() >= 8


@pytest.mark.parametrize("name", list(LINKS))
def test_a_phone_wide_page_does_not_scroll_sideways(browser, app_url, name):
    query, _, chart = LINKS[name]
    page = browser.new_page(viewport={"width": 360, "height": 740})
    page.goto(f"{app_url}/{query}")
    page.wait_for_selector(f"{chart} .js-plotly-plot .main-svg", timeout=90_000)
    page.wait_for_timeout(500)
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    run = page.locator(f"#{LINKS[name][2].split('-')[0][1:]}-run").first.bounding_box()
    assert run is None or run["x"] + run["width"] <= 360
    chart_box = page.locator(f"{chart} .js-plotly-plot").first.bounding_box()
    assert chart_box["x"] + chart_box["width"] <= 362  # the chart shrank with the page
    screenshot(page, f"phone_{SCREENSHOT_NAMES[name]}")
    page.close()
