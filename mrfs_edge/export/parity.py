"""ONNX Runtime vs PyTorch parity on real pairs: the check every export must pass."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from mrfs_edge.assets import EVAL_SPLIT, SAMPLES
from mrfs_edge.backends.onnxruntime_runner import OnnxRuntimeRunner
from mrfs_edge.core.contract import ModelContract
from mrfs_edge.core.export_options import ExportOptions
from mrfs_edge.io.pairs import PairFolder
from mrfs_edge.metrics.agreement import AgreementScore
from mrfs_edge.model.network import MRFS
from mrfs_edge.processing.adapter import ModelAdapter


@dataclass
class ParityResult:
    shape: tuple[int, int, int]
    seg_max_abs: float | None      # None when the graph outputs labels
    fused_max_abs: float
    agreement: float
    passed: bool

    def summary(self) -> str:
        seg = "labels" if self.seg_max_abs is None else f"seg max|Δ| {self.seg_max_abs:.2e}"
        verdict = "ok" if self.passed else "FAILED"
        n, h, w = self.shape
        return (f"parity {n}x{h}x{w}: {seg}, fused max|Δ| {self.fused_max_abs:.2e}, "
                f"argmax agreement {100 * self.agreement:.3f}% [{verdict}]")


def test_shapes(contract: ModelContract) -> list[tuple[int, int, int]]:
    """The static shape, or for dynamic graphs the profile's opt and min shapes."""
    static = (contract.batch, contract.height, contract.width)
    if not contract.dynamic:
        return [static]
    opt, low = list(static), list(static)
    for axis, name in enumerate(("batch", "height", "width")):
        if name in contract.dynamic:
            low[axis], opt[axis] = contract.dynamic[name][0], contract.dynamic[name][1]
    return [tuple(opt), tuple(low)] if opt != low else [tuple(opt)]  # type: ignore[list-item]


def parity_frames(data: str | os.PathLike[str] | None, split: str | os.PathLike[str] | None,
                  count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` real (visible RGB, infrared grey) uint8 frames spread over the set."""
    folder = PairFolder(data, split) if data else PairFolder(SAMPLES, EVAL_SPLIT)
    picks = np.linspace(0, len(folder) - 1, min(count, len(folder))).round().astype(int)
    return [(folder[int(i)].visible, folder[int(i)].infrared) for i in dict.fromkeys(picks)]


def batch_frames(frames: list[tuple[np.ndarray, np.ndarray]], start: int, shape: tuple[int, int, int]
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``shape[0]`` (visible, infrared) frames resized to ``shape``'s H×W, cycling over ``frames``."""
    n, h, w = shape
    return [tuple(cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA) for image in frames[(start + k) % len(frames)])
            for k in range(n)]  # type: ignore[misc]


def check_parity(model: MRFS, onnx_path: Path, contract: ModelContract, options: ExportOptions,
                 data: str | os.PathLike[str] | None = None, split: str | os.PathLike[str] | None = None
                 ) -> list[ParityResult]:
    """ONNX Runtime against PyTorch on the same frames, fed by the model I/O adapter.

    The ONNX file gets the feed of its own contract (uint8 NHWC, 3-channel infrared), PyTorch the
    float NCHW feed of the same pixels; the frames have a test shape, so no padding is involved.
    """
    frames = parity_frames(data, split, options.parity_pairs)
    runner = OnnxRuntimeRunner(onnx_path, contract=contract)
    adapter = ModelAdapter(contract, size="frame")
    reference = ModelAdapter(replace(contract, uint8_io=False), size="frame")
    # uint8 fused frames are compared on the [0, 1] scale: one rounding step is 1/255.
    fused_limit = 1.0 / 255.0 + 1e-6 if contract.uint8_io else options.tolerance
    results = []
    with runner:
        for shape in test_shapes(contract):
            score = AgreementScore()
            for start in range(0, len(frames), shape[0]):
                pairs = batch_frames(frames, start, shape)
                ref_feed, _ = reference.feed(pairs)
                feed, _ = adapter.feed(pairs)
                with torch.inference_mode():
                    ref_seg, ref_fused = (t.numpy() for t in model(*(torch.from_numpy(ref_feed[name])
                                                                     for name in contract.input_names)))
                out = runner.infer(feed)
                for i in range(shape[0]):
                    score.update(ref_seg[i], out[contract.seg_name][i], ref_fused[i], out["fused"][i])
            seg_ok = contract.seg_output == "labels" or (score.max_abs_logits or 0.0) <= options.tolerance
            passed = seg_ok and score.max_abs_fused <= fused_limit and score.pixel_agreement >= options.min_agreement
            results.append(ParityResult(shape, score.max_abs_logits, score.max_abs_fused, score.pixel_agreement, passed))
    return results
