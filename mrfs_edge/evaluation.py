"""Segmentation evaluation of any backend over a labelled pair folder (authors' mIoU).

A backend is reduced to a function ``infer(visible, infrared) -> (seg, fused)`` on numpy NCHW
float inputs; the same loop scores PyTorch, ONNX Runtime and TensorRT, so every figure the
toolkit prints comes from one implementation.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Callable, Tuple

import cv2
import numpy as np

from mrfs_edge.io.pairs import Pair
from mrfs_edge.metrics.segmentation import SegmentationScore
from mrfs_edge.processing.preprocess import to_network_inputs

# typing's generics: a run-time alias must subscript on Python 3.8 (JetPack 5)
InferFn = Callable[[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]


def predict_labels(infer: InferFn, pair: Pair, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Class map ``H×W`` and fused ``3×H×W`` for one pair at its own resolution.

    ``scale`` < 1 runs the network on a downscaled pair and resizes logits back (bilinear),
    for models trained at reduced resolution.
    """
    visible, infrared = pair.visible, pair.infrared
    height, width = pair.size
    if scale != 1.0:
        size = (round(width * scale), round(height * scale))
        visible = cv2.resize(visible, size, interpolation=cv2.INTER_LINEAR)
        infrared = cv2.resize(infrared, size, interpolation=cv2.INTER_LINEAR)
    vis, ir, padding = to_network_inputs(visible, infrared)
    seg, fused = infer(vis, ir)
    seg, fused = padding.crop(seg[0]), padding.crop(fused[0])
    if seg.ndim == 2:  # the graph already took the argmax
        labels = seg if scale == 1.0 else cv2.resize(seg.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
        return labels.astype(np.int64), fused
    if scale != 1.0:
        seg = np.stack([cv2.resize(c, (width, height), interpolation=cv2.INTER_LINEAR) for c in seg])
        fused = np.stack([cv2.resize(c, (width, height), interpolation=cv2.INTER_LINEAR) for c in fused])
    return seg.argmax(axis=0), fused


def evaluate_segmentation(infer: InferFn, pairs: Iterable[Pair], num_classes: int,
                          class_names: tuple[str, ...] | None = None, scale: float = 1.0,
                          progress: Callable[[Iterable[Pair]], Iterable[Pair]] | None = None) -> SegmentationScore:
    """Accumulate the authors' confusion matrix over ``pairs`` (each must have a label)."""
    score = SegmentationScore(num_classes, class_names)
    for pair in progress(pairs) if progress else pairs:
        if pair.label is None:
            raise ValueError(f"pair {pair.name} has no label")
        labels, _ = predict_labels(infer, pair, scale)
        score.update(pair.label, labels)
    return score
