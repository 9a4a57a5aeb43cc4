"""``build_engine.py`` refuses bad input in one line, exit 2, before any work, and leaves nothing behind.

Each case runs the command's ``main`` through the CLI base (``run_cli``), as the installed
command does, so the exit status and stderr are what a user sees.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mrfs_edge.core.cli import EXIT_SIGINT, EXIT_USER_ERROR, run_cli
from mrfs_edge.tools import build_engine as cli

pytest.importorskip("onnx", reason="the INT8 case calibrates (workstation install)")


def _no_tensorrt(monkeypatch) -> None:
    monkeypatch.setattr("mrfs_edge.backends.machine.tensorrt_status", lambda: (False, "TensorRT not installed"))


def _run(capsys, *argv: str) -> tuple[int, list[str]]:
    status = run_cli(cli.main, list(argv))
    return status, capsys.readouterr().err.strip().splitlines()


def _everything_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("content, reason", [
    (b"input: visible.png\nthis is a text file, not a model\n", "not a readable ONNX protobuf"),
    (bytes(range(256)) * 20, "not a readable ONNX protobuf"),
    (b"\x08\x07", "not an ONNX model (no graph nodes in it)"),   # a valid protobuf (ir_version 7) without a graph
], ids=["text", "random-bytes", "protobuf-without-graph"])
def test_a_file_that_is_no_onnx_is_one_line_and_makes_no_folder(tmp_path, capsys, content, reason):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(content)
    out = tmp_path / "build"
    status, err = _run(capsys, "--int8", "--onnx", str(bad), "--output-dir", str(out))
    assert status == EXIT_USER_ERROR
    assert len(err) == 1 and err[0].startswith(f"error: --onnx {bad}") and reason in err[0]
    assert not out.exists()


def test_a_truncated_onnx_is_one_line_and_makes_no_folder(tmp_path, demo_onnx, capsys):
    cut = tmp_path / "cut.onnx"
    data = demo_onnx.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    out = tmp_path / "build"
    status, err = _run(capsys, "--fp16", "--onnx", str(cut), "--output-dir", str(out))
    assert status == EXIT_USER_ERROR
    assert err == [f"error: --onnx {cut}: not a readable ONNX protobuf (length past the end)"]
    assert not out.exists()


def test_a_checkpoint_passed_as_onnx_is_named_as_one(tmp_path, capsys):
    from mrfs_edge.assets import DEMO_CHECKPOINT

    out = tmp_path / "build"
    status, err = _run(capsys, "--int8", "--onnx", str(DEMO_CHECKPOINT), "--output-dir", str(out))
    assert status == EXIT_USER_ERROR
    assert err == [f"error: --onnx {DEMO_CHECKPOINT}: a PyTorch checkpoint, not an ONNX model "
                   "(pass it as --checkpoint)"]
    assert not out.exists()


def test_an_output_dir_under_a_file_is_refused_before_any_work(tmp_path, demo_onnx, capsys, monkeypatch):
    def no_work(*_args, **_kwargs):
        raise AssertionError("the ONNX was read before --output-dir was checked")

    monkeypatch.setattr(cli, "scan_onnx", no_work)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as stop:   # an argument error: argparse's exit, as for any flag
        cli.main(["--fp16", "--onnx", str(demo_onnx), "--output-dir", str(blocker / "build")])
    assert stop.value.code == EXIT_USER_ERROR
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: argument --output-dir: cannot create folder {blocker / 'build'}: {blocker} is a file, "
        "not a folder (see --help)"]


def test_ctrl_c_during_calibration_leaves_no_intermediate_graph(tmp_path, demo_onnx, capsys, monkeypatch):
    """Interrupted after the fully quantised graph is made (the sensitivity analysis follows)."""
    _no_tensorrt(monkeypatch)

    def interrupt(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("mrfs_edge.calibration.pipeline.node_macs", interrupt)
    out = tmp_path / "build"
    status, err = _run(capsys, "--int8", "--onnx", str(demo_onnx), "--output-dir", str(out), "--calib-count", "2")
    assert status == EXIT_SIGINT and err[-1] == "warning: interrupted (SIGINT)"
    left = _everything_under(out)
    assert not [name for name in left if name.endswith(".onnx") or name.startswith(".")], left


def test_the_target_command_run_here_keeps_the_int8_summary(tmp_path, demo_onnx, capsys, monkeypatch):
    """A Q/DQ graph given to --onnx is the target's build: it writes <engine>.target.build.json."""
    import numpy as np
    import onnx

    _no_tensorrt(monkeypatch)
    model = onnx.load(str(demo_onnx))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(0.1, "float32"), "s"))
    model.graph.node.extend([onnx.helper.make_node("QuantizeLinear", [conv.input[0], "s"], ["q"]),
                             onnx.helper.make_node("DequantizeLinear", ["q", "s"], ["dq"])])
    conv.input[0] = "dq"
    qdq = tmp_path / "model.int8.onnx"
    onnx.save(model, str(qdq))
    workstation = tmp_path / "model.int8.build.json"
    workstation.write_text(json.dumps({"int8": {"budget_met": True, "held_out": {"pixel_agreement": 0.995}}}))
    before = (workstation.read_bytes(), os.stat(workstation).st_mtime_ns)

    status, _ = _run(capsys, "--int8", "--onnx", str(qdq), "--output-dir", str(tmp_path))
    assert status == 0
    assert (workstation.read_bytes(), os.stat(workstation).st_mtime_ns) == before
    target = json.loads((tmp_path / "model.int8.target.build.json").read_text())
    assert "int8" not in target and target["onnx_for_engine"] == str(qdq)
