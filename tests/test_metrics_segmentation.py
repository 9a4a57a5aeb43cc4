"""Confusion matrix, IoU, mIoU and pixel accuracy exactly as the MRFS authors compute them.

The authors accumulate one confusion matrix over the whole test set, take IoU per class as
TP / (TP + FP + FN), and average over classes skipping NaN (a class absent from both label
and prediction), class 0 included. Run-to-run agreement metrics are covered in
test_metrics_fusion.py.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from mrfs_edge.metrics import (
    SegmentationScore,
    confusion_matrix,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
)


def test_hand_computed_example() -> None:
    label = np.array([[0, 0, 1, 1],
                      [0, 2, 2, 1]])
    prediction = np.array([[0, 1, 1, 1],
                           [0, 2, 0, 2]])
    matrix = confusion_matrix(label, prediction, 4)
    # rows = ground truth, columns = prediction
    np.testing.assert_array_equal(matrix, [[2, 1, 0, 0],
                                           [0, 2, 1, 0],
                                           [1, 0, 1, 0],
                                           [0, 0, 0, 0]])
    assert matrix.dtype == np.int64
    ious = iou_per_class(matrix)
    # class 0: TP 2, FN 1, FP 1 → 2/4; class 1: TP 2, FN 1, FP 1 → 2/4; class 2: TP 1, FN 1, FP 1 → 1/3;
    # class 3: absent from label and prediction → NaN (skipped, not counted as 0).
    np.testing.assert_allclose(ious[:3], [0.5, 0.5, 1 / 3])
    assert math.isnan(ious[3])
    assert mean_iou(matrix) == pytest.approx((0.5 + 0.5 + 1 / 3) / 3)
    assert pixel_accuracy(matrix) == pytest.approx(5 / 8)


def test_class_predicted_but_absent_from_labels_counts_as_zero() -> None:
    label = np.zeros((2, 2), int)
    prediction = np.array([[0, 0], [0, 3]])
    ious = iou_per_class(confusion_matrix(label, prediction, 4))
    assert ious[0] == pytest.approx(3 / 4) and ious[3] == 0.0   # FP only: IoU 0, not NaN
    assert np.isnan(ious[1]) and np.isnan(ious[2])
    assert mean_iou(confusion_matrix(label, prediction, 4)) == pytest.approx((0.75 + 0.0) / 2)


def test_class_zero_is_included() -> None:
    label = np.array([0, 0, 1, 1])
    prediction = np.array([1, 0, 1, 1])
    # class 0 IoU 1/2 and class 1 IoU 2/3: mean 7/12 (would be 2/3 without class 0)
    assert mean_iou(confusion_matrix(label, prediction, 2)) == pytest.approx(7 / 12)


def test_perfect_prediction_is_one() -> None:
    rng = np.random.default_rng(0)
    label = rng.integers(0, 9, (48, 64))
    label[label == 6] = 5  # class 6 absent: NaN, skipped
    matrix = confusion_matrix(label, label, 9)
    assert mean_iou(matrix) == 1.0 and pixel_accuracy(matrix) == 1.0
    assert np.isnan(iou_per_class(matrix)[6])
    assert np.count_nonzero(matrix - np.diag(np.diag(matrix))) == 0


def test_ignore_and_out_of_range_labels_are_not_counted() -> None:
    label = np.array([0, 1, 255, 7, 1])
    prediction = np.array([0, 1, 1, 0, 0])
    matrix = confusion_matrix(label, prediction, 3)
    assert matrix.sum() == 3
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [1, 1, 0], [0, 0, 0]])
    with pytest.raises(ValueError):
        confusion_matrix(label, prediction[:4], 3)


def test_empty_matrix() -> None:
    matrix = np.zeros((3, 3), np.int64)
    assert math.isnan(mean_iou(matrix)) and math.isnan(pixel_accuracy(matrix))


def _reference_confusion(label: np.ndarray, prediction: np.ndarray, n: int) -> np.ndarray:
    matrix = np.zeros((n, n), np.int64)
    for g, p in zip(label.ravel(), prediction.ravel()):
        if 0 <= g < n:
            matrix[g, p] += 1
    return matrix


def test_matches_a_loop_reference_on_random_maps() -> None:
    rng = np.random.default_rng(1)
    label = rng.integers(0, 5, (20, 30))
    prediction = np.where(rng.random((20, 30)) < 0.7, label, rng.integers(0, 5, (20, 30)))
    matrix = confusion_matrix(label, prediction, 5)
    np.testing.assert_array_equal(matrix, _reference_confusion(label, prediction, 5))
    for c in range(5):
        tp = np.sum((label == c) & (prediction == c))
        union = np.sum((label == c) | (prediction == c))
        assert iou_per_class(matrix)[c] == pytest.approx(tp / union)
    assert pixel_accuracy(matrix) == pytest.approx(np.mean(label == prediction))


def test_accumulation_over_a_set_equals_one_big_matrix() -> None:
    rng = np.random.default_rng(2)
    labels = [rng.integers(0, 9, (24, 32)) for _ in range(5)]
    labels[0][:] = 0  # a background-only frame, like 00709N
    predictions = [np.where(rng.random(l.shape) < 0.6, l, rng.integers(0, 9, l.shape)) for l in labels]
    score = SegmentationScore(9)
    for label, prediction in zip(labels, predictions):
        score.update(label, prediction)
    big = confusion_matrix(np.concatenate([l.ravel() for l in labels]),
                           np.concatenate([p.ravel() for p in predictions]), 9)
    np.testing.assert_array_equal(score.matrix, big)
    assert score.miou == mean_iou(big) and score.accuracy == pixel_accuracy(big)
    # ...which is not the mean of per-frame mIoUs.
    per_frame = np.mean([mean_iou(confusion_matrix(l, p, 9)) for l, p in zip(labels, predictions)])
    assert score.miou != pytest.approx(per_frame, abs=1e-6)


def test_score_summary_and_table() -> None:
    score = SegmentationScore(3, ("unlabeled", "car", "person"))
    score.update(np.array([0, 0, 1]), np.array([0, 1, 1]))
    summary = score.as_dict()
    assert summary["iou"]["person"] is None  # NaN → None for JSON
    assert summary["miou"] == pytest.approx(0.5) and summary["pixel_accuracy"] == pytest.approx(2 / 3)
    table = score.table().splitlines()
    assert table[-1].split() == ["mIoU", "50.00"] and "n/a" in table[3]
