"""The CUDA layer under the TensorRT runner and calibrator, on a real device (skipped without one).

Runs wherever cuda-python or pycuda and an NVIDIA GPU are present, TensorRT or not, so the
buffers, copies, stream and graph capture the engine code relies on are checked on GPU machines
that have no TensorRT.
"""
from __future__ import annotations

import numpy as np
import pytest

from mrfs_edge.backends.cuda_memory import CudaError, gpu_properties, installed_library, open_cuda_memory

pytestmark = pytest.mark.cuda


@pytest.fixture()
def memory():
    if installed_library() is None:
        pytest.skip("needs cuda-python or pycuda")
    try:
        handle = open_cuda_memory()
    except CudaError as exc:
        pytest.skip(f"needs a CUDA GPU: {exc}")
    yield handle
    handle.close()


def test_device_properties_name_the_gpu(memory):
    name, (major, minor) = gpu_properties()
    assert name and major >= 5 and minor >= 0


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
