"""The deploy workflow's cache keys: every option that changes a step's output changes its key, and a
changed calibration option makes build_engine.py and the benchmark recalibrate while an unchanged one reuses."""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import pytest

from mrfs_edge.assets import CALIB_SPLIT, SAMPLES
from mrfs_edge.calibration.options import Budget
from mrfs_edge.core.export_options import ExportOptions
from mrfs_edge.deploy import (
    CacheKey,
    EngineBuild,
    Fp16Graph,
    Fp32Onnx,
    QdqGraph,
    reuse_or_build,
    why_rebuild,
)
from mrfs_edge.deploy.keys import record_path
from mrfs_edge.deploy.steps import CHECK_ONLY_EXPORT_FIELDS
from mrfs_edge.io.pairs import PairFolder


@dataclasses.dataclass
class _Calibration:
    """The fields of calibration.pipeline.CalibrationConfig (which needs onnx to import)."""

    count: int = 16
    method: str = "percentile"
    quantizer: str = "builtin"
    mixed_precision: bool = True
    sensitivity_pairs: int = 4
    quantize_attention: bool = False
    budget: Budget = dataclasses.field(default_factory=Budget)


def _file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ---- keys ---------------------------------------------------------------------------------------

EXPORT_CHANGES = {"height": 512, "width": 704, "batch": 2, "opset": 16, "dynamic": "batch", "min_shape": (1, 256, 320),
                  "opt_shape": (1, 480, 640), "max_shape": (4, 480, 640), "seg_output": "labels", "uint8_io": True,
                  "ir_channels": 3, "trt_compat": "10", "simplify": False, "rewrite": False}


def test_every_export_option_that_shapes_the_graph_changes_the_fp32_key(tmp_path):
    checkpoint = _file(tmp_path / "a" / "m.pth", b"weights")
    base = Fp32Onnx(checkpoint).key().digest
    fields = {f.name for f in dataclasses.fields(ExportOptions)}
    assert set(EXPORT_CHANGES) | set(CHECK_ONLY_EXPORT_FIELDS) == fields   # a new option must be listed here
    for name, value in EXPORT_CHANGES.items():
        assert Fp32Onnx(checkpoint, ExportOptions(**{name: value})).key().digest != base, name
    for name, value in {"tolerance": 1e-2, "min_agreement": 0.9, "parity_pairs": 1}.items():   # checks, not content
        assert Fp32Onnx(checkpoint, ExportOptions(**{name: value})).key().digest == base, name
    same_bytes_elsewhere = _file(tmp_path / "b" / "other-name.pth", b"weights")
    assert Fp32Onnx(same_bytes_elsewhere, parity_data=tmp_path).key().digest == base
    assert Fp32Onnx(_file(tmp_path / "c" / "m.pth", b"weight5")).key().digest != base


def test_every_calibration_setting_and_pair_file_changes_the_qdq_key(tmp_path):
    source = _file(tmp_path / "m.onnx", b"fp32 graph")
    pairs = tmp_path / "pairs"
    shutil.copytree(SAMPLES, pairs)
    folder = PairFolder(pairs, CALIB_SPLIT)

    def key(config=None, held_out=None, calib=folder, onnx=source) -> str:
        return QdqGraph(onnx, calib, config or _Calibration(), held_out).key().digest

    base = key()
    changes = {"count": 2, "method": "max", "quantizer": "modelopt", "mixed_precision": False, "sensitivity_pairs": 2,
               "quantize_attention": True}
    assert set(changes) | {"budget"} == {f.name for f in dataclasses.fields(_Calibration)}
    for name, value in changes.items():
        assert key(_Calibration(**{name: value})) != base, name
    for name in ("min_agreement", "min_psnr", "max_miou_drop", "min_int8_mac_fraction", "agreement_margin",
                 "psnr_margin"):
        budget = Budget(**{name: getattr(Budget(), name) / 2})
        assert key(_Calibration(budget=budget)) != base, f"budget.{name}"
    assert key(held_out=PairFolder(pairs, SAMPLES / "eval.txt")) != base
    assert key(onnx=_file(tmp_path / "other.onnx", b"fp32 graph 2")) != base
    assert key(calib=PairFolder(pairs, ["00530D", "00720N", "01120N"])) != base   # another pair list
    shutil.copytree(pairs, tmp_path / "moved")                                     # same files elsewhere
    assert key(calib=PairFolder(tmp_path / "moved", CALIB_SPLIT)) == base
    image = pairs / "ir" / "00720N.png"
    image.write_bytes(image.read_bytes() + b"\0")                                  # one calibration file edited
    assert key() != base
    assert QdqGraph(source, folder, _Calibration()).target(tmp_path / "x") == tmp_path / "x" / "m.int8.onnx"


