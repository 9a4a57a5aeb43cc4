"""Engine building against a recording double of TensorRT 8.5 / 8.6 / 10.x / 11."""
from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fake_tensorrt import FakeCudaMemory, fake_tensorrt, make_tiny_onnx, tiny_contract
from mrfs_edge.calibration.trt_calibrator import cache_note_path, make_calibrator
from mrfs_edge.engine import EngineBuildConfig, Machine, TrtApi, build_engine, parse_version, read_sidecar
from mrfs_edge.engine import builder as builder_module
from mrfs_edge.errors import ExportError

MACHINE = Machine("10.3.0", "Orin", (8, 7))
LN_PINS = ["/norm/ReduceMean", "/norm/Sub", "/norm/Pow", "/norm/ReduceMean_1", "/norm/Add", "/norm/Sqrt",
           "/norm/Div"]


def build(tmp_path: Path, version: str = "10.3.0", contract=None, onnx_kwargs=None, trt=None, **config):
    """Build ``tiny.engine``; returns (sidecar, the fake builder that did it)."""
    contract = contract or tiny_contract()
    onnx_path = tmp_path / "tiny.onnx"
    if not onnx_path.exists():
        make_tiny_onnx(onnx_path, contract, **(onnx_kwargs or {}))
    trt = trt or fake_tensorrt(version)
    sidecar = build_engine(onnx_path, tmp_path / "tiny.engine", EngineBuildConfig(**config), trt=trt,
                           machine=Machine(trt.__version__, "Orin", (8, 7)), contract=contract)
    return sidecar, trt.builders[-1]


def pinned(builder) -> list[str]:
    return [layer.name for layer in builder.network.layers if layer.precision is not None]


# -- network flags and precision per release ---------------------------------------------------
@pytest.mark.parametrize("version, network_flags", [("8.5.2.2", 1), ("8.6.2", 1), ("10.3.0", 0)])
def test_fp16_flags_per_release(tmp_path: Path, version: str, network_flags: int) -> None:
    sidecar, builder = build(tmp_path, version, precision="fp16", workspace_mib=512)
    assert builder.network.flags == network_flags          # EXPLICIT_BATCH bit 0 on 8.x only
    assert builder.config.flags == {"FP16", "OBEY_PRECISION_CONSTRAINTS"}
    assert builder.config.pools == {"WORKSPACE": 512 << 20}
    assert sidecar.precision == "fp16" and not sidecar.strongly_typed and sidecar.quant is None


@pytest.mark.parametrize("precision, flags", [("fp32", set()), ("best", {"FP16", "INT8"}), ("int8", {"INT8"})])
def test_precision_flags_on_a_qdq_graph(tmp_path: Path, precision: str, flags: set[str]) -> None:
    sidecar, builder = build(tmp_path, precision=precision, onnx_kwargs={"qdq": True})
    assert builder.config.flags - {"OBEY_PRECISION_CONSTRAINTS"} == flags
    assert sidecar.quant == (None if precision == "fp32" else "explicit")
    assert (pinned(builder) == []) is (precision == "fp32")


def test_strongly_typed_on_10_sets_no_flags_or_pins(tmp_path: Path) -> None:
    sidecar, builder = build(tmp_path, "10.3.0", precision="fp16", strongly_typed=True)
    assert builder.network.flags == 1 << 1                  # STRONGLY_TYPED
    assert builder.config.flags == set() and pinned(builder) == []
    assert sidecar.strongly_typed and sidecar.pins == {}
    assert any("strongly typed" in note for note in sidecar.notes)


def test_tensorrt_11_is_always_strongly_typed(tmp_path: Path) -> None:
    sidecar, builder = build(tmp_path, "11.0.0", precision="fp16")
    assert builder.network.flags == 1 << 0                  # STRONGLY_TYPED; EXPLICIT_BATCH is gone
    assert builder.config.flags == set()
    assert sidecar.strongly_typed
    assert sidecar.notes[0].startswith("TensorRT 11.0.0 has no precision flags: built strongly typed")


def test_tensorrt_11_refuses_implicit_int8(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="implicit INT8 needs a calibrator and a weakly typed build"):
        build(tmp_path, "11.0.0", precision="int8", quant="implicit", calibrator=object())


def test_strong_typing_needs_tensorrt_9(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="TensorRT 8.6.2 cannot build strongly typed networks"):
        build(tmp_path, "8.6.2", strongly_typed=True)


