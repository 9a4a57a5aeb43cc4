"""Engine building against the generated TensorRT double, under each release's API surface."""
from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fake_tensorrt import (
    RELEASES,
    FakeCudaMemory,
    fake_tensorrt,
    flag_names,
    make_tiny_onnx,
    onnx_runtime_outputs,
    random_pair,
    tiny_contract,
)

from mrfs_edge.backends import machine as machine_module
from mrfs_edge.backends.sidecar import Machine, read_sidecar
from mrfs_edge.backends.tensorrt_runner import TensorRTRunner
from mrfs_edge.backends.trt_compat import TrtApi, parse_version
from mrfs_edge.backends.trt_inspector import layers_path
from mrfs_edge.calibration.trt_calibrator import cache_note_path, make_calibrator
from mrfs_edge.core.errors import ExportError
from mrfs_edge.engine import EngineBuildConfig, build_engine

MACHINE = Machine("10.3.0.30", "Orin", (8, 7))
LN_PINS = ["/norm/ReduceMean", "/norm/Sub", "/norm/Pow", "/norm/ReduceMean_1", "/norm/Add", "/norm/Sqrt",
           "/norm/Div"]
WEAK = [r for r in RELEASES if not r.startswith("11")]       # builder precision flags, layer pins, calibrators
STRONG = [r for r in RELEASES if r.startswith("1")]          # STRONGLY_TYPED networks (9.0+)
NO_DLA = [r for r in RELEASES if r.startswith("11")]         # TensorRT 11.0 to 11.3: no DLA


def build(tmp_path: Path, version: str = "10.3.0", contract=None, onnx_kwargs=None, trt=None, onnx_name="tiny.onnx",
          **config):
    """Build ``tiny.engine``; returns (sidecar, the double's builder, the double)."""
    contract = contract or tiny_contract()
    onnx_path = tmp_path / onnx_name
    if not onnx_path.exists():
        make_tiny_onnx(onnx_path, contract, **(onnx_kwargs or {}))
    trt = trt or fake_tensorrt(version)
    sidecar = build_engine(onnx_path, tmp_path / "tiny.engine", EngineBuildConfig(**config), trt=trt,
                           machine=Machine(trt.__version__, "Orin", (8, 7)), contract=contract)
    return sidecar, trt._record["builders"][-1], trt


def pinned(builder) -> list[str]:
    return [layer.name for layer in builder._network._layers if layer._precision is not None]


def flags(trt, builder) -> set[str]:
    return flag_names(trt, builder._config)


# -- network flags, precision and TF32 per release ---------------------------------------------
@pytest.mark.parametrize("release", WEAK)
def test_fp16_flags_per_release(tmp_path: Path, release: str) -> None:
    sidecar, builder, trt = build(tmp_path, release, precision="fp16", workspace_mib=512)
    explicit = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if release.startswith("8") else 0
    assert builder._network._flags == explicit          # EXPLICIT_BATCH on 8.x only (ignored on 10)
    assert flags(trt, builder) == {"FP16", "OBEY_PRECISION_CONSTRAINTS"}     # TF32 cleared
    assert builder._config.get_memory_pool_limit(trt.MemoryPoolType.WORKSPACE) == 512 << 20
    assert sidecar.precision == "fp16" and not sidecar.strongly_typed and sidecar.quant is None


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("allow", [False, True])
def test_tf32_is_cleared_unless_asked(tmp_path: Path, release: str, allow: bool) -> None:
    onnx = {"fp16": True} if release.startswith("11") else {}
    sidecar, builder, trt = build(tmp_path, release, precision="fp32", allow_tf32=allow, onnx_kwargs=onnx)
    assert builder._config.get_flag(trt.BuilderFlag.TF32) is allow
    assert sidecar.tf32 is allow


@pytest.mark.parametrize("release", WEAK)
def test_tf32_is_cleared_for_fp32_pins(tmp_path: Path, release: str) -> None:
    _, builder, trt = build(tmp_path, release, precision="fp16")
    assert pinned(builder) and not builder._config.get_flag(trt.BuilderFlag.TF32)


