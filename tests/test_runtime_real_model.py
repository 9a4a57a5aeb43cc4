"""The bundled demo model through ``runtime/run.py`` with torch unimportable, against PyTorch.

The stand-in model (test_runtime_pipeline) proves the plumbing; here the real MRFS export must
give the PyTorch segmentation through the torch-free script, the same outputs from lossless
videos as from folders, and nearly the same segmentation from 16-bit thermal frames. Four
eval pairs (day and night) keep the module near a minute on a 2-core CPU.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_runtime_pipeline import raw_outputs, run_script
from test_runtime_sources import write_video

from mrfs_edge.assets import DEMO_CHECKPOINT, SAMPLES
from mrfs_edge.evaluation import predict_labels
from mrfs_edge.io.images import read_infrared, read_visible
from mrfs_edge.io.pairs import Pair
from mrfs_edge.processing.preprocess import fused_to_uint8

NAMES = ["00147D", "00508D", "00734N", "01502D"]     # sorted: the order the script writes them in
SIXTEEN_BIT = ["00508D", "01502D"]                   # 8-bit originals spanning (nearly) 0..255


def copy_pairs(root: Path, names: list[str]) -> Path:
    for sub in ("vi", "ir"):
        (root / sub).mkdir(parents=True)
        for name in names:
            shutil.copy(SAMPLES / sub / f"{name}.png", root / sub)
    return root


def run_demo(model: Path, visible: Path, infrared: Path, cwd: Path, *flags: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Run the script (ONNX Runtime, torch blocked) and return its saved (labels, fused BGR) per frame."""
    out = cwd / "out"
    result = run_script("--model", str(model), "--backend", "onnxruntime-cpu", "--threads", "1",
                        "--visible", str(visible), "--infrared", str(infrared), "--output", str(out),
                        "--save-raw", "--no-display", *flags, cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert len(list(out.glob("*.jpg"))) == len(list(out.glob("label/*.png"))) > 0     # overlays written too
    return raw_outputs(out)


@pytest.fixture(scope="module")
def folder_run(demo_onnx, tmp_path_factory) -> list[tuple[np.ndarray, np.ndarray]]:
    root = copy_pairs(tmp_path_factory.mktemp("folders"), NAMES)
    outputs = run_demo(demo_onnx, root / "vi", root / "ir", root)
    assert sorted(p.stem for p in (root / "out").glob("*.jpg")) == NAMES
    return outputs


@pytest.fixture(scope="module")
def pytorch_reference() -> list[tuple[np.ndarray, np.ndarray]]:
    """(labels, fused RGB uint8) per pair from the checkpoint, preprocessed as evaluation does."""
    torch = pytest.importorskip("torch")
    from mrfs_edge.model import load_checkpoint

    model = load_checkpoint(DEMO_CHECKPOINT)

    def infer(visible: np.ndarray, infrared: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            seg, fused = model(torch.from_numpy(visible), torch.from_numpy(infrared))
        return seg.numpy(), fused.numpy()

    reference = []
    for name in NAMES:
        pair = Pair(name, read_visible(SAMPLES / "vi" / f"{name}.png"), read_infrared(SAMPLES / "ir" / f"{name}.png"))
        labels, fused = predict_labels(infer, pair)
        reference.append((labels, fused_to_uint8(fused)))
    return reference


def test_script_segmentation_matches_pytorch(folder_run, pytorch_reference):
    assert len(folder_run) == len(pytorch_reference) == len(NAMES)
    for name, (labels, fused_bgr), (ref_labels, ref_fused) in zip(NAMES, folder_run, pytorch_reference):
        assert labels.shape == ref_labels.shape == (480, 640)
        agreement = float(np.mean(labels == ref_labels))
        assert agreement >= 0.999, f"{name}: {100 * agreement:.3f}% of pixels agree with PyTorch"
        fused_error = np.abs(cv2.cvtColor(fused_bgr, cv2.COLOR_BGR2RGB).astype(int) - ref_fused).max()
        assert fused_error <= 1, f"{name}: fused image differs by {fused_error} grey levels"


def test_lossless_videos_give_the_folder_outputs(demo_onnx, folder_run, tmp_path):
    vis_video = write_video(tmp_path / "vi.mkv", [cv2.imread(str(SAMPLES / "vi" / f"{n}.png")) for n in NAMES])
    ir_video = write_video(tmp_path / "ir.mkv", [read_infrared(SAMPLES / "ir" / f"{n}.png") for n in NAMES], grey=True)
    from_video = run_demo(demo_onnx, vis_video, ir_video, tmp_path)
    assert len(from_video) == len(folder_run)
    for name, (labels_v, fused_v), (labels_f, fused_f) in zip(NAMES, from_video, folder_run):
        assert np.array_equal(labels_v, labels_f), name
        assert np.array_equal(fused_v, fused_f), name


def test_sixteen_bit_thermal_segments_like_the_eight_bit_original(demo_onnx, folder_run, tmp_path):
    root = copy_pairs(tmp_path, SIXTEEN_BIT)
    for name in SIXTEEN_BIT:             # a radiometric camera: counts = offset + gain × 8-bit level
        ir8 = read_infrared(root / "ir" / f"{name}.png")
        cv2.imwrite(str(root / "ir" / f"{name}.png"), ir8.astype(np.uint16) * 40 + 7000)
        assert cv2.imread(str(root / "ir" / f"{name}.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    # A min–max stretch (no smoothing) maps these frames back to within a few grey levels of the
    # originals; the default 1–99 % stretch deliberately raises contrast and so changes more.
    from_sixteen = run_demo(demo_onnx, root / "vi", root / "ir", root,
                            "--thermal-low", "0", "--thermal-high", "100", "--thermal-smoothing", "0")
    eight_bit = dict(zip(NAMES, folder_run))
    for name, (labels, _) in zip(SIXTEEN_BIT, from_sixteen):
        agreement = float(np.mean(labels == eight_bit[name][0]))
        assert agreement >= 0.99, f"{name}: 16-bit agrees with 8-bit on {100 * agreement:.2f}% of pixels"
