"""The TensorRT runner against the TensorRT and CUDA test doubles (numbers checked with ONNX Runtime).

Every test runs under each TensorRT release's API surface (the ``release`` fixture)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from fake_tensorrt import (
    RELEASES,
    FakeCudaMemory,
    fake_tensorrt,
    make_tiny_onnx,
    onnx_runtime_outputs,
    tiny_contract,
)
from fake_tensorrt import random_pair as pair

from mrfs_edge.backends.sidecar import Machine, sidecar_path
from mrfs_edge.backends.tensorrt_runner import TensorRTRunner
from mrfs_edge.core.errors import ModelFileError
from mrfs_edge.engine import EngineBuildConfig, build_engine

RELEASE_OF: dict[Path, str] = {}     # engine folder -> the release that built it


@pytest.fixture(params=RELEASES)
def release(request: pytest.FixtureRequest) -> str:
    return request.param


def machine(release: str) -> Machine:
    return Machine(fake_tensorrt(release).__version__, "Orin", (8, 7))


class Memories:
    """A memory factory that remembers what it handed out."""

    def __init__(self) -> None:
        self.made: list[FakeCudaMemory] = []

    def __call__(self) -> FakeCudaMemory:
        self.made.append(FakeCudaMemory())
        return self.made[-1]


@pytest.fixture()
def engine_dir(tmp_path: Path, request: pytest.FixtureRequest, release: str) -> Path:
    contract = tiny_contract(dynamic=getattr(request, "param", False))
    # TensorRT 11 takes FP16 from the graph's types: the FP16 graph the workstation writes.
    onnx_path = make_tiny_onnx(tmp_path / "tiny.onnx", contract, fp16=release.startswith("11"))
    build_engine(onnx_path, tmp_path / "tiny.engine", EngineBuildConfig(precision="fp16"),
                 trt=fake_tensorrt(release), machine=machine(release), contract=contract)
    RELEASE_OF[tmp_path] = release
    return tmp_path


def make_runner(engine_dir: Path, memories: Memories | None = None, trt=None, **kwargs) -> TensorRTRunner:
    release = RELEASE_OF[engine_dir]
    return TensorRTRunner(engine_dir / "tiny.engine", trt=trt or fake_tensorrt(release), machine=machine(release),
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
        assert [shape for name, shape in context._shape_calls if name == "visible"] == [
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
        assert context._executions == 3 and memory.graph_launches == 2   # run+capture, then 2 replays
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


def test_foreign_engine_is_refused_before_touching_the_gpu(engine_dir: Path, release: str) -> None:
    memories = Memories()
    other = "8.6.1" if release != "8.6.1" else "10.3.0"
    with pytest.raises(ModelFileError) as caught:
        TensorRTRunner(engine_dir / "tiny.engine", trt=fake_tensorrt(other),
                       machine=Machine(fake_tensorrt(other).__version__, "RTX 4090", (8, 9)), memory_factory=memories)
    assert str(caught.value).startswith(f"tiny.engine: built with TensorRT {machine(release)[0]} for Orin (sm_87), "
                                        f"this machine has TensorRT {fake_tensorrt(other).__version__} on RTX 4090 "
                                        "(sm_89); rebuild it with")
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
    with pytest.raises(ModelFileError, match=f"TensorRT {machine(RELEASE_OF[engine_dir])[0]} cannot deserialize it"):
        runner.activate()
    assert memories.made[0].closed and not runner.is_active


def test_engine_without_sidecar_is_refused(engine_dir: Path) -> None:
    sidecar_path(engine_dir / "tiny.engine").unlink()
    with pytest.raises(ModelFileError, match="no sidecar tiny.engine.json"):
        make_runner(engine_dir)


def test_dla_engine_is_deserialized_for_its_core(tmp_path: Path, release: str) -> None:
    if release.startswith("11"):
        pytest.skip("TensorRT 11.0 to 11.3 have no DLA (the builder refuses; see test_engine_builder)")
    contract = tiny_contract()
    onnx_path = make_tiny_onnx(tmp_path / "tiny.onnx", contract)
    build_engine(onnx_path, tmp_path / "tiny.engine", EngineBuildConfig(precision="fp16", dla_core=1),
                 trt=fake_tensorrt(release, dla_cores=2), machine=machine(release), contract=contract)
    trt = fake_tensorrt(release)
    with TensorRTRunner(tmp_path / "tiny.engine", trt=trt, machine=machine(release),
                        memory_factory=Memories()) as runner:
        assert runner.infer(pair(1, 32, 64))["fused"].shape == (1, 3, 32, 64)
        assert "on DLA" in runner.describe() and runner.layer_report["counts"]["DLA"] > 0
    assert [runtime.DLA_core for runtime in trt._record["runtimes"][-1:]] == [1]


def test_runner_does_not_use_trt_nptype(engine_dir: Path, release: str) -> None:
    # NumPy 1.24 to 1.26 have no np.bool; TensorRT 8.5.2's nptype builds its map with it on every call,
    # so there every call fails as below (NumPy 2 brought np.bool back, hence the stand-in).
    trt = fake_tensorrt(release)

    def nptype(_):
        raise AttributeError("module 'numpy' has no attribute 'bool'")

    trt.nptype = nptype
    feed = pair(1, 32, 64)
    with make_runner(engine_dir, trt=trt) as runner:
        np.testing.assert_allclose(runner.infer(feed)["fused"], reference(engine_dir, feed)["fused"], rtol=1e-6)


@pytest.mark.parametrize("engine_dir", [True], indirect=True)
def test_shape_tensorrt_refuses_is_an_error(engine_dir: Path) -> None:
    # A sidecar whose profile is wider than the engine's: the runner's own check passes, TensorRT refuses.
    path = sidecar_path(engine_dir / "tiny.engine")
    data = json.loads(path.read_text())
    for name in data["profiles"][0]:
        data["profiles"][0][name][2][0] = 8
    path.write_text(json.dumps(data))
    runner = make_runner(engine_dir)
    with pytest.raises(ModelFileError) as caught:
        runner.activate()            # buffers are sized at the sidecar's maximum, which TensorRT refuses
    assert "TensorRT refused shape [8, 3, 128, 128] for input visible" in str(caught.value)
    assert not runner.is_active
    assert "\n" not in str(caught.value)


def test_describe_says_what_the_engine_runs(engine_dir: Path) -> None:
    with make_runner(engine_dir) as runner:
        text = runner.describe()
    assert text.startswith("tiny.engine: fp16 engine, ") and " FP16, " in text and text.endswith("0 on DLA")