@pytest.mark.parametrize("precision, expected", [("fp32", set()), ("best", {"FP16", "INT8"}), ("int8", {"INT8"})])
@pytest.mark.parametrize("release", WEAK)
def test_precision_flags_on_a_qdq_graph(tmp_path: Path, release: str, precision: str, expected: set[str]) -> None:
    sidecar, builder, trt = build(tmp_path, release, precision=precision, onnx_kwargs={"qdq": True})
    assert flags(trt, builder) - {"OBEY_PRECISION_CONSTRAINTS"} == expected
    assert sidecar.quant == (None if precision == "fp32" else "explicit")
    assert (pinned(builder) == []) is (precision == "fp32")


@pytest.mark.parametrize("release", STRONG)
@pytest.mark.parametrize("precision", ["fp16", "best"])
def test_strongly_typed_fp16_from_an_fp32_graph_is_refused(tmp_path: Path, release: str, precision: str) -> None:
    onnx = {"qdq": True} if precision == "best" else {}
    with pytest.raises(ExportError, match=r"tiny\.onnx: a strongly typed .* has no FP16 tensors; pass the "
                                          r"tiny\.fp16\.onnx the workstation wrote"):
        build(tmp_path, release, precision=precision, strongly_typed=True, onnx_kwargs=onnx)
    assert not (tmp_path / "tiny.engine").exists()


@pytest.mark.parametrize("release", STRONG)
def test_strongly_typed_fp16_graph_builds_fp16_without_flags_or_pins(tmp_path: Path, release: str) -> None:
    sidecar, builder, trt = build(tmp_path, release, precision="fp16", strongly_typed=not release.startswith("11"),
                                  onnx_kwargs={"fp16": True}, onnx_name="tiny.fp16.onnx")
    strong = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert builder._network._flags == strong and pinned(builder) == []
    assert flags(trt, builder) & {"FP16", "INT8"} == set()
    assert sidecar.strongly_typed and sidecar.pins == {}
    assert sidecar.precision_built == "fp16"
    if release.startswith("11"):
        assert sidecar.notes[0].startswith(f"TensorRT {trt.__version__} has no precision flags: built strongly typed")


@pytest.mark.parametrize("release", NO_DLA + ["10.3.0"])
def test_implicit_int8_needs_a_weakly_typed_build(tmp_path: Path, release: str) -> None:
    with pytest.raises(ExportError, match="implicit INT8 needs a calibrator and a weakly typed build"):
        build(tmp_path, release, precision="int8", quant="implicit", calibrator=object(),
              strongly_typed=release.startswith("10"))


@pytest.mark.parametrize("release", ["8.5.2", "8.6.1"])
def test_strong_typing_needs_tensorrt_9(tmp_path: Path, release: str) -> None:
    with pytest.raises(ExportError, match=r"TensorRT 8\.\d\.\d\.\d+ cannot build strongly typed networks"):
        build(tmp_path, release, strongly_typed=True)


@pytest.mark.parametrize("release", WEAK)
def test_explicit_int8_needs_qdq_nodes(tmp_path: Path, release: str) -> None:
    with pytest.raises(ExportError, match="no Q/DQ nodes"):
        build(tmp_path, release, precision="int8", quant="explicit")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ExportError, match="precision must be one of"):
        EngineBuildConfig(precision="fp8")
    with pytest.raises(ExportError, match="quant must be one of"):
        EngineBuildConfig(quant="dynamic")
    with pytest.raises(ExportError, match="DLA runs FP16 or INT8 only"):
        EngineBuildConfig(precision="fp32", dla_core=0)


