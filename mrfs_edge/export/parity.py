"""ONNX Runtime vs PyTorch parity on real pairs: the check every export must pass."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..assets import EVAL_SPLIT, SAMPLES
from ..backends.onnxruntime_runner import OnnxRuntimeRunner
from ..contract import ModelContract
from ..data.pairs import PairFolder
from ..model.network import MRFS
from .options import ExportOptions


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


def batch_inputs(frames: list[tuple[np.ndarray, np.ndarray]], start: int, shape: tuple[int, int, int]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """uint8 NHWC visible and infrared batches resized to ``shape``, cycling over ``frames``."""
    n, h, w = shape
    vis, ir = [], []
    for k in range(n):
        visible, infrared = frames[(start + k) % len(frames)]
        vis.append(cv2.resize(visible, (w, h), interpolation=cv2.INTER_AREA))
        ir.append(cv2.resize(infrared, (w, h), interpolation=cv2.INTER_AREA)[..., None])
    return np.stack(vis), np.stack(ir)


def check_parity(model: MRFS, onnx_path: Path, contract: ModelContract, options: ExportOptions,
                 data: str | os.PathLike[str] | None = None, split: str | os.PathLike[str] | None = None
                 ) -> list[ParityResult]:
    frames = parity_frames(data, split, options.parity_pairs)
    runner = OnnxRuntimeRunner(onnx_path, contract=contract)
    results = []
    with runner:
        for shape in test_shapes(contract):
            seg_diff, fused_diff, agree, total = 0.0, 0.0, 0, 0
            for start in range(0, len(frames), shape[0]):
                vis_u8, ir_u8 = batch_inputs(frames, start, shape)
                vis = vis_u8.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
                ir = ir_u8.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
                if contract.ir_channels == 3:
                    ir = np.repeat(ir, 3, axis=1)
                    ir_u8 = np.repeat(ir_u8, 3, axis=3)
                with torch.inference_mode():
                    ref_seg, ref_fused = (t.numpy() for t in model(torch.from_numpy(vis), torch.from_numpy(ir)))
                feed = {"visible": vis_u8, "infrared": ir_u8} if contract.uint8_io else {"visible": vis, "infrared": ir}
                out = runner.infer(feed)
                seg, fused = out[contract.seg_name], out["fused"]
                labels = seg if contract.seg_output == "labels" else seg.argmax(axis=1)
                if contract.seg_output == "logits":
                    seg_diff = max(seg_diff, float(np.abs(seg - ref_seg).max()))
                if contract.uint8_io:
                    ref_u8 = np.clip(np.rint(ref_fused * 255.0), 0, 255).transpose(0, 2, 3, 1)
                    fused_diff = max(fused_diff, float(np.abs(fused.astype(np.float32) - ref_u8).max()))
                else:
                    fused_diff = max(fused_diff, float(np.abs(fused - ref_fused).max()))
                agree += int((labels == ref_seg.argmax(axis=1)).sum())
                total += labels.size
            agreement = agree / total
            fused_limit = 1.0 if contract.uint8_io else options.tolerance
            passed = (fused_diff <= fused_limit and agreement >= options.min_agreement
                      and (contract.seg_output == "labels" or seg_diff <= options.tolerance))
            results.append(ParityResult(shape, None if contract.seg_output == "labels" else seg_diff,
                                        fused_diff, agreement, passed))
    return results
