"""``export/build_engine.py``: what it writes without TensorRT, and what it asks of the builder with it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx", reason="the tests edit ONNX graphs (workstation install)")

from mrfs_edge.assets import SAMPLES
from mrfs_edge.backends.onnxruntime_runner import read_onnx_contract
from mrfs_edge.backends.sidecar import EngineSidecar, write_sidecar
from mrfs_edge.core.errors import ExportError
from mrfs_edge.engine.builder import EngineBuildConfig
from mrfs_edge.tools import build_engine as cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def two_eval_pairs(tmp_path) -> list[str]:
    (tmp_path / "eval2.txt").write_text("00147D\n01110N\n")
    return ["--eval-dir", str(SAMPLES), "--eval-split", str(tmp_path / "eval2.txt")]


def _no_tensorrt(monkeypatch) -> None:
    monkeypatch.setattr("mrfs_edge.backends.machine.tensorrt_status", lambda: (False, "TensorRT not installed"))


def test_fp16_without_tensorrt_writes_the_pinned_graph_and_its_emulated_agreement(
        tmp_path, demo_onnx, two_eval_pairs, monkeypatch, capsys):
    _no_tensorrt(monkeypatch)
    out = tmp_path / "build"
    assert cli.main(["--fp16", "--onnx", str(demo_onnx), "--output-dir", str(out), *two_eval_pairs]) == 0
    summary = json.loads((out / f"{demo_onnx.stem}.fp16.build.json").read_text())
    half = onnx.load(summary["fp16"]["fp16_onnx"])
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in half.graph.initializer)
    assert summary["fp16"]["emulated"] is True and summary["fp16"]["fp32_pins"] > 0
    held = summary["fp16"]["held_out"]
    assert held["pairs"] == 2 and held["pixel_agreement"] >= 0.999 and held["fused_psnr"] >= 45
    assert summary["engine"] == {"path": None, "reason": "TensorRT not installed"}
    # The target builds the FP16 graph (pins in its types): TensorRT 11 builds strongly typed only.
    half_path = summary["fp16"]["fp16_onnx"]
    assert summary["target_command"].startswith(f"python3 export/build_engine.py --onnx {half_path} --fp16")
    assert summary["onnx_for_engine"] == half_path
    assert "on the target (Jetson), run:" in capsys.readouterr().err
    # The target command, run here, builds the FP16 graph as is and keeps the figures above.
    assert cli.main(["--onnx", half_path, "--fp16", "--output-dir", str(out)]) == 0
    assert "already an FP16 graph" in capsys.readouterr().err
    target = json.loads((out / f"{demo_onnx.stem}.fp16.target.build.json").read_text())
    assert "fp16" not in target and target["onnx_for_engine"] == half_path
    assert json.loads((out / f"{demo_onnx.stem}.fp16.build.json").read_text())["fp16"]["held_out"] == held


def test_require_engine_is_a_one_line_error_after_the_onnx_work(tmp_path, demo_onnx, monkeypatch, capsys):
    _no_tensorrt(monkeypatch)
    from mrfs_edge.core.cli import run_cli

    code = run_cli(cli.main, ["--fp32", "--onnx", str(demo_onnx), "--output-dir", str(tmp_path), "--require-engine"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: --require-engine: TensorRT not installed"
    assert (tmp_path / f"{demo_onnx.stem}.fp32.build.json").exists()


class _RecordingBuild:
    def __init__(self) -> None:
        self.calls: list[tuple[Path, Path, EngineBuildConfig]] = []

    def __call__(self, onnx_path, engine_path, config) -> EngineSidecar:
        self.calls.append((Path(onnx_path), Path(engine_path), config))
        Path(engine_path).write_bytes(b"engine")
        sidecar = EngineSidecar(
            engine_file=Path(engine_path).name, engine_sha256="0" * 64, tensorrt_version="10.3.0", gpu_name="Orin",
            compute_capability=(8, 7), precision=config.precision, strongly_typed=False, quant=config.quant,
            dla_core=config.dla_core, pins={}, input_shapes={}, profiles=[], onnx_file=Path(onnx_path).name,
            onnx_sha256="0" * 64, build_time_s=1.0, built_at="2026-11-27T00:00:00+00:00", toolkit_version="test",
            contract=read_onnx_contract(onnx_path))
        write_sidecar(engine_path, sidecar)   # what the real builder leaves beside the engine
        return sidecar


def test_with_tensorrt_the_builder_gets_the_flags_and_a_qdq_graph_is_built_as_is(tmp_path, demo_onnx, monkeypatch):
    build = _RecordingBuild()
    monkeypatch.setattr("mrfs_edge.backends.machine.tensorrt_status", lambda: (True, "TensorRT 10.3 on Orin"))
    monkeypatch.setattr("mrfs_edge.engine.builder.build_engine", build)
    qdq = tmp_path / "model.int8.onnx"
    model = onnx.load(str(demo_onnx))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    scale = onnx.numpy_helper.from_array(__import__("numpy").array(0.1, "float32"), "s")
    model.graph.initializer.append(scale)
    original = conv.input[0]
    model.graph.node.extend([onnx.helper.make_node("QuantizeLinear", [original, "s"], ["q"]),
                             onnx.helper.make_node("DequantizeLinear", ["q", "s"], ["dq"])])
    conv.input[0] = "dq"
    onnx.save(model, str(qdq))

    assert cli.main(["--int8", "--onnx", str(qdq), "--output-dir", str(tmp_path), "--workspace", "512",
                     "--dla-core", "0", "--timing-cache", str(tmp_path / "t.cache")]) == 0
    (onnx_in, engine, config), = build.calls
    assert onnx_in == qdq and engine == tmp_path / "model.int8.engine"
    assert (config.precision, config.quant, config.workspace_mib, config.dla_core) == ("int8", "explicit", 512, 0)
    assert config.calibrator is None and config.timing_cache == str(tmp_path / "t.cache")
    summary = json.loads((tmp_path / "model.int8.target.build.json").read_text())
    assert summary["engine"]["path"] == str(engine) and "int8" not in summary   # no recalibration


def test_implicit_calibration_refuses_a_method_tensorrt_lacks(tmp_path, demo_onnx, monkeypatch):
    monkeypatch.setattr("mrfs_edge.backends.machine.tensorrt_status", lambda: (True, "TensorRT 8.6"))
    with pytest.raises(ExportError, match="percentile has no TensorRT calibrator"):
        cli.main(["--int8", "--quant", "implicit", "--calib-method", "percentile", "--onnx", str(demo_onnx),
                  "--output-dir", str(tmp_path)])


def test_script_reports_bad_input_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "export" / "build_engine.py"), "--int8", "--onnx",
                             str(tmp_path / "missing.onnx")], check=False, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: argument --onnx: {tmp_path / 'missing.onnx'} does not exist (see --help)"]


def test_tf32_reaches_the_builder_only_when_asked(tmp_path, demo_onnx, monkeypatch):
    build = _RecordingBuild()
    monkeypatch.setattr("mrfs_edge.backends.machine.tensorrt_status", lambda: (True, "TensorRT 10.3 on Orin"))
    monkeypatch.setattr("mrfs_edge.engine.builder.build_engine", build)
    if "allow_tf32" not in EngineBuildConfig.__dataclass_fields__:
        with pytest.raises(ExportError, match="--tf32"):
            cli.main(["--fp32", "--tf32", "--onnx", str(demo_onnx), "--output-dir", str(tmp_path)])
        return
    for flags, expected in (([], False), (["--tf32"], True)):
        assert cli.main(["--fp32", *flags, "--onnx", str(demo_onnx), "--output-dir", str(tmp_path)]) == 0
        assert build.calls[-1][2].allow_tf32 is expected
    assert "--tf32" in json.loads((tmp_path / f"{demo_onnx.stem}.fp32.build.json").read_text())["target_command"]


def test_an_engine_is_reused_for_the_same_flags_and_rebuilt_when_one_changes(tmp_path, demo_onnx, monkeypatch):
    build = _RecordingBuild()
    machine = ["TensorRT 10.3 on Orin (sm87)"]
    monkeypatch.setattr("mrfs_edge.backends.machine.tensorrt_status", lambda: (True, machine[0]))
    monkeypatch.setattr("mrfs_edge.engine.builder.build_engine", build)

    def run(*flags: str) -> dict:
        assert cli.main(["--fp32", "--onnx", str(demo_onnx), "--output-dir", str(tmp_path), *flags]) == 0
        return json.loads((tmp_path / f"{demo_onnx.stem}.fp32.build.json").read_text())["engine"]

    first = run("--workspace", "512")
    assert run("--workspace", "512", "--timing-cache", str(tmp_path / "t.cache")) == first and len(build.calls) == 1
    run("--workspace", "256")
    assert len(build.calls) == 2 and build.calls[-1][2].workspace_mib == 256
    machine[0] = "TensorRT 10.7 on Orin (sm87)"   # an engine runs only on the release that built it
    run("--workspace", "256")
    assert len(build.calls) == 3