# -- FP32 pins and what the engine really runs ---------------------------------------------------
@pytest.mark.parametrize("release", WEAK)
def test_fp16_pins_contract_nodes_and_layernorm_pieces(tmp_path: Path, release: str) -> None:
    sidecar, builder, trt = build(tmp_path, release, precision="fp16")
    expected = ["/head/Conv"] + LN_PINS
    assert pinned(builder) == expected and sidecar.pins == {"fp32": expected}
    for layer in builder._network._layers:
        if layer.name in expected:
            assert layer.precision == trt.float32 and layer.get_output_type(0) == trt.float32
        else:   # the concat, the final scale/shift and the fusion branch stay in FP16
            assert not layer.output_type_is_set(0)


@pytest.mark.parametrize("release", WEAK)
def test_layer_report_is_stored_and_counted(tmp_path: Path, release: str, caplog) -> None:
    caplog.set_level(logging.INFO, logger="mrfs_edge.engine.builder")
    sidecar, _, _ = build(tmp_path, release, precision="fp16")
    report = json.loads(layers_path(tmp_path / "tiny.engine").read_text())
    assert report == sidecar.layers == read_sidecar(tmp_path / "tiny.engine").layers
    by_name = {layer["name"]: layer for layer in report["layers"]}
    assert by_name["/head/Conv"]["precision"] == "FP32" and by_name["/fuse/Conv"]["precision"] == "FP16"
    assert report["counts"] == {"INT8": 0, "FP16": 5, "FP32": 8, "other": 0, "GPU": 13, "DLA": 0}
    assert "tiny.onnx: 13 layers: 0 INT8, 5 FP16, 8 FP32; 0 on DLA" in caplog.text
    assert sidecar.precision_built == "fp16"


@pytest.mark.parametrize("release", WEAK)
def test_an_fp32_pin_that_did_not_hold_fails_the_build(tmp_path: Path, release: str) -> None:
    trt = fake_tensorrt(release, ignore_fp32_pins=("/norm/",))    # the builder fuses LayerNorm to FP16
    with pytest.raises(ExportError, match=r"7 FP32 pin\(s\) did not hold .*: /norm/ReduceMean, /norm/Sub"):
        build(tmp_path, trt=trt, precision="fp16")
    assert not (tmp_path / "tiny.engine").exists()
    sidecar, _, _ = build(tmp_path, trt=trt, precision="fp16", require_pins=False)
    assert any("did not hold" in note for note in sidecar.notes)


def test_pattern_pins_can_be_switched_off(tmp_path: Path) -> None:
    _, builder, _ = build(tmp_path, precision="fp16", pin_patterns=False, fp32_nodes=["/norm/Pow", "/nope"])
    assert pinned(builder) == ["/norm/Pow"]
    assert read_sidecar(tmp_path / "tiny.engine").notes == ["1 FP32 node(s) matched no TensorRT layer: /nope"]


@pytest.mark.parametrize("release", [r for r in WEAK if r != "8.5.2"])
def test_fused_layernorm_is_pinned_from_86(tmp_path: Path, release: str) -> None:
    _, builder, _ = build(tmp_path, release, precision="fp16", onnx_kwargs={"layernorm": "fused"})
    assert pinned(builder) == ["/head/Conv", "/norm/LayerNormalization"]


def test_integer_layers_are_never_pinned(tmp_path: Path) -> None:
    from mrfs_edge.engine.pins import select_fp32_layers

    _, builder, trt = build(tmp_path, precision="fp32")
    layer = builder._network._layers[0]
    layer._out[0]._dtype = trt.int32
    layers, unmatched = select_fp32_layers(TrtApi(trt), builder._network, [layer.name], patterns=False)
    assert layers == [] and unmatched == []


def test_85_reports_layernorm_parser_error_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ExportError) as caught:
        build(tmp_path, "8.5.2", onnx_kwargs={"layernorm": "fused"})
    assert str(caught.value).splitlines() == [
        "tiny.onnx: TensorRT 8.5.2.2 ONNX parser: node #3: No importer registered for op: LayerNormalization",
        "tiny.onnx: TensorRT 8.5.2.2 has no LayerNormalization; re-export the ONNX for it (--trt-compat 8.5)"]