def test_explicit_int8_needs_qdq_nodes(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no Q/DQ nodes"):
        build(tmp_path, precision="int8", quant="explicit")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ExportError, match="precision must be one of"):
        EngineBuildConfig(precision="fp8")
    with pytest.raises(ExportError, match="quant must be one of"):
        EngineBuildConfig(quant="dynamic")
    with pytest.raises(ExportError, match="DLA runs FP16 or INT8 only"):
        EngineBuildConfig(precision="fp32", dla_core=0)


# -- FP32 pins -----------------------------------------------------------------------------------
def test_fp16_pins_contract_nodes_and_layernorm_pieces(tmp_path: Path) -> None:
    sidecar, builder = build(tmp_path, precision="fp16")
    trt = builder.trt
    expected = ["/head/Conv"] + LN_PINS
    assert pinned(builder) == expected
    assert sidecar.pins == {"fp32": expected}
    for layer in builder.network.layers:
        if layer.name in expected:
            assert layer.precision is trt.float32 and layer.output_types == {0: trt.float32}
        else:   # the concat, the final scale/shift and the fusion branch stay in FP16
            assert layer.output_types == {}


def test_pattern_pins_can_be_switched_off(tmp_path: Path) -> None:
    _, builder = build(tmp_path, precision="fp16", pin_patterns=False, fp32_nodes=["/norm/Pow", "/nope"])
    assert pinned(builder) == ["/norm/Pow"]
    assert read_sidecar(tmp_path / "tiny.engine").notes == ["1 FP32 node(s) matched no TensorRT layer: /nope"]


def test_fused_layernorm_is_pinned_on_86(tmp_path: Path) -> None:
    _, builder = build(tmp_path, "8.6.2", precision="fp16", onnx_kwargs={"layernorm": "fused"})
    assert pinned(builder) == ["/head/Conv", "/norm/LayerNormalization"]


def test_integer_layers_are_never_pinned(tmp_path: Path) -> None:
    from mrfs_edge.engine.pins import select_fp32_layers

    _, builder = build(tmp_path, precision="fp32")
    api = TrtApi(builder.trt)
    layer = builder.network.layers[0]
    layer.get_output(0).dtype = builder.trt.int32
    layers, unmatched = select_fp32_layers(api, builder.network, [layer.name], patterns=False)
    assert layers == [] and unmatched == []


def test_85_reports_layernorm_parser_error_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ExportError) as caught:
        build(tmp_path, "8.5.2.2", onnx_kwargs={"layernorm": "fused"})
    lines = str(caught.value).splitlines()
    assert lines == ["tiny.onnx: TensorRT 8.5.2.2 ONNX parser: node #3: No importer registered for op: "
                     "LayerNormalization",
                     "tiny.onnx: TensorRT 8.5.2.2 has no LayerNormalization; re-export the ONNX for it "
                     "(--trt-compat 8.5)"]


def test_10_parser_errors_name_the_node(tmp_path: Path) -> None:
    trt = fake_tensorrt("10.3.0")
    del trt.LayerType.NORMALIZATION        # a parser without the op, to provoke an error
    with pytest.raises(ExportError, match=r"node /norm/LayerNormalization \(LayerNormalization\): No importer"):
        build(tmp_path, trt=trt, onnx_kwargs={"layernorm": "fused"})


# -- profiles, DLA, timing cache ---------------------------------------------------------------
def test_profiles_come_from_the_dynamic_contract(tmp_path: Path) -> None:
    sidecar, builder = build(tmp_path, contract=tiny_contract(dynamic=True))
    (profile,) = builder.config.profiles
    assert profile.shapes == {"visible": ((1, 3, 32, 32), (2, 3, 64, 64), (4, 3, 128, 128)),
                              "infrared": ((1, 1, 32, 32), (2, 1, 64, 64), (4, 1, 128, 128))}
    assert sidecar.profiles == [{"visible": [[1, 3, 32, 32], [2, 3, 64, 64], [4, 3, 128, 128]],
                                 "infrared": [[1, 1, 32, 32], [2, 1, 64, 64], [4, 1, 128, 128]]}]
    assert sidecar.input_shapes == {"visible": [2, 3, 64, 64], "infrared": [2, 1, 64, 64]}


def test_static_graph_needs_no_profile(tmp_path: Path) -> None:
    sidecar, builder = build(tmp_path)
    assert builder.config.profiles == [] and sidecar.profiles == []
    assert sidecar.input_shapes == {"visible": [1, 3, 32, 64], "infrared": [1, 1, 32, 64]}


