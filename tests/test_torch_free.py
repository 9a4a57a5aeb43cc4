"""The lean runtime side imports without PyTorch (a Jetson needs numpy, OpenCV and ONNX Runtime/TensorRT)."""
from __future__ import annotations

import subprocess
import sys

from conftest import REPO

TORCH_FREE = ("mrfs_edge", "mrfs_edge.data", "mrfs_edge.metrics", "mrfs_edge.backends", "mrfs_edge.runtime",
              "mrfs_edge.contract", "mrfs_edge.assets", "mrfs_edge.cli", "mrfs_edge.errors")


def test_runtime_packages_import_with_torch_unimportable() -> None:
    code = ("import sys\n"
            "sys.modules['torch'] = None  # any 'import torch' now raises ImportError\n"
            f"import importlib\nfor name in {TORCH_FREE!r}:\n    importlib.import_module(name)\n"
            "import mrfs_edge.data as d, mrfs_edge.metrics as m\n"
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