def test_fp16_and_engine_keys_follow_their_input_and_options(tmp_path):
    from mrfs_edge.engine.builder import EngineBuildConfig

    source = _file(tmp_path / "m.onnx", b"graph")
    fp16 = Fp16Graph(source).key().digest
    engine = EngineBuild(source, EngineBuildConfig(), "TensorRT 10.3 on Orin").key().digest
    changes = {"precision": "int8", "quant": "implicit", "workspace_mib": 2048, "dla_core": 0, "fp32_nodes": ["a"],
               "pin_patterns": False, "strongly_typed": True, "allow_tf32": True, "require_pins": False}
    for name, value in changes.items():
        config = EngineBuildConfig(**{name: value, **({"precision": "int8"} if name == "dla_core" else {})})
        assert EngineBuild(source, config, "TensorRT 10.3 on Orin").key().digest != engine, name
    assert EngineBuild(source, EngineBuildConfig(timing_cache=tmp_path / "t"), "TensorRT 10.3 on Orin").key().digest \
        == engine                                                                   # speeds the build, same engine
    assert EngineBuild(source, EngineBuildConfig(), "TensorRT 8.6 on Orin").key().digest != engine
    assert EngineBuild(source, EngineBuildConfig(), "TensorRT 10.3 on Orin", {"sha256": "x"}).key().digest != engine
    source.write_bytes(b"graph 2")
    assert Fp16Graph(source).key().digest != fp16
    assert EngineBuild(source, EngineBuildConfig(), "TensorRT 10.3 on Orin").key().digest != engine


def test_a_recorded_input_key_reaches_the_downstream_key(tmp_path):
    source = _file(tmp_path / "m.onnx", b"graph")
    before = Fp16Graph(source).key().digest
    reuse_or_build(source, CacheKey("fp32-onnx", {"export": 1}), lambda: None)
    assert Fp16Graph(source).key().digest != before


# ---- the reuse decision -------------------------------------------------------------------------

def test_reuse_only_on_an_exact_key_match_and_say_why(tmp_path, caplog):
    target, builds = tmp_path / "out.onnx", []

    def build() -> None:
        builds.append(1)
        target.write_bytes(b"v%d" % len(builds))

    caplog.set_level(logging.INFO, logger="mrfs_edge.deploy")
    key = CacheKey("qdq-onnx", {"calibration": {"method": "max", "count": 2}})
    assert reuse_or_build(target, key, build) is True and why_rebuild(target, key) is None
    assert "building" in caplog.text and "no earlier file" in caplog.text
    assert reuse_or_build(target, CacheKey("qdq-onnx", {"calibration": {"count": 2, "method": "max"}}), build) is False
    assert "reusing" in caplog.text and len(builds) == 1
    changed = CacheKey("qdq-onnx", {"calibration": {"method": "entropy", "count": 2}})
    assert why_rebuild(target, changed) == "key differs (inputs.calibration.method)"
    assert reuse_or_build(target, changed, build) is True and len(builds) == 2
    target.write_bytes(b"edited by hand")
    assert why_rebuild(target, changed) == "file changed since it was built"
    record_path(target).unlink()
    assert why_rebuild(target, changed) == "no key record out.onnx.key.json beside it"
    assert why_rebuild(target, changed, companions=[tmp_path / "s.json"]) == "s.json missing"


def test_an_interrupted_build_leaves_no_record(tmp_path):
    target = tmp_path / "out.onnx"
    key = CacheKey("fp16-onnx", {"a": 1})
    reuse_or_build(target, key, lambda: target.write_bytes(b"old"))

    def fails() -> None:
        target.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reuse_or_build(target, CacheKey("fp16-onnx", {"a": 2}), fails)
    assert not record_path(target).exists() and why_rebuild(target, key) is not None


def test_the_record_is_plain_json_beside_the_file(tmp_path):
    target = tmp_path / "m.fp16.onnx"
    reuse_or_build(target, CacheKey("fp16-onnx", {"shape": (1, 2)}), lambda: target.write_bytes(b"x"))
    record = json.loads((tmp_path / "m.fp16.onnx.key.json").read_text())
    assert record["step"] == "fp16-onnx" and record["inputs"] == {"shape": [1, 2]} and len(record["key"]) == 64


# ---- the real entry points ----------------------------------------------------------------------

CHEAP = ["--calib-count", "2", "--quantizer", "builtin", "--no-mixed-precision"]


def _calibrations(monkeypatch) -> list[str]:
    """Calls of the real calibrate (the config's method each time)."""
    from mrfs_edge.calibration import pipeline

    calls: list[str] = []
    real = pipeline.calibrate

    def counting(fp32_onnx, out_dir, calib_folder, config, *args, **kwargs):
        calls.append(config.method)
        return real(fp32_onnx, out_dir, calib_folder, config, *args, **kwargs)

    monkeypatch.setattr(pipeline, "calibrate", counting)
    return calls


