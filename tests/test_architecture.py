"""The package's layer order holds: no import runs up the stack, none between sibling packages.

The contract is ``.importlinter`` at the repository root (import-linter's ``layers`` contract).
grimp, which import-linter builds on, reads every import statement of a module, those inside
functions included; the tests below prove that rather than trust it, because the old package
hid a cycle through all its sub-packages behind 43 function-level imports.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp", reason="import-linter (the dev extra) checks the layer contract")
pytest.importorskip("importlinter", reason="import-linter (the dev extra) checks the layer contract")

REPO = Path(__file__).resolve().parents[1]
LINT = ("import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename='.importlinter', no_cache=True))")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", LINT], cwd=root, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def _subpackage_graph() -> dict[str, set[str]]:
    graph = grimp.build_graph("mrfs_edge", cache_dir=None)
    edges: dict[str, set[str]] = defaultdict(set)
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            a, b = module.split(".")[1:2], imported.split(".")[1:2]
            if a and b and a != b:
                edges[a[0]].add(b[0])
    return edges


def test_layer_contract_is_kept() -> None:
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def test_the_checker_sees_imports_inside_functions() -> None:
    """``open_runner`` imports the TensorRT runner only when a model needs it: grimp must see that."""
    graph = grimp.build_graph("mrfs_edge", cache_dir=None)
    details = graph.get_import_details(importer="mrfs_edge.backends", imported="mrfs_edge.backends.tensorrt_runner")
    assert details and all(line["line_contents"].startswith("from ") for line in details)
    source = (REPO / "mrfs_edge/backends/__init__.py").read_text().splitlines()
    assert source[details[0]["line_number"] - 1].startswith("            from "), "expected an indented, in-function import"


def test_an_upward_import_inside_a_function_breaks_the_contract(tmp_path: Path) -> None:
    """The same check on a copy of the package with one lazy import from core up to tools fails."""
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "mrfs_edge", copy / "mrfs_edge", ignore=shutil.ignore_patterns("*.pth", "__pycache__"))
    shutil.copy(REPO / ".importlinter", copy / ".importlinter")
    files = copy / "mrfs_edge/core/files.py"
    files.write_text(files.read_text() + "\n\ndef _lazy():\n    from mrfs_edge.tools import run  # noqa: F401\n")
    result = _lint(copy)
    assert result.returncode != 0
    assert "mrfs_edge.core.files -> mrfs_edge.tools.run" in result.stdout


def test_no_cycle_between_subpackages() -> None:
    edges = _subpackage_graph()
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycle = path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
                pytest.fail("import cycle between sub-packages: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