@pytest.mark.parametrize("release", [r for r in RELEASES if not r.startswith("8")])
def test_10_parser_errors_name_the_node(tmp_path: Path, release: str) -> None:
    trt = fake_tensorrt(release)
    onnx_path = tmp_path / "tiny.onnx"
    make_tiny_onnx(onnx_path, tiny_contract())
    import onnx

    model = onnx.load(onnx_path)
    model.graph.node[-1].op_type = "Unique"          # an op TensorRT's ONNX parser has no importer for
    onnx.save(model, onnx_path)
    with pytest.raises(ExportError, match=r"node /fuse/Sigmoid \(Unique\): No importer"):
        build(tmp_path, trt=trt, precision="fp32")


# -- profiles, DLA, timing cache ---------------------------------------------------------------
@pytest.mark.parametrize("release", RELEASES)
def test_profiles_come_from_the_dynamic_contract(tmp_path: Path, release: str) -> None:
    onnx = {"fp16": True} if release.startswith("11") else {}
    sidecar, builder, trt = build(tmp_path, release, contract=tiny_contract(dynamic=True), onnx_kwargs=onnx)
    (profile,) = builder._config._profiles
    assert [tuple(d) for d in profile.get_shape("visible")] == [(1, 3, 32, 32), (2, 3, 64, 64), (4, 3, 128, 128)]
    assert sidecar.profiles == [{"visible": [[1, 3, 32, 32], [2, 3, 64, 64], [4, 3, 128, 128]],
                                 "infrared": [[1, 1, 32, 32], [2, 1, 64, 64], [4, 1, 128, 128]]}]
    assert sidecar.input_shapes == {"visible": [2, 3, 64, 64], "infrared": [2, 1, 64, 64]}


def test_static_graph_needs_no_profile(tmp_path: Path) -> None:
    sidecar, builder, _ = build(tmp_path)
    assert builder._config.num_optimization_profiles == 0 and sidecar.profiles == []
    assert sidecar.input_shapes == {"visible": [1, 3, 32, 64], "infrared": [1, 1, 32, 64]}


@pytest.mark.parametrize("release", WEAK)
def test_dla_with_gpu_fallback_says_where_layers_run(tmp_path: Path, release: str) -> None:
    trt = fake_tensorrt(release, dla_cores=2)
    sidecar, builder, _ = build(tmp_path, trt=trt, precision="int8", dla_core=1, onnx_kwargs={"qdq": True})
    assert builder._config.default_device_type == trt.DeviceType.DLA and builder._config.DLA_core == 1
    assert "GPU_FALLBACK" in flags(trt, builder)
    assert sidecar.dla_core == 1
    devices = {layer["name"]: layer["device"] for layer in sidecar.layers["layers"]}
    assert devices["/fuse/Conv"] == "DLA" and devices["/norm/ReduceMean"] == "GPU"
    assert sidecar.layers["counts"]["DLA"] == sum(d == "DLA" for d in devices.values()) > 0


def test_dla_core_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="DLA core 2 requested, this machine has 2 DLA core"):
        build(tmp_path, trt=fake_tensorrt("8.5.2", dla_cores=2), dla_core=2)


@pytest.mark.parametrize("release", NO_DLA)
def test_tensorrt_11_has_no_dla(tmp_path: Path, release: str) -> None:
    with pytest.raises(ExportError, match=r"TensorRT 11\.\d\.0\.\d+ has no DLA support \(11\.0 to 11\.3\)"):
        build(tmp_path, trt=fake_tensorrt(release, dla_cores=2), dla_core=0, strongly_typed=True,
              onnx_kwargs={"fp16": True})


def test_dla_refuses_a_dynamic_profile(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"DLA needs static shapes \(min = opt = max\)"):
        build(tmp_path, trt=fake_tensorrt("10.3.0", dla_cores=1), dla_core=0, contract=tiny_contract(dynamic=True))


