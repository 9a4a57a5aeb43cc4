"""The CUDA layer under the TensorRT runner and calibrator, on a real device (skipped without one).

Runs wherever libcudart (JetPack's, the nvidia-cuda-runtime-cu12 wheel's, or MRFS_EDGE_CUDART's)
and an NVIDIA GPU are present, TensorRT or not, so the buffers, copies, stream, graph capture and
per-thread device binding the engine code relies on are checked on GPU machines without TensorRT.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from mrfs_edge.backends.cuda_memory import (
    CudaError,
    gpu_properties,
    open_cuda_memory,
    runtime_version,
)

pytestmark = pytest.mark.cuda


@pytest.fixture()
def memory():
    try:
        handle = open_cuda_memory()
    except CudaError as exc:
        pytest.skip(f"needs libcudart and a CUDA GPU: {exc}")
    yield handle
    handle.close()


def test_device_properties_name_the_gpu(memory):
    name, (major, minor) = gpu_properties()
    assert name and name.isprintable() and major >= 5 and minor >= 0
    assert runtime_version() >= 11040


def test_pinned_host_to_device_and_back_round_trips(memory):
    data = np.random.default_rng(0).normal(size=(3, 480, 640)).astype(np.float32)
    device = memory.alloc(data.nbytes)
    staging = memory.pinned(data.nbytes).view(np.float32).reshape(data.shape)
    staging[...] = data
    memory.htod_async(device, staging)
    result = np.zeros_like(data)
    memory.dtoh_async(result, device)
    memory.synchronize()
    np.testing.assert_array_equal(result, data)
    memory.free(device)


def test_a_captured_graph_replays_its_copies(memory):
    source = np.arange(1024, dtype=np.float32)
    first = memory.alloc(source.nbytes)
    memory.htod(first, source)
    staging = memory.pinned(source.nbytes).view(np.float32)
    graph = memory.capture_graph(lambda: memory.dtoh_async(staging, first))
    memory.launch_graph(graph)
    memory.synchronize()
    np.testing.assert_array_equal(staging, source)
    memory.free(first)


def test_a_second_thread_copies_and_replays_a_graph(memory):
    """The pipeline's model thread is not the one that opened the memory."""
    source = np.arange(4096, dtype=np.float32)
    device = memory.alloc(source.nbytes)
    staging = memory.pinned(source.nbytes).view(np.float32)
    errors = []

    def model_thread():
        try:
            memory.htod(device, source)
            graph = memory.capture_graph(lambda: memory.dtoh_async(staging, device))
            memory.launch_graph(graph)
            memory.synchronize()
        except Exception as exc:  # noqa: BLE001 - reported on the test thread
            errors.append(exc)

    thread = threading.Thread(target=model_thread)
    thread.start()
    thread.join()
    assert not errors
    np.testing.assert_array_equal(staging, source)


def test_a_failed_call_is_one_line_from_cuda(memory):
    with pytest.raises(CudaError, match=r"^CUDA: call failed \(cudaFree: cudaErrorInvalid"):
        memory.free(0x10)


def test_calibrator_batches_reach_the_device_unchanged(memory, tmp_path):
    from mrfs_edge.calibration.trt_calibrator import CalibratorLogic

    rng = np.random.default_rng(1)
    feeds = [{"visible": rng.random((1, 3, 64, 96), dtype=np.float32),
              "infrared": rng.random((1, 1, 64, 96), dtype=np.float32)} for _ in range(2)]
    calibrator = CalibratorLogic(feeds, tmp_path / "calib.cache", "entropy", memory=memory)
    for feed in feeds:
        pointers = calibrator.get_batch(["visible", "infrared"])
        for name, pointer in zip(("visible", "infrared"), pointers):
            back = np.empty_like(feed[name])
            memory.dtoh_async(back, pointer)
            memory.synchronize()
            np.testing.assert_array_equal(back, feed[name])
    assert calibrator.get_batch(["visible", "infrared"]) is None and calibrator.size == 2
    calibrator.close()
