"""The ctypes binding against the real CUDA runtime from the ``nvidia-cuda-runtime-cu12`` wheel.

On this GPU-less machine the library loads and answers what needs no driver (its version), and
what needs one fails as one line; skipped with the reason where the wheel is not installed.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from mrfs_edge.backends.cuda_memory import (
    CudaError,
    gpu_properties,
    library_path,
    open_cuda_memory,
    runtime_version,
)


def wheel_library() -> Path:
    try:
        spec = importlib.util.find_spec("nvidia.cuda_runtime")
    except ImportError:
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "lib" / "libcudart.so.12"
        if path.is_file():
            return path
    pytest.skip("needs the nvidia-cuda-runtime-cu12 wheel (pip install nvidia-cuda-runtime-cu12==12.9.79)")


@pytest.fixture()
def wheel(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("MRFS_EDGE_CUDART", raising=False)
    return wheel_library()


def gpu_driver_present() -> bool:
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvhost-ctrl")   # desktop, Jetson


def test_the_wheel_library_is_found_and_answers_its_version(wheel: Path) -> None:
    assert Path(library_path()) == wheel
    assert runtime_version() == 12090


def test_the_environment_variable_wins_over_the_wheel(wheel: Path, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    link = tmp_path / "libcudart.so.12"
    link.symlink_to(wheel)
    monkeypatch.setenv("MRFS_EDGE_CUDART", str(link))
    assert library_path() == str(link)


@pytest.mark.skipif(gpu_driver_present(), reason="a GPU driver is present: the no-driver answer cannot be seen")
def test_without_a_driver_the_gpu_query_is_one_line_from_cuda(wheel: Path) -> None:
    with pytest.raises(CudaError) as caught:
        gpu_properties()
    assert str(caught.value) == ("CUDA: no usable GPU driver (cudaGetDeviceCount: cudaErrorInsufficientDriver: "
                                 "CUDA driver version is insufficient for CUDA runtime version)")
    with pytest.raises(CudaError, match=r"^CUDA: no usable GPU driver \(cudaSetDevice: cudaErrorInsufficientDriver"):
        open_cuda_memory()
