"""Segmentation metrics exactly as the MRFS authors compute them (numpy only).

One confusion matrix is accumulated over the whole set; IoU per class is
``TP / (TP + FP + FN)``; mIoU is the mean over classes with NaN (absent from both ground
truth and prediction) skipped and class 0 included.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np


def confusion_matrix(label: np.ndarray, prediction: np.ndarray, num_classes: int,
                     ignore_index: int | None = 255) -> np.ndarray:
    """``C×C`` int64 matrix, rows = ground truth, columns = prediction.

    Pixels whose label is ``ignore_index`` or outside ``[0, C)`` are not counted.
    """
    label = np.asarray(label).reshape(-1).astype(np.int64)
    prediction = np.asarray(prediction).reshape(-1).astype(np.int64)
    if label.shape != prediction.shape:
        raise ValueError(f"label has {label.size} pixels but prediction has {prediction.size}")
    valid = (label >= 0) & (label < num_classes)
    if ignore_index is not None:
        valid &= label != ignore_index
    counts = np.bincount(num_classes * label[valid] + prediction[valid], minlength=num_classes ** 2)
    return counts[: num_classes ** 2].reshape(num_classes, num_classes)


def iou_per_class(matrix: np.ndarray) -> np.ndarray:
    """``IoU_c = M[c,c] / (Σ_j M[c,j] + Σ_i M[i,c] − M[c,c])``; NaN where the class never occurs."""
    matrix = matrix.astype(np.float64)
    tp = np.diag(matrix)
    union = matrix.sum(axis=1) + matrix.sum(axis=0) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return tp / union


def mean_iou(matrix: np.ndarray) -> float:
    """Mean of :func:`iou_per_class` over the classes that are not NaN (class 0 included)."""
    ious = iou_per_class(matrix)
    if np.all(np.isnan(ious)):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(ious))


def pixel_accuracy(matrix: np.ndarray) -> float:
    """Correctly labelled pixels over all counted pixels: ``trace(M) / ΣM``."""
    total = matrix.sum()
    return float(np.trace(matrix) / total) if total else float("nan")


@dataclass
class SegmentationScore:
    """Accumulates a confusion matrix over a set and reports the authors' figures."""

    num_classes: int
    class_names: tuple[str, ...] | None = None
    matrix: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, label: np.ndarray, prediction: np.ndarray) -> None:
        self.matrix += confusion_matrix(label, prediction, self.num_classes)

    @property
    def ious(self) -> np.ndarray:
        return iou_per_class(self.matrix)

    @property
    def miou(self) -> float:
        return mean_iou(self.matrix)

    @property
    def accuracy(self) -> float:
        return pixel_accuracy(self.matrix)

    def names(self) -> tuple[str, ...]:
        return self.class_names or tuple(str(i) for i in range(self.num_classes))

    def as_dict(self) -> dict[str, object]:
        """JSON-ready summary: NaN IoUs become ``None``."""
        return {"miou": _none_if_nan(self.miou), "pixel_accuracy": _none_if_nan(self.accuracy),
                "iou": {n: _none_if_nan(v) for n, v in zip(self.names(), self.ious)}}

    def table(self) -> str:
        """Per-class IoU table in percent, one line per class, then mIoU."""
        lines = [f"{'class':<12} {'IoU %':>7}"]
        for name, value in zip(self.names(), self.ious):
            lines.append(f"{name:<12} {'n/a' if np.isnan(value) else f'{100 * value:7.2f}':>7}")
        lines.append(f"{'mIoU':<12} {100 * self.miou:7.2f}")
        return "\n".join(lines)


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
