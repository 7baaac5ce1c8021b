"""The package's layers hold: imports go one way, with no cycles; Gradio stays in the UI, torch out of it.

Read from the source with ast (nothing is imported), so a lazy import inside a function counts too.
Imports under `if TYPE_CHECKING:` are annotations only and do not count.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "xmod_explorer"

# Lower ranks may not import higher ones. Same rank: allowed, as long as there is no cycle.
# ARCHITECTURE.md explains the layers; a new module must be placed here before its tests pass.
RANKS = {
    # leaves: maths, result objects, facts; anyone may use them
    "errors": 0,
    "limits": 0,
    "languages": 0,
    "machine": 0,
    "budget": 0,
    "jobs": 0,
    "tokens": 0,
    "masks": 0,
    "similarity": 0,
    "stats": 0,
    "classify": 0,
    "lens": 0,
    "scoring": 0,
    "detect": 0,
    "projection": 0,
    "mini.tokenizer": 0,
    "mini.mlm": 0,
    "compat": 0,  # every difference between transformers versions
    "streaming_pca": 0,  # 2-D PCA from sums gathered batch by batch (batch mode's maps)
    # where files come from, settings, tiny checkpoints, figures from result objects
    "hub": 1,
    "checks": 1,  # config.json and tokenizer files checked before transformers sees them
    "settings": 1,
    "tiny": 1,
    "plots": 1,
    # defaults and data; the two libraries that run X-MOD; the mini model's own tools
    "defaults": 2,
    "tokenizers": 2,
    "datasets": 2,
    "adapter_format": 2,
    "quantization": 2,  # int8 on the CPU: which Linear layers, through torch's dynamic quantisation
    "backends": 2,
    "mini.batches": 2,
    "mini.corpus": 2,
    "mini.evaluate": 2,
    "mini.export": 2,
    "mini.train": 2,
    "mini.card": 2,
    "mini.examples": 2,
    "mini.post_hoc": 2,
    "mini.__main__": 2,
    "mini": 2,
    "batch.tables": 2,  # corpus files read row by row, result files written whole, with their metadata
    "batch.processes": 2,  # which process of how many (torch.distributed, through accelerate)
    # reading checkpoints
    "loading": 3,
    # the engine, and the converter built on the loader
    "engine": 4,
    "batching": 4,  # many requests through the engine in shared forward passes
    "convert": 4,
    "": 4,  # the package's __init__ re-exports the engine
    # the transfer lab, above the engine
    "lab": 5,
    # batch mode over a corpus, above the engine beside the lab: operations, blocks, resuming, merging
    "batch": 5,
    "batch.operations": 5,
    "batch.runner": 5,
    # the faces: web app and command line
    "ui": 6,
    "ui.allocator": 6,
    "ui.sessions": 6,
    "ui.serving": 6,
    "ui.http_guard": 6,
    "ui.gradio_upkeep": 6,
    "ui.about": 6,
    "ui.common": 6,
    "ui.api": 6,
    "ui.fill_mask": 6,
    "ui.compare": 6,
    "ui.sentences": 6,
    "ui.classify": 6,
    "ui.links": 6,
    "ui.lens": 6,
    "ui.identify": 6,
    "ui.mix": 6,
    "ui.maps": 6,
    "ui.model": 6,
    "ui.layout": 6,
    "ui.server": 6,
    "cli": 6,
    "__main__": 6,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path) -> tuple[set[str], set[str]]:
    """(our modules imported at run time, top-level third-party packages imported at run time)."""
    ours: set[str] = set()
    theirs: set[str] = set()
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                record(alias.name, [])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            record(node.module, [alias.name for alias in node.names])
        for child in ast.iter_child_nodes(node):
            visit(child)

    def record(module: str, names: list[str]) -> None:
        if module == "xmod_explorer" or module.startswith("xmod_explorer."):
            base = module.removeprefix("xmod_explorer").removeprefix(".")
            submodules = [f"{base}.{name}".strip(".") for name in names if f"{base}.{name}".strip(".") in modules]
            ours.update(submodules or [base])
        else:
            theirs.add(module.split(".")[0])

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return ours, theirs


def graph() -> dict[str, tuple[set[str], set[str]]]:
    return {module_name(path): imports_of(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    unplaced = sorted(set(graph()) - set(RANKS))
    assert unplaced == [], f"place these modules in a layer (tests/test_architecture.py RANKS): {unplaced}"


def test_imports_go_down_the_layers():
    upward = [
        f"{module} (layer {RANKS[module]}) imports {target} (layer {RANKS[target]})"
        for module, (ours, _) in graph().items()
        for target in sorted(ours)
        if target != module and RANKS.get(target, -1) > RANKS.get(module, 99)
    ]
    assert upward == []


def test_no_import_cycles():
    edges = {module: {t for t in ours if t != module} for module, (ours, _) in graph().items()}
    cycles = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                walk(target, [*path, target])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            walk(module, [module])
    assert cycles == []


def test_gradio_only_in_the_ui_and_torch_never_in_it():
    for module, (_, theirs) in graph().items():
        face = module.startswith("ui") or module in ("cli", "__main__")
        if not face:
            assert "gradio" not in theirs, f"{module} imports gradio; only ui/ may"
        if module.startswith("ui"):
            assert "torch" not in theirs, f"{module} imports torch; the UI renders results, the engine computes them"


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path, monkeypatch):
    """The rules above can fail: a module that imports the lab from the engine's layer is caught."""
    fake = tmp_path / "xmod_explorer"
    fake.mkdir()
    (fake / "engine.py").write_text("def f():\n    from xmod_explorer import lab\n")
    (fake / "lab.py").write_text("from xmod_explorer.engine import f\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    try:
        test_imports_go_down_the_layers()
    except AssertionError as exc:
        assert "engine (layer 4) imports lab (layer 5)" in str(exc)
    else:
        raise AssertionError("an upward import went unnoticed")
    try:
        test_no_import_cycles()
    except AssertionError as exc:
        assert "engine" in str(exc) and "lab" in str(exc)
    else:
        raise AssertionError("a cycle went unnoticed")
