"""The README's two commands stay true: CI runs the test command verbatim, and the flags it names exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def commands() -> list[str]:
    return re.findall(r"```(?:bash|sh)\n(.+?)\n```", README, flags=re.S)


def test_first_two_blocks_run_the_app_and_the_tests():
    run_app, run_tests = commands()[:2]
    assert run_app.strip().endswith("python app.py")
    assert "requirements.txt" in run_app
    assert run_tests.strip().endswith("python -m pytest") and "requirements-dev.txt" in run_tests


def test_ci_runs_the_readme_test_command_verbatim():
    run_tests = commands()[1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert run_tests in ci.splitlines()


def test_space_front_matter_names_the_tested_gradio():
    import gradio

    front = README.split("---")[1]
    assert "sdk: gradio" in front and "app_file: app.py" in front
    assert f"sdk_version: {gradio.__version__}" in front
    requirements = (ROOT / "requirements.txt").read_text()
    assert f"gradio=={gradio.__version__}" in requirements


def test_space_preloads_what_the_default_model_needs():
    """preload_from_hub fills the Space's cache with xmod-base's main branch and XLM-R's tokenizer files, the
    format being `- repo file1,file2` (Spaces configuration reference)."""
    from xmod_explorer.defaults import DEFAULT_MODEL
    from xmod_explorer.tokenizers import XLMR, XLMR_FILES

    front = README.split("---")[1]
    preload = front.split("preload_from_hub:")[1]
    assert f"  - {DEFAULT_MODEL} config.json,pytorch_model.bin\n" in preload
    assert f"  - {XLMR} {','.join(XLMR_FILES)}\n" in preload
    models = front.split("models:")[1].split("preload_from_hub:")[0]
    for repo in (DEFAULT_MODEL, XLMR, "facebook/xmod-large-prenorm", "AdapterHub/xmod-base", "ZurichNLP/swissbert"):
        assert f"  - {repo}\n" in models