def test_dla_takes_only_the_entropy_calibrator(tmp_path: Path) -> None:
    trt = fake_tensorrt("10.3.0", dla_cores=1)
    calibrator = make_calibrator(TrtApi(trt), [], tmp_path / "c.cache", "minmax", memory=FakeCudaMemory())
    with pytest.raises(ExportError, match="DLA takes only the entropy calibrator .* not 'minmax'"):
        EngineBuildConfig(precision="int8", quant="implicit", dla_core=0, calibrator=calibrator)


@pytest.mark.parametrize("release", WEAK)
def test_timing_cache_round_trip(tmp_path: Path, release: str) -> None:
    cache = tmp_path / "timing.cache"
    sidecar, _, _ = build(tmp_path, release, timing_cache=cache)
    assert cache.read_bytes() == b"FAKECACHE Fake GPU\n" and sidecar.notes == []
    _, second, _ = build(tmp_path, release, timing_cache=cache)
    assert second._config.get_timing_cache() is not None


@pytest.mark.parametrize("release", WEAK)
def test_timing_cache_of_another_gpu_is_replaced_with_a_warning(tmp_path: Path, release: str) -> None:
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"FAKECACHE Other GPU\ntactics")
    sidecar, builder, _ = build(tmp_path, release, timing_cache=cache)
    assert any(note.startswith("timing cache timing.cache was made on another GPU") for note in sidecar.notes)
    assert builder._config.get_timing_cache()._device == "Fake GPU"
    assert cache.read_bytes() == b"FAKECACHE Fake GPU\n"


# -- outputs -----------------------------------------------------------------------------------
def test_engine_and_matching_sidecar_are_written(tmp_path: Path) -> None:
    sidecar, _, _ = build(tmp_path, "10.3.0", precision="fp16")
    engine = tmp_path / "tiny.engine"
    assert read_sidecar(engine) == sidecar
    assert sidecar.engine_sha256 == hashlib.sha256(engine.read_bytes()).hexdigest()
    assert sidecar.onnx_sha256 == hashlib.sha256((tmp_path / "tiny.onnx").read_bytes()).hexdigest()
    assert (sidecar.tensorrt_version, sidecar.gpu_name, sidecar.compute_capability) == ("10.3.0.30", "Orin", (8, 7))
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


@pytest.mark.parametrize("release", RELEASES)
def test_built_engine_runs_like_onnx_runtime(tmp_path: Path, release: str) -> None:
    contract = tiny_contract(dynamic=True)
    onnx = {"fp16": True} if release.startswith("11") else {}
    _, _, trt = build(tmp_path, release, contract=contract, onnx_kwargs=onnx)
    feed = random_pair(2, 64, 32, seed=3)
    with TensorRTRunner(tmp_path / "tiny.engine", trt=trt, machine=Machine(trt.__version__, "Orin", (8, 7)),
                        memory_factory=FakeCudaMemory) as runner:
        outputs = runner.infer(feed)
        report = runner.layer_report
        assert "FP32" in runner.describe() and report["counts"]["GPU"] == len(report["layers"]) >= 13
    for name, expected in onnx_runtime_outputs(tmp_path / "tiny.onnx", feed).items():
        np.testing.assert_allclose(outputs[name], expected, rtol=1e-5, atol=1e-5)


