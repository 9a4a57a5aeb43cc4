"""The lean runtime side imports without PyTorch (a Jetson needs numpy, OpenCV and ONNX Runtime/TensorRT)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO

# Every module of the layers a Jetson runs: core, io, processing, metrics, backends, engine, runtime.
TORCH_FREE_PACKAGES = ("core", "assets", "io", "processing", "metrics", "backends", "engine", "runtime")
TORCH_FREE = tuple(sorted(
    "mrfs_edge." + ".".join(path.relative_to(REPO / "mrfs_edge").with_suffix("").parts).replace(".__init__", "")
    for package in TORCH_FREE_PACKAGES for path in (REPO / "mrfs_edge" / package).rglob("*.py")))


def test_runtime_packages_import_with_torch_unimportable() -> None:
    code = ("import sys\n"
            "sys.modules['torch'] = None  # any 'import torch' now raises ImportError\n"
            f"import importlib\nfor name in {TORCH_FREE!r}:\n    importlib.import_module(name)\n"
            "import mrfs_edge.io as d, mrfs_edge.metrics as m\n"
            "assert d.PairFolder and m.mean_iou\n"
            "assert sys.modules['torch'] is None\n"
            "print('ok')\n")
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip() == "ok"


def test_the_check_itself_detects_torch_imports() -> None:
    process = subprocess.run([sys.executable, "-c", "import sys; sys.modules['torch'] = None; import mrfs_edge.model"],
                             capture_output=True, text=True, cwd=REPO, timeout=120)
    assert process.returncode != 0 and "torch" in process.stderr


# A Jetson (core install): no PyTorch, no onnx tooling. Set before anything imports them.
_NO_HEAVY = ("import runpy, sys\n"
             "for name in ('torch', 'onnx', 'onnxconverter_common', 'onnxslim', 'modelopt', 'tensorrt'):\n"
             "    sys.modules[name] = None  # any import of it now raises ImportError\n"
             "sys.argv = [sys.argv[1]] + sys.argv[2:]\n"
             "runpy.run_path(sys.argv[0], run_name='__main__')\n")


def _run_without_heavy(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _NO_HEAVY, str(REPO / script), *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_build_engine_help_needs_no_torch_or_onnx(tmp_path: Path) -> None:
    process = _run_without_heavy("export/build_engine.py", "--help", cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    assert "--tf32" in process.stdout and "--onnx" in process.stdout


def test_target_int8_build_from_a_qdq_onnx_needs_no_torch_or_onnx(tmp_path: Path, tiny_models) -> None:
    _, qdq = tiny_models
    process = _run_without_heavy("export/build_engine.py", "--onnx", str(qdq), "--int8", "--output-dir",
                                 str(tmp_path / "out"), cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    assert "Traceback" not in process.stderr
    assert "already holds Q/DQ nodes" in process.stdout + process.stderr
    assert "on the target (Jetson), run: python3 export/build_engine.py --onnx" in process.stdout + process.stderr
    summary = json.loads((tmp_path / "out" / "tiny.int8.target.build.json").read_text())
    assert summary["onnx_for_engine"] == str(qdq) and summary["engine"]["path"] is None
    assert "TensorRT" in summary["engine"]["reason"]


def test_workstation_step_on_a_core_install_names_the_extra(tmp_path: Path, tiny_models) -> None:
    fp32, _ = tiny_models
    process = _run_without_heavy("export/build_engine.py", "--onnx", str(fp32), "--fp16", "--output-dir",
                                 str(tmp_path / "out"), cwd=tmp_path)
    assert process.returncode == 2
    assert process.stderr.strip().splitlines() == [
        "error: FP16 conversion needs onnx, which is not installed: pip install -e '.[export]' "
        "(a workstation step; on the target build from the prepared ONNX)"]


def test_runtime_commands_need_no_torch_or_onnx(tmp_path: Path, tiny_models) -> None:
    fp32, _ = tiny_models
    samples = REPO / "mrfs_edge" / "assets" / "samples"
    process = _run_without_heavy("runtime/run.py", "--model", str(fp32), "--visible", str(samples / "vi"),
                                 "--infrared", str(samples / "ir"), "--output", str(tmp_path / "out"),
                                 "--no-display", "--max-frames", "3", cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    assert "Traceback" not in process.stderr
    assert len(list((tmp_path / "out").glob("*.jpg"))) == 3
    process = _run_without_heavy("runtime/register.py", "--help", cwd=tmp_path)
    assert process.returncode == 0, process.stderr