def test_build_engine_recalibrates_when_a_calibration_option_changes(tmp_path, demo_onnx, monkeypatch, caplog):
    pytest.importorskip("onnx")
    from mrfs_edge.tools import build_engine as cli

    monkeypatch.setattr("mrfs_edge.backends.machine.tensorrt_status", lambda: (False, "TensorRT not installed"))
    calls = _calibrations(monkeypatch)
    caplog.set_level(logging.INFO, logger="mrfs_edge.deploy")
    (tmp_path / "eval1.txt").write_text("00147D\n")
    out = tmp_path / "build"

    def build(method: str) -> int:
        return cli.main(["--int8", "--onnx", str(demo_onnx), "--output-dir", str(out), *CHEAP, "--calib-method", method,
                         "--eval-dir", str(SAMPLES), "--eval-split", str(tmp_path / "eval1.txt")])

    qdq = out / f"{demo_onnx.stem}.int8.onnx"
    build("max")
    first = qdq.read_bytes()
    build("max")
    assert calls == ["max"] and qdq.read_bytes() == first and f"reusing {qdq}" in caplog.text
    summary = json.loads((out / f"{demo_onnx.stem}.int8.build.json").read_text())
    assert summary["int8"]["calibration"]["method"] == "max" and summary["int8"]["held_out"]["pairs"] == 1
    caplog.clear()
    build("entropy")
    assert calls == ["max", "entropy"]
    assert f"building {qdq}: key differs (inputs.calibration.method)" in caplog.text
    assert json.loads((out / f"{demo_onnx.stem}.int8.build.json").read_text())["int8"]["calibration"]["method"] == "entropy"


def test_benchmark_qdq_row_recalibrates_when_its_calibration_config_changes(tmp_path, demo_onnx, monkeypatch, caplog):
    pytest.importorskip("onnx")
    from mrfs_edge.bench.modes import MODES, ModelFiles
    from mrfs_edge.calibration.pipeline import CalibrationConfig

    calls = _calibrations(monkeypatch)
    caplog.set_level(logging.INFO, logger="mrfs_edge.deploy")

    def qdq_for(config: CalibrationConfig) -> Path:   # a fresh benchmark run's model files each time
        files = ModelFiles(Path("unused.pth"), 480, 640, tmp_path / "models", onnx=demo_onnx, calibration=config)
        return files.path_for(MODES["onnxruntime-int8"])

    cheap = {"count": 2, "quantizer": "builtin", "mixed_precision": False}
    path = qdq_for(CalibrationConfig(method="max", **cheap))
    assert qdq_for(CalibrationConfig(method="max", **cheap)) == path and calls == ["max"]
    assert f"reusing {path}" in caplog.text
    caplog.clear()
    assert qdq_for(CalibrationConfig(method="max", **{**cheap, "count": 3})) == path
    assert calls == ["max", "max"] and "key differs (inputs.calibration.count, inputs.calibration.pairs" in caplog.text


def test_the_target_side_of_the_workflow_needs_no_torch_or_onnx(tmp_path):
    """A Jetson keys and reuses engines through mrfs_edge.deploy (build_engine.py --onnx) without them."""
    import subprocess
    import sys

    graph = _file(tmp_path / "m.int8.onnx", b"graph")
    code = ("import sys\n"
            "for name in ('torch', 'onnx', 'onnxconverter_common', 'onnxslim', 'modelopt', 'tensorrt'):\n"
            "    sys.modules[name] = None\n"
            "import mrfs_edge.tools.build_engine\n"
            "from mrfs_edge.deploy import EngineBuild\n"
            "from mrfs_edge.engine.builder import EngineBuildConfig\n"
            f"print(EngineBuild(__import__('pathlib').Path({str(graph)!r}), EngineBuildConfig(precision='int8'), "
            "'TensorRT 10.3 on Orin').key().digest)\n")
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert process.returncode == 0, process.stderr
    from mrfs_edge.engine.builder import EngineBuildConfig

    assert process.stdout.strip() == EngineBuild(graph, EngineBuildConfig(precision="int8"),
                                                 "TensorRT 10.3 on Orin").key().digest


def test_the_cached_demo_onnx_is_reused_only_with_its_key(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from mrfs_edge.assets import DEMO_CHECKPOINT
    from mrfs_edge.deploy import demo
    from mrfs_edge.export import onnx_export

    exports: list[Path] = []

    def export(checkpoint, output, options, *args, **kwargs):
        exports.append(Path(output))
        Path(output).write_bytes(b"exported at %dx%d" % (options.height, options.width))

    monkeypatch.setattr(onnx_export, "export_onnx", export)
    monkeypatch.setattr(demo, "cache_dir", lambda: tmp_path)
    path = demo.default_onnx(256, 320)
    assert exports == [path] and path.parent == tmp_path
    assert demo.default_onnx(256, 320) == path and len(exports) == 1          # key recorded: reused
    (tmp_path / f"{path.name}.key.json").unlink()                              # a file from an older release
    assert demo.default_onnx(256, 320) == path and len(exports) == 2          # no key: exported again
    assert Fp32Onnx(DEMO_CHECKPOINT, ExportOptions(height=256, width=320)).key().digest == json.loads(
        (tmp_path / f"{path.name}.key.json").read_text())["key"]
