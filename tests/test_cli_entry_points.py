"""The console scripts setup.py declares: each names a callable that is a command (``--help`` exits 0).

Read from setup.py itself, not the installed metadata, so a new or renamed entry point is checked
before anyone reinstalls the package.
"""
from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[1] / "setup.py"
SCRIPT_DIRS = ("export", "runtime", "calibration", "benchmarks")


def console_scripts() -> dict[str, str]:
    """``{command: "module:function"}`` from the ``entry_points`` argument of ``setup()``."""
    tree = ast.parse(SETUP.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            declared = ast.literal_eval(node.value)["console_scripts"]
            return dict(tuple(part.strip() for part in line.split("=", 1)) for line in declared)
    raise AssertionError("setup.py declares no entry_points")


SCRIPTS = console_scripts()


def _resolve(target: str):
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def test_every_command_of_the_brief_is_declared():
    assert set(SCRIPTS) >= {"mrfs-export-onnx", "mrfs-build-engine", "mrfs-calibrate", "mrfs-run", "mrfs-register",
                            "mrfs-benchmark", "mrfs-runtime-fps", "mrfs-train", "mrfs-model-card"}


def test_every_script_beside_the_package_has_an_entry_point():
    """Each export/ runtime/ calibration/ benchmarks/ script calls an entry function a console script also names."""
    root = SETUP.parent
    targets = {target.split(":")[1] + "@" + target.split(":")[0] for target in SCRIPTS.values()}
    for folder in SCRIPT_DIRS:
        for script in sorted((root / folder).glob("*.py")):
            tree = ast.parse(script.read_text(encoding="utf-8"))
            imports = [f"{alias.name}@{node.module}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                       and (node.module or "").startswith("mrfs_edge.") for alias in node.names]
            assert any(i in targets for i in imports), f"{script.relative_to(root)}: {imports} not in setup.py"


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_entry_point_resolves_to_a_callable_whose_help_exits_0(name, monkeypatch, capsys):
    if name in ("mrfs-train",):
        pytest.importorskip("torch")
    entry = _resolve(SCRIPTS[name])
    assert callable(entry)
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    with pytest.raises(SystemExit) as stopped:
        entry()
    assert stopped.value.code in (0, None)
    assert capsys.readouterr().out.startswith("usage: ")