# -- implicit INT8 calibration -----------------------------------------------------------------
def batches(count: int, seen: list[int], shape=(1, 32, 64)) -> Iterator[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    n, h, w = shape
    for index in range(count):
        seen.append(index)
        yield {"visible": rng.random((n, 3, h, w), np.float32), "infrared": rng.random((n, 1, h, w), np.float32)}


class Untouchable:
    def __iter__(self):
        raise AssertionError("the calibration data was read although a cache exists")


class PairsWithABadFile:
    """Like CalibrationSet: named pairs; decoding the second one fails."""

    names = ["0001D.png", "0002N.png", "0003D.png"]

    def __iter__(self):
        yield from batches(1, [])
        raise ValueError("cannot decode image")


@pytest.mark.parametrize("release", WEAK)
def test_implicit_int8_calibrates_then_reuses_the_cache(tmp_path: Path, release: str) -> None:
    trt, cache, seen = fake_tensorrt(release), tmp_path / "calib.cache", []
    memory = FakeCudaMemory()
    calibrator = make_calibrator(TrtApi(trt), batches(3, seen), cache, "entropy", memory=memory)
    assert isinstance(calibrator, trt.IInt8EntropyCalibrator2)
    first, builder, _ = build(tmp_path, trt=trt, precision="int8", quant="implicit", calibrator=calibrator)
    assert builder._config.int8_calibrator is calibrator and "INT8" in flags(trt, builder)
    assert seen == [0, 1, 2] and memory.htod_count == 6       # 3 batches × 2 inputs reached the device
    assert b"batches: 3" in cache.read_bytes()
    assert first.calibration.size == 3 and len(first.calibration.set_sha256) == 64
    assert first.quant == "implicit" and first.layers["counts"]["INT8"] > 0
    calibrator.close()
    assert memory.owned == set()

    reuse = make_calibrator(TrtApi(trt), Untouchable(), cache, "entropy", memory=FakeCudaMemory())
    second, _, _ = build(tmp_path, trt=trt, precision="int8", quant="implicit", calibrator=reuse)
    assert reuse.reused
    assert second.calibration == first.calibration           # provenance survives through the cache note


def test_cache_of_another_method_is_not_reused(tmp_path: Path) -> None:
    cache, seen = tmp_path / "calib.cache", []
    cache.write_bytes(b"old")
    cache_note_path(cache).write_text('{"method": "entropy", "set_sha256": null, "size": 0}')
    trt = fake_tensorrt("8.6.1")
    calibrator = make_calibrator(TrtApi(trt), batches(2, seen), cache, "minmax", memory=FakeCudaMemory())
    assert isinstance(calibrator, trt.IInt8MinMaxCalibrator)
    assert calibrator.read_calibration_cache() is None and not calibrator.reused


def test_cache_of_another_calibration_set_is_not_reused(tmp_path: Path) -> None:
    cache = tmp_path / "calib.cache"
    trt = fake_tensorrt("10.3.0")
    first = make_calibrator(TrtApi(trt), batches(1, []), cache, memory=FakeCudaMemory(), fingerprint="set-a")
    sidecar, _, _ = build(tmp_path, trt=trt, precision="int8", quant="implicit", calibrator=first)
    assert sidecar.calibration.set_sha256 == "set-a" and sidecar.calibration.size == 1
    same = make_calibrator(TrtApi(trt), Untouchable(), cache, memory=FakeCudaMemory(), fingerprint="set-a")
    assert same.read_calibration_cache() is not None
    other = make_calibrator(TrtApi(trt), batches(1, []), cache, memory=FakeCudaMemory(), fingerprint="set-b")
    assert other.read_calibration_cache() is None


@pytest.mark.parametrize("release", WEAK)
def test_bad_calibration_batch_fails_the_build(tmp_path: Path, release: str) -> None:
    trt = fake_tensorrt(release)
    calibrator = make_calibrator(TrtApi(trt), [{"visible": np.zeros((1, 3, 32, 64), np.float32)}],
                                 tmp_path / "c.cache", memory=FakeCudaMemory())
    with pytest.raises(ExportError, match=r"INT8 calibration failed: calibration batch #0: ValueError: "
                                          r"lacks inputs \['infrared'\]"):
        build(tmp_path, trt=trt, precision="int8", quant="implicit", calibrator=calibrator)


@pytest.mark.parametrize("release", WEAK)
def test_exception_mid_calibration_fails_the_build_naming_the_pair(tmp_path: Path, release: str) -> None:
    trt = fake_tensorrt(release)
    calibrator = make_calibrator(TrtApi(trt), PairsWithABadFile(), tmp_path / "c.cache", memory=FakeCudaMemory())
    with pytest.raises(ExportError, match=r"tiny\.onnx: INT8 calibration failed: calibration pair 0002N\.png \(#1\): "
                                          r"ValueError: cannot decode image"):
        build(tmp_path, trt=trt, precision="int8", quant="implicit", calibrator=calibrator)
    assert not (tmp_path / "tiny.engine").exists() and not (tmp_path / "tiny.engine.json").exists()


@pytest.mark.parametrize("release", WEAK)
def test_dynamic_calibration_profile_is_the_data_shape(tmp_path: Path, release: str) -> None:
    trt = fake_tensorrt(release)
    calibrator = make_calibrator(TrtApi(trt), batches(2, []), tmp_path / "c.cache", memory=FakeCudaMemory())
    sidecar, builder, _ = build(tmp_path, trt=trt, contract=tiny_contract(dynamic=True), precision="int8",
                                quant="implicit", calibrator=calibrator)
    profile = builder._config.get_calibration_profile()
    assert [tuple(d) for d in profile.get_shape("visible")] == [(1, 3, 32, 64)] * 3   # contract batch and size
    assert sidecar.calibration.size == 2


@pytest.mark.parametrize("release", WEAK)
def test_calibration_batch_of_another_shape_fails_the_build(tmp_path: Path, release: str) -> None:
    trt = fake_tensorrt(release)
    calibrator = make_calibrator(TrtApi(trt), batches(1, [], shape=(2, 32, 64)), tmp_path / "c.cache",
                                 memory=FakeCudaMemory())
    with pytest.raises(ExportError, match=r"visible has shape \[2, 3, 32, 64\], the calibration profile is "
                                          r"\[1, 3, 32, 64\]"):
        build(tmp_path, trt=trt, contract=tiny_contract(dynamic=True), precision="int8", quant="implicit",
              calibrator=calibrator)


def test_calibrator_methods(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'entropy' or 'minmax'"):
        make_calibrator(TrtApi(fake_tensorrt("10.3.0")), [], tmp_path / "c", "percentile", memory=FakeCudaMemory())
    for release in NO_DLA:
        with pytest.raises(ExportError, match=r"TensorRT 11\.\d\.0\.\d+ has no implicit INT8 calibration"):
            make_calibrator(TrtApi(fake_tensorrt(release)), [], tmp_path / "c", memory=FakeCudaMemory())


def test_implicit_int8_needs_a_calibrator(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="needs a calibrator"):
        build(tmp_path, precision="int8", quant="implicit")


# -- status and versions -----------------------------------------------------------------------
def test_status_without_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    ok, reason = machine_module.tensorrt_status()
    assert not ok and reason.startswith("TensorRT not installed")


def test_status_without_gpu_and_with_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from mrfs_edge.backends.cuda_memory import CudaError

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.3.0"))

    def no_gpu(device: int = 0):
        raise CudaError("no CUDA GPU visible")

    monkeypatch.setattr(machine_module, "gpu_properties", no_gpu)
    assert machine_module.tensorrt_status() == (False, "no CUDA GPU visible")
    monkeypatch.setattr(machine_module, "gpu_properties", lambda: ("Orin", (8, 7)))
    assert machine_module.tensorrt_status() == (True, "TensorRT 10.3.0.30 on Orin (sm_87)")
    assert machine_module.machine_info() == Machine("10.3.0.30", "Orin", (8, 7))


@pytest.mark.parametrize("text, parsed", [("8.5.2.2", (8, 5, 2)), ("10.3.0", (10, 3, 0)), ("11.0", (11, 0, 0)),
                                          ("10.13.0.35", (10, 13, 0))])
def test_parse_version(text: str, parsed: tuple[int, int, int]) -> None:
    assert parse_version(text) == parsed
