"""Shared test fixtures: paths to ../shared data and small deterministic checkpoints."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MRFS_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"
SPECS = SHARED / "specs"


def needs_shared(path: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not present (../shared not mounted)")


@pytest.fixture(scope="session")
def mfnet_dir() -> Path:
    path = SHARED_DATA / "mfnet_subset"
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """One PyTorch intra-op thread for a module: on a loaded 2-core machine more threads spin-wait
    and run ~20× slower; CI's figures do not depend on the thread count."""
    torch = pytest.importorskip("torch")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def demo_onnx(tmp_path_factory) -> Path:
    """The bundled demo checkpoint exported once per test session at 480×640 (float I/O, logits).

    Shared by the runtime, calibration and benchmark tests so CI pays for one export.
    """
    pytest.importorskip("torch")
    from mrfs_edge.assets import DEMO_CHECKPOINT
    from mrfs_edge.core.export_options import ExportOptions
    from mrfs_edge.export import export_onnx

    path = tmp_path_factory.mktemp("demo_onnx") / "mrfs_b0_demo_480x640.onnx"
    export_onnx(DEMO_CHECKPOINT, path, ExportOptions(height=480, width=640, parity_pairs=1))
    return path
