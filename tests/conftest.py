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


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> tuple[Path, Path]:
    """An FP32 and a Q/DQ stand-in ONNX with the contract at 480×640, for tests of the core install.

    On a core-install venv (CI's Python 3.8/3.10 runs, no onnx) ``MRFS_TINY_ONNX_DIR`` names a
    folder where the full environment wrote them (see .ci/run).
    """
    given = os.environ.get("MRFS_TINY_ONNX_DIR")
    if given:
        return Path(given) / "tiny.onnx", Path(given) / "tiny.int8.onnx"
    pytest.importorskip("onnx", reason="writes its stand-in models with onnx (not in the core install)")
    from fake_tensorrt import make_tiny_onnx, tiny_contract

    folder = tmp_path_factory.mktemp("tiny")
    contract = tiny_contract(height=480, width=640)
    return (make_tiny_onnx(folder / "tiny.onnx", contract),
            make_tiny_onnx(folder / "tiny.int8.onnx", contract, qdq=True))


@pytest.fixture(scope="session")
def tiny_onnx(tiny_models) -> Path:
    """The FP32 one of :func:`tiny_models`."""
    return tiny_models[0]
