"""The TensorRT runner against the TensorRT and CUDA test doubles (numbers checked with ONNX Runtime)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from fake_tensorrt import (FakeCudaMemory, fake_tensorrt, make_tiny_onnx, onnx_runtime_outputs,
                           random_pair as pair, tiny_contract)
from mrfs_edge.backends.tensorrt_runner import TensorRTRunner
from mrfs_edge.engine import EngineBuildConfig, Machine, build_engine, sidecar_path
from mrfs_edge.errors import ModelFileError

MACHINE = Machine("10.3.0", "Orin", (8, 7))


class Memories:
    """A memory factory that remembers what it handed out."""

    def __init__(self) -> None:
        self.made: list[FakeCudaMemory] = []

    def __call__(self) -> FakeCudaMemory:
        self.made.append(FakeCudaMemory())
        return self.made[-1]


@pytest.fixture()
def engine_dir(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    contract = tiny_contract(dynamic=getattr(request, "param", False))
    onnx_path = make_tiny_onnx(tmp_path / "tiny.onnx", contract)
    build_engine(onnx_path, tmp_path / "tiny.engine", EngineBuildConfig(precision="fp16"),
                 trt=fake_tensorrt("10.3.0"), machine=MACHINE, contract=contract)
    return tmp_path


def make_runner(engine_dir: Path, memories: Memories | None = None, **kwargs) -> TensorRTRunner:
    return TensorRTRunner(engine_dir / "tiny.engine", trt=fake_tensorrt("10.3.0"), machine=MACHINE,
                          memory_factory=memories or Memories(), **kwargs)


def reference(engine_dir: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return onnx_runtime_outputs(engine_dir / "tiny.onnx", feed)


def test_outputs_by_name_match_onnx_runtime(engine_dir: Path) -> None:
    runner = make_runner(engine_dir)
    assert runner.backend == "tensorrt" and runner.device == "Orin"
    assert runner.contract == tiny_contract()
    feed = pair(1, 32, 64)
    with runner:
        outputs = runner.infer(feed)
    assert sorted(outputs) == ["fused", "seg_logits"]
    assert outputs["seg_logits"].shape == (1, 3, 32, 64) and outputs["seg_logits"].dtype == np.float32
    assert outputs["fused"].shape == (1, 3, 32, 64)
    expected = reference(engine_dir, feed)
    for name in outputs:
        np.testing.assert_allclose(outputs[name], expected[name], rtol=1e-6)
    assert runner.last_inference_time is not None


def test_outputs_are_copies_not_views_of_reused_buffers(engine_dir: Path) -> None:
    with make_runner(engine_dir) as runner:
        first = runner.infer(pair(1, 32, 64, seed=1))["fused"]
        kept = first.copy()
        runner.infer(pair(1, 32, 64, seed=2))
    np.testing.assert_array_equal(first, kept)


@pytest.mark.parametrize("engine_dir", [True], indirect=True)
def test_dynamic_shapes_follow_the_profile(engine_dir: Path) -> None:
    with make_runner(engine_dir) as runner:
        assert runner.shape_range("visible") == ([1, 3, 32, 32], [4, 3, 128, 128])
        context = runner._context
        for batch, height, width in [(2, 64, 64), (1, 32, 96), (1, 32, 96)]:
            feed = pair(batch, height, width)
            outputs = runner.infer(feed)
            assert outputs["seg_logits"].shape == (batch, 3, height, width)
            np.testing.assert_allclose(outputs["fused"], reference(engine_dir, feed)["fused"], rtol=1e-6)
        # max shapes at activation, then one call per input per new shape (the repeat changes nothing)
        assert [shape for name, shape in context.shape_calls if name == "visible"] == [
            (4, 3, 128, 128), (2, 3, 64, 64), (1, 3, 32, 96)]
        with pytest.raises(ModelFileError) as caught:
            runner.infer(pair(1, 32, 256))
    assert "\n" not in str(caught.value)
    assert "input visible of shape [1, 3, 32, 256] is outside the engine's range [1, 3, 32, 32]..[4, 3, 128, 128]" \
        in str(caught.value)


def test_static_engine_refuses_another_size(engine_dir: Path) -> None:
    with make_runner(engine_dir) as runner, pytest.raises(ModelFileError, match="outside the engine's range"):
        runner.infer(pair(1, 64, 64))


@pytest.mark.parametrize("engine_dir", [True], indirect=True)
def test_cuda_graph_is_captured_once_per_shape_and_replayed(engine_dir: Path) -> None:
    memories = Memories()
    with make_runner(engine_dir, memories, use_cuda_graph=True) as runner:
        memory, context = memories.made[0], runner._context
        for seed in range(3):
            feed = pair(1, 32, 32, seed)
            np.testing.assert_allclose(runner.infer(feed)["seg_logits"],
                                       reference(engine_dir, feed)["seg_logits"], rtol=1e-6)
        assert context.executions == 3 and memory.graph_launches == 2   # run+capture, then 2 replays
        runner.infer(pair(2, 64, 64))                                     # new shape: run + new capture
        assert len(runner._graphs) == 2 and memory.graph_launches == 2


def test_deactivate_frees_device_memory(engine_dir: Path) -> None:
    memories = Memories()
    runner = make_runner(engine_dir, memories)
    runner.infer(pair(1, 32, 64))
    memory = memories.made[0]
    assert len(memory.owned) == 4                       # one device buffer per I/O tensor
    runner.deactivate()
    assert memory.closed and memory.owned == set() and runner._context is None


def test_foreign_engine_is_refused_before_touching_the_gpu(engine_dir: Path) -> None:
    memories = Memories()
    with pytest.raises(ModelFileError) as caught:
        TensorRTRunner(engine_dir / "tiny.engine", trt=fake_tensorrt("8.6.2"),
                       machine=Machine("8.6.2", "RTX 4090", (8, 9)), memory_factory=memories)
    assert str(caught.value).startswith("tiny.engine: built with TensorRT 10.3.0 for Orin (sm_87), "
                                        "this machine has TensorRT 8.6.2 on RTX 4090 (sm_89); rebuild it with")
    assert memories.made == []


def test_engine_changed_after_build_is_refused(engine_dir: Path) -> None:
    engine = engine_dir / "tiny.engine"
    engine.write_bytes(engine.read_bytes() + b" ")
    memories = Memories()
    with pytest.raises(ModelFileError, match="does not match its sidecar"):
        make_runner(engine_dir, memories).activate()
    assert memories.made == []


def test_undeserializable_engine_is_refused_and_memory_released(engine_dir: Path) -> None:
    engine = engine_dir / "tiny.engine"
    engine.write_bytes(b"garbage")
    sidecar = json.loads(sidecar_path(engine).read_text())
    sidecar["engine_sha256"] = hashlib.sha256(b"garbage").hexdigest()
    sidecar_path(engine).write_text(json.dumps(sidecar))
    memories = Memories()
    runner = make_runner(engine_dir, memories)
    with pytest.raises(ModelFileError, match="TensorRT 10.3.0 cannot deserialize it"):
        runner.activate()
    assert memories.made[0].closed and not runner.is_active


def test_engine_without_sidecar_is_refused(engine_dir: Path) -> None:
    sidecar_path(engine_dir / "tiny.engine").unlink()
    with pytest.raises(ModelFileError, match="no sidecar tiny.engine.json"):
        make_runner(engine_dir)


def test_dla_engine_is_deserialized_for_its_core(tmp_path: Path) -> None:
    contract = tiny_contract()
    onnx_path = make_tiny_onnx(tmp_path / "tiny.onnx", contract)
    build_engine(onnx_path, tmp_path / "tiny.engine", EngineBuildConfig(precision="fp16", dla_core=1),
                 trt=fake_tensorrt("10.3.0", dla_cores=2), machine=MACHINE, contract=contract)
    trt = fake_tensorrt("10.3.0")
    with TensorRTRunner(tmp_path / "tiny.engine", trt=trt, machine=MACHINE, memory_factory=Memories()) as runner:
        assert runner.infer(pair(1, 32, 64))["fused"].shape == (1, 3, 32, 64)
    assert [runtime.DLA_core for runtime in trt.runtimes] == [1]
