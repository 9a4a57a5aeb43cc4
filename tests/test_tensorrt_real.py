"""Real TensorRT on a real GPU: build tiny engines and compare them with ONNX Runtime.

Skipped, with the reason, wherever TensorRT, cuda-python/pycuda or a CUDA GPU is missing.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fake_tensorrt import make_tiny_onnx, tiny_contract
from fake_tensorrt import onnx_runtime_outputs as onnx_runtime
from fake_tensorrt import random_pair as pair

from mrfs_edge.backends.machine import machine_info, tensorrt_status
from mrfs_edge.backends.tensorrt_runner import TensorRTRunner
from mrfs_edge.engine import EngineBuildConfig, build_engine

pytestmark = pytest.mark.tensorrt


@pytest.fixture(scope="module", autouse=True)
def needs_tensorrt() -> None:
    ok, reason = tensorrt_status()
    if not ok:
        pytest.skip(f"needs TensorRT and a CUDA GPU: {reason}")


def build(tmp_path: Path, precision: str, dynamic: bool, **config) -> tuple[Path, Path]:
    contract = tiny_contract(dynamic=dynamic)
    onnx_path = make_tiny_onnx(tmp_path / "tiny.onnx", contract)
    engine = tmp_path / f"tiny-{precision}.engine"
    build_engine(onnx_path, engine, EngineBuildConfig(precision=precision, workspace_mib=256, **config),
                 contract=contract)
    return onnx_path, engine


def test_fp32_engine_matches_onnx_runtime(tmp_path: Path) -> None:
    onnx_path, engine = build(tmp_path, "fp32", dynamic=False)
    feed = pair(1, 32, 64)
    with TensorRTRunner(engine) as runner:
        outputs = runner.infer(feed)
        assert runner.device == machine_info().gpu_name
    expected = onnx_runtime(onnx_path, feed)
    for name in expected:
        np.testing.assert_allclose(outputs[name], expected[name], atol=1e-4)


def test_fp16_dynamic_engine_matches_onnx_runtime(tmp_path: Path) -> None:
    cache = tmp_path / "timing.cache"
    onnx_path, engine = build(tmp_path, "fp16", dynamic=True, timing_cache=cache)
    assert cache.stat().st_size > 0
    with TensorRTRunner(engine) as runner:
        assert "/norm/Pow" in runner.sidecar.pins["fp32"]
        for shape in [(1, 32, 32), (2, 64, 96)]:
            feed = pair(*shape)
            outputs, expected = runner.infer(feed), onnx_runtime(onnx_path, feed)
            np.testing.assert_allclose(outputs["seg_logits"], expected["seg_logits"], atol=5e-2)
            np.testing.assert_allclose(outputs["fused"], expected["fused"], atol=1e-2)


def test_cuda_graph_mode_gives_the_same_outputs(tmp_path: Path) -> None:
    _, engine = build(tmp_path, "fp16", dynamic=False)
    feeds = [pair(1, 32, 64, seed) for seed in range(3)]
    with TensorRTRunner(engine) as plain, TensorRTRunner(engine, use_cuda_graph=True) as graphed:
        for feed in feeds:   # first call captures, the others replay
            np.testing.assert_array_equal(graphed.infer(feed)["fused"], plain.infer(feed)["fused"])


def test_inspector_report_reads_real_tensorrt(tmp_path: Path) -> None:
    """The per-layer report parses real TensorRT's DETAILED inspector JSON (precision per layer)."""
    _, engine = build(tmp_path, "fp32", dynamic=False)
    with TensorRTRunner(engine) as runner:
        report = runner.layer_report
        assert report and report["layers"] and report["counts"]["DLA"] == 0
        assert report["counts"]["FP16"] == report["counts"]["INT8"] == 0 and report["counts"]["FP32"] > 0
        assert all(layer["precision"] != "unknown" for layer in report["layers"])
        assert runner.sidecar.precision_built == "fp32" and not runner.sidecar.tf32
        assert "0 on DLA" in runner.describe()
