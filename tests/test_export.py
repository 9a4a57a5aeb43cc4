"""Checkpoint → ONNX export (issue 4): valid graphs that ONNX Runtime runs like PyTorch.

Deterministic official-format checkpoints (seeded random weights, B0/9 classes and B2/15
classes) are exported once per configuration (module-scoped cache) and compared here with
PyTorch on real bundled frames, independently of the exporter's own parity check.
Most cases stay on B0 at 256×320 to keep CI time down, and only the graphs whose simplification
matters (the shipped static graph, dynamic H×W, labels, TensorRT 8.5) pay for onnxslim (~15 s each
on a loaded 2-core machine).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from conftest import REPO  # noqa: E402
from model_factory import B0_9, B2_15, write_checkpoint  # noqa: E402

from mrfs_edge.assets import SAMPLES  # noqa: E402
from mrfs_edge.core.cli import run_cli  # noqa: E402
from mrfs_edge.core.contract import METADATA_KEY  # noqa: E402
from mrfs_edge.core.errors import ExportError  # noqa: E402
from mrfs_edge.core.export_options import ExportOptions  # noqa: E402
from mrfs_edge.export import ExportResult, export_onnx  # noqa: E402
from mrfs_edge.model import load_checkpoint  # noqa: E402
from mrfs_edge.tools.export_onnx import main as export_main  # noqa: E402

TOLERANCE = 1e-3
FRAMES = ["00147D", "00734N"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def checkpoints(workdir) -> dict[str, Path]:
    return {"b0": write_checkpoint(workdir / "mrfs_b0_c9.pth", B0_9, seed=0),
            "b2": write_checkpoint(workdir / "mrfs_b2_c15.pth", B2_15, seed=1, form="half")}


@pytest.fixture(scope="module")
def models(checkpoints) -> dict:
    return {}


def torch_model(checkpoints, models, which: str):
    if which not in models:
        models[which] = load_checkpoint(checkpoints[which])
    return models[which]


@pytest.fixture(scope="module")
def exported(workdir, checkpoints):
    """``exported(tag, which, **options) -> ExportResult``, each export done once per module."""
    cache: dict[str, ExportResult] = {}

    def get(tag: str, which: str = "b0", **options) -> ExportResult:
        if tag not in cache:
            options.setdefault("parity_pairs", 1)
            cache[tag] = export_onnx(checkpoints[which], workdir / f"{tag}.onnx", ExportOptions(**options))
        return cache[tag]
    return get


def session(path: Path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def frames_u8(batch: int, height: int, width: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Real bundled pairs resized to H×W: visible N×H×W×3 RGB and infrared N×H×W×1, uint8."""
    vis, ir = [], []
    for k in range(batch):
        name = FRAMES[(offset + k) % len(FRAMES)]
        bgr = cv2.imread(str(SAMPLES / "vi" / f"{name}.png"))
        grey = cv2.imread(str(SAMPLES / "ir" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        vis.append(cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)[:, :, ::-1])
        ir.append(cv2.resize(grey, (width, height), interpolation=cv2.INTER_AREA)[:, :, None])
    return np.ascontiguousarray(np.stack(vis)), np.stack(ir)


def to_float(vis: np.ndarray, ir: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (vis.transpose(0, 3, 1, 2).astype(np.float32) / 255.0, ir.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)


def reference(model, vis: np.ndarray, ir: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        seg, fused = model(torch.from_numpy(vis), torch.from_numpy(ir))
    return seg.numpy(), fused.numpy()


def assert_matches_torch(path: Path, model, batch: int, height: int, width: int, seg_name: str = "seg_logits"):
    vis, ir = to_float(*frames_u8(batch, height, width))
    seg, fused = session(path).run([seg_name, "fused"], {"visible": vis, "infrared": ir})
    ref_seg, ref_fused = reference(model, vis, ir)
    assert seg.shape == ref_seg.shape == (batch, model.config.num_classes, height, width)
    assert fused.shape == ref_fused.shape == (batch, 3, height, width)
    assert float(np.abs(seg - ref_seg).max()) <= TOLERANCE
    assert float(np.abs(fused - ref_fused).max()) <= TOLERANCE
    assert float(ref_seg.std()) > 0.05  # the comparison has something to compare
    return seg, fused


def graph_dims(path: Path) -> dict[str, list]:
    graph = onnx.load(str(path), load_external_data=False).graph
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(graph.input) + list(graph.output)}


# --------------------------------------------------------------------------- sizes
def test_sizes_not_multiple_of_32_are_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError) as info:
        ExportOptions(height=240, width=320)
    message = str(info.value)
    assert "240" in message and "multiple of 32" in message and "256" in message and "\n" not in message
    with pytest.raises(ValueError, match="--width 330"):
        ExportOptions(height=256, width=330)


def test_cli_refuses_240(capsys) -> None:
    assert run_cli(export_main, ["--height", "240", "--width", "320", "--output", "unused.onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --height 240 is not a positive multiple of 32")


# --------------------------------------------------------------------------- static graphs
def test_static_b0_256x320(exported, checkpoints, models) -> None:
    result = exported("b0_256x320", height=256, width=320)
    path = result.path
    onnx.checker.check_model(str(path), full_check=True)
    assert result.size_bytes == path.stat().st_size and result.export_seconds > 0
    assert all(r.passed for r in result.parity)
    assert graph_dims(path) == {"visible": [1, 3, 256, 320], "infrared": [1, 1, 256, 320],
                                "seg_logits": [1, 9, 256, 320], "fused": [1, 3, 256, 320]}
    metadata = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    contract = json.loads(metadata[METADATA_KEY])
    assert (contract["backbone"], contract["num_classes"], contract["decoder_embed_dim"]) == ("mit_b0", 9, 256)
    assert (contract["height"], contract["width"], contract["opset"]) == (256, 320, 17)
    assert path.with_suffix(".trt_compat.txt").read_text().strip() == result.report.text()
    assert json.loads(path.with_suffix(".trt_compat.json").read_text())["opset"] == 17
    assert_matches_torch(path, torch_model(checkpoints, models, "b0"), 1, 256, 320)


def test_static_b0_480x640(exported, checkpoints, models) -> None:
    result = exported("b0_480x640", height=480, width=640, simplify=False)
    onnx.checker.check_model(str(result.path), full_check=True)
    assert graph_dims(result.path)["seg_logits"] == [1, 9, 480, 640]
    assert_matches_torch(result.path, torch_model(checkpoints, models, "b0"), 1, 480, 640)


def test_static_b2_15_classes(exported, checkpoints, models) -> None:
    result = exported("b2_256x320", which="b2", height=256, width=320, simplify=False)
    assert result.contract.backbone == "mit_b2" and result.contract.num_classes == 15
    assert len(result.contract.class_names) == 15
    onnx.checker.check_model(str(result.path), full_check=True)
    assert_matches_torch(result.path, torch_model(checkpoints, models, "b2"), 1, 256, 320)


# --------------------------------------------------------------------------- dynamic graphs
def test_dynamic_height_width(exported, checkpoints, models) -> None:
    result = exported("b0_dyn_hw", height=256, width=320, dynamic="hw")
    onnx.checker.check_model(str(result.path), full_check=True)
    dims = graph_dims(result.path)
    assert dims["visible"] == [1, 3, "height", "width"] and dims["infrared"] == [1, 1, "height", "width"]
    assert dims["seg_logits"] == [1, 9, "height", "width"]
    assert result.contract.dynamic == {"height": [128, 256, 256], "width": [160, 320, 320]}
    # Counted at its optimum shape, the dynamic graph costs what the static one does.
    assert result.cost == exported("b0_256x320", height=256, width=320).cost and result.cost.graph_gmacs > 0
    model = torch_model(checkpoints, models, "b0")
    for height, width in ((256, 320), (480, 640), (128, 160)):
        assert_matches_torch(result.path, model, 1, height, width)


def test_dynamic_batch(exported, checkpoints, models) -> None:
    result = exported("b0_dyn_batch", height=256, width=320, dynamic="batch", simplify=False)
    onnx.checker.check_model(str(result.path), full_check=True)
    dims = graph_dims(result.path)
    assert dims["visible"] == ["batch", 3, 256, 320] and dims["infrared"] == ["batch", 1, 256, 320]
    assert dims["seg_logits"] == ["batch", 9, 256, 320] and dims["fused"] == ["batch", 3, 256, 320]
    seg, _ = assert_matches_torch(result.path, torch_model(checkpoints, models, "b0"), 2, 256, 320)
    assert not np.array_equal(seg[0], seg[1])


# --------------------------------------------------------------------------- output/input variants
def test_labels_output_is_the_argmax_of_logits(exported, checkpoints, models) -> None:
    logits_graph = exported("b0_256x320", height=256, width=320).path
    labels_graph = exported("b0_labels", height=256, width=320, seg_output="labels").path
    onnx.checker.check_model(str(labels_graph), full_check=True)
    assert graph_dims(labels_graph)["seg_labels"] == [1, 256, 320]
    vis, ir = to_float(*frames_u8(1, 256, 320, offset=1))
    labels, fused = session(labels_graph).run(["seg_labels", "fused"], {"visible": vis, "infrared": ir})
    logits, fused_ref = session(logits_graph).run(["seg_logits", "fused"], {"visible": vis, "infrared": ir})
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, logits.argmax(axis=1))
    np.testing.assert_array_equal(fused, fused_ref)
    # And against PyTorch, except where the two best classes are closer than the float noise.
    ref_seg, _ = reference(torch_model(checkpoints, models, "b0"), vis, ir)
    top2 = np.sort(ref_seg, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-4
    assert clear.mean() > 0.99 and len(np.unique(labels)) > 1
    np.testing.assert_array_equal(labels[clear], ref_seg.argmax(axis=1)[clear])


def test_trt85_graph_has_no_layernorm_and_still_matches(exported, checkpoints, models) -> None:
    result = exported("b0_trt85", height=256, width=320, trt_compat="8.5")
    model_proto = onnx.load(str(result.path))
    onnx.checker.check_model(str(result.path), full_check=True)
    ops = {node.op_type for node in model_proto.graph.node}
    assert "LayerNormalization" not in ops and "ReduceMean" in ops
    assert max(o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx")) <= 16
    assert result.report.blockers("8.5") == []
    assert_matches_torch(result.path, torch_model(checkpoints, models, "b0"), 1, 256, 320)


def test_uint8_io_equals_float_io_on_frame_over_255(exported) -> None:
    float_graph = exported("b0_256x320", height=256, width=320).path
    u8_graph = exported("b0_u8", height=256, width=320, uint8_io=True, simplify=False).path
    onnx.checker.check_model(str(u8_graph), full_check=True)
    dims = graph_dims(u8_graph)
    assert dims["visible"] == [1, 256, 320, 3] and dims["infrared"] == [1, 256, 320, 1]
    assert dims["fused"] == [1, 256, 320, 3]
    vis_u8, ir_u8 = frames_u8(1, 256, 320)
    seg_u8, fused_u8 = session(u8_graph).run(["seg_logits", "fused"], {"visible": vis_u8, "infrared": ir_u8})
    vis_f, ir_f = to_float(vis_u8, ir_u8)
    seg_f, fused_f = session(float_graph).run(["seg_logits", "fused"], {"visible": vis_f, "infrared": ir_f})
    assert fused_u8.dtype == np.uint8
    assert float(np.abs(seg_u8 - seg_f).max()) <= 1e-4
    expected = np.clip(np.rint(fused_f[0].transpose(1, 2, 0) * 255.0), 0, 255)
    step = np.abs(fused_u8[0].astype(np.int16) - expected)
    assert step.max() <= 1 and (step == 0).mean() > 0.999   # only rounding ties may differ


# --------------------------------------------------------------------------- reports and failures
def test_compatibility_report_for_b0(exported) -> None:
    report = exported("b0_256x320", height=256, width=320).report
    assert report.opset == 17 and report.op_counts["LayerNormalization"] > 0
    assert "op LayerNormalization not supported" in report.blockers("8.5")
    for version in ("8.6", "10.x"):
        assert not any("LayerNormalization" in b for b in report.blockers(version)), version
    summary = report.as_dict()
    assert summary["parses_on"]["8.5"] is False
    text = report.text()
    assert "TensorRT 8.5: BLOCKED" in text and "LayerNormalization" in text


def test_failed_parity_leaves_no_file(workdir, checkpoints) -> None:
    output = workdir / "must_not_exist.onnx"
    with pytest.raises(ExportError) as info:
        export_onnx(checkpoints["b0"], output, ExportOptions(height=64, width=64, simplify=False,
                                                             tolerance=-1.0, parity_pairs=1))
    assert str(output) in str(info.value) and "parity" in str(info.value)
    assert not output.exists() and not list(workdir.glob("must_not_exist*"))


def test_export_script_bad_checkpoint_one_line_exit_2(tmp_path) -> None:
    bad = tmp_path / "broken.pth"
    bad.write_text("not a checkpoint")
    output = tmp_path / "out.onnx"
    process = subprocess.run([sys.executable, str(REPO / "export" / "export_onnx.py"), "--checkpoint", str(bad),
                              "--output", str(output)], capture_output=True, text=True, timeout=300)
    assert process.returncode == 2, process.stderr
    lines = process.stderr.strip().splitlines()
    assert "Traceback" not in process.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: not a PyTorch checkpoint")
    assert not output.exists()


def test_export_cli_missing_checkpoint_in_process(tmp_path, capsys) -> None:
    missing = tmp_path / "missing.pth"
    assert run_cli(export_main, ["--checkpoint", str(missing), "--output", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {missing}: no such file"]