def test_dla_with_gpu_fallback(tmp_path: Path) -> None:
    sidecar, builder = build(tmp_path, trt=fake_tensorrt("8.5.2.2", dla_cores=2), precision="fp16", dla_core=1)
    trt = builder.trt
    assert builder.config.default_device_type is trt.DeviceType.DLA
    assert builder.config.DLA_core == 1
    assert "GPU_FALLBACK" in builder.config.flags
    assert sidecar.dla_core == 1


def test_dla_core_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="DLA core 2 requested, this machine has 2 DLA core"):
        build(tmp_path, trt=fake_tensorrt("8.5.2.2", dla_cores=2), dla_core=2)


def test_timing_cache_round_trip(tmp_path: Path) -> None:
    cache = tmp_path / "timing.cache"
    _, first = build(tmp_path, timing_cache=cache)
    assert first.config.timing_cache.data == b"" and cache.read_bytes() == b"|tactics"
    _, second = build(tmp_path, timing_cache=cache)
    assert second.config.timing_cache.data == b"|tactics"      # loaded what the first build saved
    assert second.config.ignore_mismatch is False
    assert cache.read_bytes() == b"|tactics|tactics"


# -- outputs -----------------------------------------------------------------------------------
def test_engine_and_matching_sidecar_are_written(tmp_path: Path) -> None:
    sidecar, _ = build(tmp_path, "10.3.0", precision="fp16")
    engine = tmp_path / "tiny.engine"
    assert read_sidecar(engine) == sidecar
    assert sidecar.engine_sha256 == hashlib.sha256(engine.read_bytes()).hexdigest()
    assert sidecar.onnx_sha256 == hashlib.sha256((tmp_path / "tiny.onnx").read_bytes()).hexdigest()
    assert (sidecar.tensorrt_version, sidecar.gpu_name, sidecar.compute_capability) == ("10.3.0", "Orin", (8, 7))
    assert sidecar.contract == tiny_contract()
    assert sidecar.calibration is None and sidecar.build_time_s >= 0


