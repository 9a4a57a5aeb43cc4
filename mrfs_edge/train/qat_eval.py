"""What INT8 costs, measured as users deploy it: the Q/DQ ONNX in ONNX Runtime against the FP32 network.

The FP32 reference runs once per held-out pair (labels and fused image kept), so the graph
before fine-tuning (post-training quantisation) and after (QAT) are scored against the very
same predictions: pixel agreement, fused PSNR, and mIoU of both against the labels.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from mrfs_edge.core.classes import class_names_for
from mrfs_edge.evaluation import predict_labels
from mrfs_edge.io.pairs import Pair
from mrfs_edge.metrics.agreement import AgreementScore
from mrfs_edge.metrics.segmentation import SegmentationScore
from mrfs_edge.model.inference import torch_infer_fn

LOG = logging.getLogger(__name__)


@dataclass
class Reference:
    """The FP32 network's predictions on the held-out pairs."""

    pairs: Sequence[Pair]
    labels: list[np.ndarray]
    fused: list[np.ndarray]
    score: SegmentationScore

    @classmethod
    def compute(cls, model, pairs: Sequence[Pair], num_classes: int) -> Reference:
        infer = torch_infer_fn(model.eval())
        score = SegmentationScore(num_classes, class_names_for(num_classes))
        labels, fused = [], []
        for pair in pairs:
            label, image = predict_labels(infer, pair)
            assert pair.label is not None
            score.update(pair.label, label)
            labels.append(label)
            fused.append(image)
        return cls(pairs, labels, fused, score)


@dataclass
class Int8Figures:
    """One INT8 graph against the FP32 reference (fractions, not percent)."""

    pairs: int
    pixel_agreement: float
    fused_psnr_db: float
    miou_int8: float
    miou_fp32: float

    @property
    def miou_drop_points(self) -> float:
        return 100.0 * (self.miou_fp32 - self.miou_int8)

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "miou_drop_points": self.miou_drop_points}

    def summary(self) -> str:
        return (f"agreement {100 * self.pixel_agreement:.3f}%, fused PSNR {self.fused_psnr_db:.1f} dB, "
                f"mIoU {100 * self.miou_int8:.2f}% vs FP32 {100 * self.miou_fp32:.2f}% "
                f"(drop {self.miou_drop_points:.2f} points) on {self.pairs} held-out pairs")


def measure_onnx(path: str | os.PathLike[str], reference: Reference, threads: int = 1) -> Int8Figures:
    """Run ``path`` through ONNX Runtime (CPU) on the reference's pairs and compare."""
    from mrfs_edge.backends import open_runner

    runner = open_runner(path, "onnxruntime", threads=threads)
    score = SegmentationScore(reference.score.num_classes, reference.score.class_names)
    agreement = AgreementScore()
    with runner:
        for pair, ref_labels, ref_fused in zip(reference.pairs, reference.labels, reference.fused):
            labels, fused = predict_labels(runner, pair)
            assert pair.label is not None
            score.update(pair.label, labels)
            agreement.update(ref_labels, labels, ref_fused, fused)
    return Int8Figures(len(reference.pairs), agreement.pixel_agreement, agreement.fused_psnr,
                       score.miou, reference.score.miou)
