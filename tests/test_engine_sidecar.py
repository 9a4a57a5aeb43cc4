"""Engine sidecars: round trip, the portability rule and one-line refusals (no TensorRT needed)."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from fake_tensorrt import tiny_contract

from mrfs_edge.backends.sidecar import (
    CalibrationInfo,
    EngineSidecar,
    check_engine_bytes,
    check_engine_compatible,
    read_sidecar,
    same_tensorrt,
    sidecar_path,
    write_sidecar,
)
from mrfs_edge.core.errors import ModelFileError

REPO = Path(__file__).resolve().parents[1]


def make_sidecar(engine: Path, **overrides: object) -> EngineSidecar:
    data = b"plan bytes"
    engine.write_bytes(data)
    values: dict = dict(
        engine_file=engine.name, engine_sha256=hashlib.sha256(data).hexdigest(), tensorrt_version="8.6.2",
        gpu_name="Orin", compute_capability=(8, 7), precision="fp16", strongly_typed=False, quant=None,
        dla_core=None, pins={"fp32": ["/norm/Pow"]}, input_shapes={"visible": [1, 3, 32, 64]}, profiles=[],
        onnx_file="tiny.onnx", onnx_sha256="ab" * 32, build_time_s=1.5, built_at="2025-01-01T00:00:00+00:00",
        toolkit_version="0.1.0", contract=tiny_contract(), checkpoint_sha256="cd" * 32)
    values.update(overrides)
    return EngineSidecar(**values)


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    sidecar = make_sidecar(engine, calibration=CalibrationInfo("entropy", "ef" * 32, 4, "calib.cache"),
                           profiles=[{"visible": [[1, 3, 32, 32], [1, 3, 64, 64], [2, 3, 128, 128]]}])
    path = write_sidecar(engine, sidecar)
    assert path == tmp_path / "model.engine.json" == sidecar_path(engine)
    loaded = read_sidecar(engine)
    assert loaded == sidecar
    assert loaded.compute_capability == (8, 7) and isinstance(loaded.compute_capability, tuple)
    assert loaded.contract.fp32_nodes == ["/head/Conv"]


def test_same_machine_is_accepted(tmp_path: Path) -> None:
    sidecar = make_sidecar(tmp_path / "m.engine")
    check_engine_compatible(sidecar, "8.6.2", "Orin", (8, 7))
    check_engine_compatible(sidecar, "8.6.2.3", "Jetson AGX Orin", (8, 7))   # same arch, other board


def test_other_tensorrt_and_gpu_is_refused_in_one_line(tmp_path: Path) -> None:
    sidecar = make_sidecar(tmp_path / "model.engine")
    with pytest.raises(ModelFileError) as caught:
        check_engine_compatible(sidecar, "10.3.0", "RTX 4090", (8, 9))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("model.engine: built with TensorRT 8.6.2 for Orin (sm_87), "
                              "this machine has TensorRT 10.3.0 on RTX 4090 (sm_89)")
    assert message.endswith("rebuild it with: python export/build_engine.py --onnx tiny.onnx --fp16")


@pytest.mark.parametrize("running", ["8.6.1", "8.7.2", "10.3.0"])
def test_any_other_release_is_refused(tmp_path: Path, running: str) -> None:
    with pytest.raises(ModelFileError, match="TensorRT 8.6.2"):
        check_engine_compatible(make_sidecar(tmp_path / "m.engine"), running, "Orin", (8, 7))


def test_other_compute_capability_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"\(sm_87\).*\(sm_72\)"):
        check_engine_compatible(make_sidecar(tmp_path / "m.engine"), "8.6.2", "Xavier", (7, 2))


@pytest.mark.parametrize("built, running, same", [
    ("10.3.0", "10.3.0.30", True), ("10.3.0.30", "10.3.0.30", True), ("10.3.0.30", "10.3.0.26", False),
    ("8.5.2.2", "8.5.2", True), ("8.5.2", "8.5.3", False), ("10.3", "10.3.0", True)])
def test_release_rule_includes_build_number_when_both_have_one(built: str, running: str, same: bool) -> None:
    assert same_tensorrt(built, running) is same


def test_missing_sidecar_is_a_one_line_refusal(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(ModelFileError) as caught:
        read_sidecar(engine)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"{engine}: no sidecar model.engine.json")


def test_missing_engine_and_corrupt_sidecar_are_refused(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    with pytest.raises(ModelFileError, match="no such engine"):
        read_sidecar(engine)
    engine.write_bytes(b"plan")
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(ModelFileError, match="sidecar model.engine.json is unreadable"):
        read_sidecar(engine)
    sidecar_path(engine).write_text('{"engine_file": "model.engine"}')
    with pytest.raises(ModelFileError, match="unreadable"):
        read_sidecar(engine)


def test_engine_replaced_after_build_is_refused(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    sidecar = make_sidecar(engine)
    check_engine_bytes(sidecar, engine, hashlib.sha256(engine.read_bytes()).hexdigest())
    with pytest.raises(ModelFileError, match="does not match its sidecar model.engine.json"):
        check_engine_bytes(sidecar, engine, hashlib.sha256(b"another plan").hexdigest())


def test_engine_modules_import_without_tensorrt_cuda_or_torch() -> None:
    code = ("import sys; sys.modules['tensorrt'] = None; sys.modules['torch'] = None\n"
            "import mrfs_edge.backends.sidecar, mrfs_edge.engine, mrfs_edge.backends.tensorrt_runner\n"
            "import mrfs_edge.calibration.trt_calibrator\n"
            "loaded = [m for m in ('tensorrt', 'torch', 'cuda', 'pycuda', 'onnxruntime') if sys.modules.get(m)]\n"
            "assert not loaded, loaded")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            env={"PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