def test_failed_build_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="could not build an engine"):
        build(tmp_path, trt=fake_tensorrt("10.3.0", fail_build=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx"]


def test_graph_io_must_match_the_contract(tmp_path: Path) -> None:
    make_tiny_onnx(tmp_path / "tiny.onnx", tiny_contract())
    with pytest.raises(ExportError, match=r"graph I/O .* differs from its contract"):
        build(tmp_path, contract=tiny_contract(seg_output="labels"))


def test_contract_is_read_from_the_onnx_by_default(tmp_path: Path) -> None:
    onnx_path = make_tiny_onnx(tmp_path / "tiny.onnx", tiny_contract(dynamic=True))
    sidecar = build_engine(onnx_path, tmp_path / "tiny.engine", EngineBuildConfig(), trt=fake_tensorrt(),
                           machine=MACHINE)
    assert sidecar.contract == tiny_contract(dynamic=True)


# -- implicit INT8 calibration -----------------------------------------------------------------
def batches(count: int, seen: list[int]) -> Iterator[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    for index in range(count):
        seen.append(index)
        yield {"visible": rng.random((1, 3, 32, 64), np.float32), "infrared": rng.random((1, 1, 32, 64), np.float32)}


class Untouchable:
    def __iter__(self):
        raise AssertionError("the calibration data was read although a cache exists")


def test_implicit_int8_calibrates_then_reuses_the_cache(tmp_path: Path) -> None:
    trt, cache, seen = fake_tensorrt("8.5.2.2"), tmp_path / "calib.cache", []
    memory = FakeCudaMemory()
    calibrator = make_calibrator(TrtApi(trt), batches(3, seen), cache, "entropy", memory=memory)
    assert isinstance(calibrator, trt.IInt8EntropyCalibrator2)
    first, builder = build(tmp_path, trt=trt, precision="int8", quant="implicit", calibrator=calibrator)
    assert builder.config.int8_calibrator is calibrator and "INT8" in builder.config.flags
    assert seen == [0, 1, 2] and memory.htod_count == 6       # 3 batches × 2 inputs reached the device
    assert cache.read_bytes().startswith(b"TRT-8601-EntropyCalibration2")
    assert first.calibration.size == 3 and len(first.calibration.set_sha256) == 64
    assert first.quant == "implicit"
    calibrator.close()
    assert memory.owned == set()

    reuse = make_calibrator(TrtApi(trt), Untouchable(), cache, "entropy", memory=FakeCudaMemory())
    second, _ = build(tmp_path, trt=trt, precision="int8", quant="implicit", calibrator=reuse)
    assert reuse.reused
    assert second.calibration == first.calibration           # provenance survives through the cache note


def test_cache_of_another_method_is_not_reused(tmp_path: Path) -> None:
    cache, seen = tmp_path / "calib.cache", []
    cache.write_bytes(b"old")
    cache_note_path(cache).write_text('{"method": "entropy", "set_sha256": null, "size": 0}')
    trt = fake_tensorrt("8.6.2")
    calibrator = make_calibrator(TrtApi(trt), batches(2, seen), cache, "minmax", memory=FakeCudaMemory())
    assert isinstance(calibrator, trt.IInt8MinMaxCalibrator)
    assert calibrator.read_calibration_cache() is None and not calibrator.reused


def test_cache_of_another_calibration_set_is_not_reused(tmp_path: Path) -> None:
    cache = tmp_path / "calib.cache"
    trt = fake_tensorrt("10.3.0")
    first = make_calibrator(TrtApi(trt), batches(1, []), cache, memory=FakeCudaMemory(), fingerprint="set-a")
    sidecar, _ = build(tmp_path, trt=trt, precision="int8", quant="implicit", calibrator=first)
    assert sidecar.calibration.set_sha256 == "set-a" and sidecar.calibration.size == 1
    same = make_calibrator(TrtApi(trt), Untouchable(), cache, memory=FakeCudaMemory(), fingerprint="set-a")
    assert same.read_calibration_cache() is not None
    other = make_calibrator(TrtApi(trt), batches(1, []), cache, memory=FakeCudaMemory(), fingerprint="set-b")
    assert other.read_calibration_cache() is None


def test_bad_calibration_batch_fails_the_build(tmp_path: Path) -> None:
    trt = fake_tensorrt("10.3.0")
    calibrator = make_calibrator(TrtApi(trt), [{"visible": np.zeros((1, 3, 32, 64), np.float32)}],
                                 tmp_path / "c.cache", memory=FakeCudaMemory())
    with pytest.raises(ExportError, match=r"INT8 calibration failed: calibration batch 0 lacks inputs \['infrared'\]"):
        build(tmp_path, trt=trt, precision="int8", quant="implicit", calibrator=calibrator)


def test_dynamic_calibration_uses_a_fixed_opt_profile(tmp_path: Path) -> None:
    trt = fake_tensorrt("8.6.2")
    calibrator = make_calibrator(TrtApi(trt), [], tmp_path / "c.cache", memory=FakeCudaMemory())
    _, builder = build(tmp_path, trt=trt, contract=tiny_contract(dynamic=True), precision="int8",
                       quant="implicit", calibrator=calibrator)
    assert builder.config.calibration_profile.shapes["visible"] == ((2, 3, 64, 64),) * 3


def test_calibrator_methods(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'entropy' or 'minmax'"):
        make_calibrator(TrtApi(fake_tensorrt("10.3.0")), [], tmp_path / "c", "percentile", memory=FakeCudaMemory())
    with pytest.raises(ExportError, match="TensorRT 11.0.0 has no implicit INT8 calibration"):
        make_calibrator(TrtApi(fake_tensorrt("11.0.0")), [], tmp_path / "c", memory=FakeCudaMemory())


def test_implicit_int8_needs_a_calibrator(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="needs a calibrator"):
        build(tmp_path, precision="int8", quant="implicit")


# -- status and versions -----------------------------------------------------------------------
def test_status_without_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    ok, reason = builder_module.tensorrt_status()
    assert not ok and reason.startswith("TensorRT not installed")


def test_status_without_gpu_and_with_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from mrfs_edge.backends.cuda_memory import CudaError

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.3.0.30"))

    def no_gpu(device: int = 0, library: str | None = None):
        raise CudaError("no CUDA GPU visible")

    monkeypatch.setattr(builder_module, "gpu_properties", no_gpu)
    assert builder_module.tensorrt_status() == (False, "no CUDA GPU visible")
    monkeypatch.setattr(builder_module, "gpu_properties", lambda: ("Orin", (8, 7)))
    assert builder_module.tensorrt_status() == (True, "TensorRT 10.3.0.30 on Orin (sm_87)")
    assert builder_module.machine_info() == Machine("10.3.0.30", "Orin", (8, 7))


@pytest.mark.parametrize("text, parsed", [("8.5.2.2", (8, 5, 2)), ("10.3.0", (10, 3, 0)), ("11.0", (11, 0, 0)),
                                          ("10.13.0.35", (10, 13, 0))])
def test_parse_version(text: str, parsed: tuple[int, int, int]) -> None:
    assert parse_version(text) == parsed
