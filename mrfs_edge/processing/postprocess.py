"""Model outputs back to a frame: class map and fused image at the frame's own size.

One policy for every caller (runtime, benchmark, evaluation, parity): crop the padding the
frame was given, resize back if it was resized, and take the class of each pixel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from mrfs_edge.processing.preprocess import FrameFit, fused_to_uint8

# What is resized back when the network saw a resized frame: the class map (argmax first, nearest:
# one plane, what a Jetson can afford per frame) or the logits (bilinear, then argmax: evaluation's).
Upsample = Literal["labels", "logits"]


def argmax_classes(logits: np.ndarray) -> np.ndarray:
    """Per-pixel class (uint8 ``H×W``) of ``C×H×W`` logits; ties keep the lower class, as argmax does.

    Float32 logits go plane by plane through OpenCV (a running maximum and a mask per class),
    about ten times faster than ``logits.argmax(axis=0)``, which walks the class axis with a
    stride of H·W: on a small board every CPU millisecond here is taken from the model.
    """
    if logits.dtype != np.float32:
        return logits.argmax(axis=0).astype(np.uint8)
    best = logits[0].copy()
    labels = np.zeros(logits.shape[1:], np.uint8)
    for c in range(1, len(logits)):
        higher = cv2.compare(logits[c], best, cv2.CMP_GT)          # 255 where class c leads so far
        cv2.max(best, logits[c], dst=best)
        labels = cv2.bitwise_or(cv2.bitwise_and(labels, cv2.bitwise_not(higher)), cv2.bitwise_and(higher, c))
    return labels


@dataclass(frozen=True)
class FrameOutput:
    """One frame's results at its own size.

    ``fused`` stays as the model gives it (``3×H×W`` float in (0, 1), or uint8 from a uint8-I/O
    model), so a benchmark keeps full precision and the runtime pays no float conversion.
    """

    labels: np.ndarray       # H×W uint8 class indices
    fused: np.ndarray        # 3×H×W, the model's dtype

    def fused_rgb(self) -> np.ndarray:
        """RGB ``H×W×3`` uint8, what is drawn and saved (float rounded as in evaluation)."""
        if self.fused.dtype == np.uint8:
            return np.ascontiguousarray(self.fused.transpose(1, 2, 0))
        return fused_to_uint8(self.fused)

    def fused_unit(self) -> np.ndarray:
        """``3×H×W`` float32 in [0, 1], what fusion metrics and agreement compare."""
        if self.fused.dtype == np.uint8:
            return self.fused.astype(np.float32) / 255.0
        return self.fused.astype(np.float32, copy=False)


def restore_frame(seg: np.ndarray, fused: np.ndarray, fit: FrameFit, uint8_io: bool,
                  upsample: Upsample = "labels") -> FrameOutput:
    """One batch item's outputs (``C×H×W`` logits or ``H×W`` labels; fused ``3×H×W`` or uint8 ``H×W×3``)."""
    if seg.ndim == 3 and upsample == "logits" and fit.resized:
        labels = argmax_classes(np.ascontiguousarray(fit.restore(seg.astype(np.float32, copy=False))))
    else:
        classes = argmax_classes(seg) if seg.ndim == 3 else seg.astype(np.uint8)
        labels = fit.restore(classes, nearest=True)
    fused = fit.restore(fused.transpose(2, 0, 1) if uint8_io else fused)
    return FrameOutput(np.ascontiguousarray(labels), np.ascontiguousarray(fused))
