"""The ctypes binding to libcudart, run in full against the fake CUDA runtime (tests/doubles).

The fake keeps "device" memory in host memory and checks what CUDA documents (see
fake_cudart.c), so these tests show the binding's calls, copies, graphs, errors and per-thread
device binding without a GPU. Each fake configuration (device count, driver) is its own copy of
the library, because the fake reads its environment once per loaded instance.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
from doubles.cudart_double import build_fake_cudart, fake_kernel, live_allocations

from mrfs_edge.backends import cuda_memory
from mrfs_edge.backends.cuda_memory import (
    CudaError,
    gpu_properties,
    library_path,
    open_cuda_memory,
    runtime_version,
)

INVALID_HANDLE = 400   # cudaErrorInvalidResourceHandle


@pytest.fixture(scope="session")
def fake_library(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``build(config)``: a fake libcudart of its own for one configuration."""
    def build(config: str) -> Path:
        try:
            return build_fake_cudart(tmp_path_factory.getbasetemp() / "fake_cudart" / config)
        except RuntimeError as exc:
            pytest.skip(str(exc))
    return build


@pytest.fixture()
def use_fake(fake_library: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """``use_fake(devices=1, driver="")``: point the binding at a fake so configured."""
    def use(devices: int = 1, driver: str = "") -> Path:
        monkeypatch.setenv("FAKE_CUDART_DEVICES", str(devices))
        monkeypatch.setenv("FAKE_CUDART_DRIVER", driver)
        path = fake_library(f"devices{devices}-{driver or 'ok'}")
        monkeypatch.setenv("MRFS_EDGE_CUDART", str(path))
        return path
    return use


@pytest.fixture()
def memory(use_fake: Callable[..., Path]) -> Iterator[cuda_memory.CudaMemory]:
    use_fake()
    handle = open_cuda_memory()
    yield handle
    handle.close()


def run_in_thread(work: Callable[[], None]) -> None:
    """Run ``work`` on a fresh thread (as the pipeline's model thread) and re-raise its error."""
    errors = []

    def target() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


# ------------------------------------------------------------------------ finding the library
def test_the_library_named_by_the_environment_is_used(use_fake: Callable[..., Path]) -> None:
    path = use_fake()
    assert library_path() == str(path)
    assert runtime_version() == 12060
    assert gpu_properties() == ("Fake Jetson Orin (host memory)", (8, 7))
    memory = open_cuda_memory()
    assert memory.library == str(path)
    memory.close()


def test_an_unloadable_environment_path_is_one_line_naming_the_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MRFS_EDGE_CUDART", str(tmp_path / "libcudart.so.12"))
    with pytest.raises(CudaError, match=r"^MRFS_EDGE_CUDART=.*libcudart\.so\.12: cannot load it") as caught:
        open_cuda_memory()
    assert "\n" not in str(caught.value)


def test_no_library_anywhere_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MRFS_EDGE_CUDART", raising=False)
    monkeypatch.setattr(cuda_memory, "WHEEL_LIBRARY", ("mrfs_edge_no_such_package", "libcudart.so.12"))
    monkeypatch.setattr(cuda_memory, "SYSTEM_LIBRARIES", ("libcudart-absent.so.99",))
    with pytest.raises(CudaError) as caught:
        gpu_properties()
    message = str(caught.value)
    assert "\n" not in message and message.startswith("CUDA runtime library (libcudart) not found")
    assert "JetPack" in message and "pip install nvidia-cuda-runtime-cu12" in message


# ------------------------------------------------------------------------- buffers and copies
def test_data_goes_through_pinned_and_device_memory_unchanged(memory: cuda_memory.CudaMemory) -> None:
    data = np.random.default_rng(0).normal(size=(3, 48, 64)).astype(np.float32)
    device = memory.alloc(data.nbytes)
    staging = memory.pinned(data.nbytes).view(np.float32).reshape(data.shape)
    staging[...] = data
    memory.htod_async(device, staging)
    result = np.zeros_like(data)
    memory.dtoh_async(result, device)
    memory.synchronize()
    np.testing.assert_array_equal(result, data)
    assert device > 2 ** 32   # a 64-bit address survived every call (argtypes, not C int)
    memory.free(device)


def test_close_frees_every_buffer_stream_and_graph(use_fake: Callable[..., Path]) -> None:
    path = use_fake()
    before = live_allocations(path)
    memory = open_cuda_memory()
    device = memory.alloc(256)
    memory.alloc(512)
    memory.pinned(128)
    memory.capture_graph(lambda: memory.htod_async(device, np.ones(64, np.uint8)))
    assert live_allocations(path) == before + 3
    memory.close()
    assert live_allocations(path) == before
    memory.close()   # a second close does nothing
    with pytest.raises(CudaError, match="used after close"):
        memory.alloc(16)


def test_a_failed_call_is_one_line_naming_the_function_and_cuda_error(memory: cuda_memory.CudaMemory) -> None:
    memory.alloc(64)
    with pytest.raises(CudaError) as caught:
        memory.free(0xDEAD0000)
    assert str(caught.value) == "CUDA: call failed (cudaFree: cudaErrorInvalidValue: invalid argument)"


def test_a_copy_into_host_memory_posing_as_device_memory_fails(memory: cuda_memory.CudaMemory) -> None:
    host = np.zeros(16, np.uint8)
    with pytest.raises(CudaError, match=r"\(cudaMemcpyAsync: cudaErrorInvalidValue"):
        memory.htod_async(host.ctypes.data, np.ones(16, np.uint8))


def test_a_non_contiguous_array_is_refused_before_an_async_copy(memory: cuda_memory.CudaMemory) -> None:
    device = memory.alloc(64 * 4)
    with pytest.raises(CudaError, match="source array must be C-contiguous"):
        memory.htod_async(device, np.zeros((8, 16), np.float32)[:, ::2])
    read_only = np.zeros(64, np.float32)
    read_only.setflags(write=False)
    for destination in (np.zeros(128, np.float32)[::2], read_only):
        with pytest.raises(CudaError, match="destination array must be C-contiguous and writeable"):
            memory.dtoh_async(destination, device)


def test_a_negative_size_is_refused(memory: cuda_memory.CudaMemory) -> None:
    with pytest.raises(CudaError, match="alloc: nbytes must be >= 0, not -1"):
        memory.alloc(-1)


# ---------------------------------------------------------------------------------- graphs
def test_a_captured_graph_replays_its_copies_on_each_launch(memory: cuda_memory.CudaMemory) -> None:
    first = np.arange(256, dtype=np.float32)
    device = memory.alloc(first.nbytes)
    memory.htod(device, first)
    staging = memory.pinned(first.nbytes).view(np.float32)
    graph = memory.capture_graph(lambda: memory.dtoh_async(staging, device))
    memory.synchronize()
    assert not staging.any()   # capture records the copy, it does not run it
    memory.launch_graph(graph)
    memory.synchronize()
    np.testing.assert_array_equal(staging, first)
    memory.htod(device, first * 2)
    memory.launch_graph(graph)
    memory.synchronize()
    np.testing.assert_array_equal(staging, first * 2)


def test_an_error_inside_a_capture_is_reported_and_the_stream_stays_usable(memory: cuda_memory.CudaMemory) -> None:
    device = memory.alloc(64)
    with pytest.raises(CudaError, match=r"\(cudaStreamSynchronize: cudaErrorStreamCaptureUnsupported"):
        memory.capture_graph(memory.synchronize)   # synchronising a capturing stream is prohibited
    memory.htod(device, np.full(64, 7, np.uint8))
    back = np.zeros(64, np.uint8)
    memory.dtoh_async(back, device)
    memory.synchronize()
    assert (back == 7).all()


# -------------------------------------------------------------------------- no GPU, no driver
def test_no_gpu_is_one_line(use_fake: Callable[..., Path]) -> None:
    use_fake(devices=0)
    expected = "CUDA: no CUDA GPU visible (cudaGetDeviceCount: cudaErrorNoDevice: no CUDA-capable device is detected)"
    with pytest.raises(CudaError) as caught:
        gpu_properties()
    assert str(caught.value) == expected
    with pytest.raises(CudaError, match=r"^CUDA: no CUDA GPU visible \(cudaSetDevice: cudaErrorNoDevice"):
        open_cuda_memory()


def test_a_driver_older_than_the_runtime_is_one_line(use_fake: Callable[..., Path]) -> None:
    use_fake(driver="insufficient")
    assert runtime_version() == 12060   # the library itself loads and answers
    with pytest.raises(CudaError, match=r"^CUDA: no usable GPU driver \(cudaGetDeviceCount: "
                                        r"cudaErrorInsufficientDriver: CUDA driver version is insufficient"):
        gpu_properties()


def test_a_device_that_does_not_exist_is_named(use_fake: Callable[..., Path]) -> None:
    use_fake(devices=2)
    with pytest.raises(CudaError, match=r"^CUDA: device 2 does not exist \(2 visible\)$"):
        gpu_properties(2)
    with pytest.raises(CudaError, match=r"\(cudaSetDevice: cudaErrorInvalidDevice: invalid device ordinal\)"):
        open_cuda_memory(2)


# ------------------------------------------------------------------------------ threads
def test_device_1_memory_works_from_the_model_thread(use_fake: Callable[..., Path]) -> None:
    """Opened on the main thread, used on another (as ``Pipeline._model`` does): the fresh thread
    starts on device 0, so without binding device 1 there a kernel launch into the memory's
    stream fails (CUDA: a launch into another device's stream fails)."""
    kernel = fake_kernel(use_fake(devices=2))
    memory = open_cuda_memory(device=1)
    data = np.arange(1000, dtype=np.float32)
    source, target = memory.alloc(data.nbytes), memory.alloc(data.nbytes)
    result = np.zeros_like(data)
    unbound = []
    run_in_thread(lambda: unbound.append(kernel(target, source, data.nbytes, memory.stream_handle)))
    assert unbound == [INVALID_HANDLE]   # what an unbound model thread would get from TensorRT

    def infer() -> None:
        memory.htod_async(source, data)
        assert kernel(target, source, data.nbytes, memory.stream_handle) == 0   # TensorRT's enqueue
        memory.dtoh_async(result, target)
        memory.synchronize()

    run_in_thread(infer)
    np.testing.assert_array_equal(result, data)
    memory.close()


def test_a_graph_captured_on_one_thread_launches_from_another(use_fake: Callable[..., Path]) -> None:
    kernel = fake_kernel(use_fake(devices=2))
    memory = open_cuda_memory(device=1)
    data = np.arange(64, dtype=np.int32)
    source, target = memory.alloc(data.nbytes), memory.alloc(data.nbytes)
    staging = memory.pinned(data.nbytes).view(np.int32)
    graphs = []

    def capture() -> None:
        memory.htod(source, data)

        def enqueue() -> None:
            assert kernel(target, source, data.nbytes, memory.stream_handle) == 0
            memory.dtoh_async(staging, target)

        graphs.append(memory.capture_graph(enqueue))

    run_in_thread(capture)
    run_in_thread(lambda: (memory.launch_graph(graphs[0]), memory.synchronize()))
    np.testing.assert_array_equal(staging, data)
    memory.close()


def test_two_devices_used_in_turn_on_one_thread(use_fake: Callable[..., Path]) -> None:
    """Each call binds its own memory's device, even after the other memory switched it."""
    kernel = fake_kernel(use_fake(devices=2))
    memories = [open_cuda_memory(device=0), open_cuda_memory(device=1)]
    data = np.arange(32, dtype=np.uint8)
    buffers = [(memory.alloc(32), memory.alloc(32)) for memory in memories]
    for _ in range(2):
        for memory, (source, target) in zip(memories, buffers):
            memory.htod(source, data)
            assert kernel(target, source, 32, memory.stream_handle) == 0
    for memory in memories:
        memory.close()
