"""setup.py as pip evaluates it on a Jetson (aarch64, JetPack's Python) and on a workstation.

A Jetson install must not pull pip's OpenCV (no GStreamer: ``csi://``/``gst://`` stop working) in
front of JetPack's, and on Python 3.8 (JetPack 5, TensorRT 8.5.2) NumPy must stay below 1.24.
"""
from __future__ import annotations

import ast
from typing import Any, Dict, List

import pytest
from conftest import REPO

packaging = pytest.importorskip("packaging", reason="pytest's own dependency; evaluates environment markers")
from packaging.requirements import Requirement  # noqa: E402
from packaging.specifiers import SpecifierSet  # noqa: E402


def _setup_kwargs() -> Dict[str, Any]:
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    return {k.arg: ast.literal_eval(k.value) for k in call.keywords
            if k.arg in ("install_requires", "extras_require", "python_requires")}


def _resolved(machine: str, python: str) -> Dict[str, Requirement]:
    env = {"platform_machine": machine, "python_version": python, "python_full_version": f"{python}.0",
           "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix", "implementation_name": "cpython"}
    requirements: List[Requirement] = [Requirement(r) for r in _setup_kwargs()["install_requires"]]
    return {r.name: r for r in requirements if r.marker is None or r.marker.evaluate(env)}


@pytest.mark.parametrize("python", ["3.8", "3.10"])
def test_a_jetson_install_keeps_the_system_opencv(python: str) -> None:
    assert "opencv-python-headless" not in _resolved("aarch64", python)
    assert "opencv-python-headless" in _resolved("x86_64", python)
    assert any(Requirement(r).name == "opencv-python-headless" for r in _setup_kwargs()["extras_require"]["opencv"])


def test_numpy_stays_below_1_24_on_python_3_8_and_is_open_above() -> None:
    jetpack5 = _resolved("aarch64", "3.8")["numpy"].specifier
    assert "1.23.5" in jetpack5 and "1.24.0" not in jetpack5 and "1.20.3" not in jetpack5
    newer = _resolved("x86_64", "3.12")["numpy"].specifier
    assert "1.21.5" in newer and "2.1.0" in newer   # JetPack 6's system NumPy and NumPy 2


def test_every_jetpack_python_is_admitted() -> None:
    supported = SpecifierSet(_setup_kwargs()["python_requires"])
    assert all(v in supported for v in ("3.8.10", "3.10.12", "3.12.3"))


def test_no_cuda_python_or_pycuda_extra() -> None:
    extras = _setup_kwargs()["extras_require"]
    names = {Requirement(r).name for group in extras.values() for r in group}
    assert "pycuda" not in extras and not names & {"cuda-python", "pycuda"}
    assert "nvidia-cuda-runtime-cu12" in {Requirement(r).name for r in extras["trt"]}
    assert "nvidia-cuda-runtime-cu12" in {Requirement(r).name for r in extras["dev"]}
