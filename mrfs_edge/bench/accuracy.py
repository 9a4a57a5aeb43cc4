"""Accuracy of one mode on every pair: against ground truth, against the reference, and as a fusion.

Every figure comes from :mod:`mrfs_edge.metrics` and every prediction from
:func:`~mrfs_edge.evaluation.predict_labels`, the loop that scores backends elsewhere in the
toolkit, through the model I/O adapter the runtime uses: the benchmark cannot disagree with
evaluation, and scores every model layout (uint8 I/O, labels, 3-channel infrared) the runtime runs.
Signs: ``miou_drop`` = reference mIoU − this mIoU (positive: worse than the reference);
``per_class_iou_delta`` and ``fusion_delta`` = this − reference.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from mrfs_edge.backends.base import Runner
from mrfs_edge.core.errors import DatasetError
from mrfs_edge.evaluation import predict_labels
from mrfs_edge.io.pairs import Pair
from mrfs_edge.metrics import AgreementScore, SegmentationScore, fusion_metrics
from mrfs_edge.processing.preprocess import fused_to_uint8, padding_for

NO_LABELS = "no ground-truth labels in the data: ground-truth metrics skipped"
# Figures that compare a mode with the reference outputs (null, with the reason, when there are none).
REFERENCE_FIGURES = ("agreement", "fused_psnr", "fused_ssim", "max_abs_fused", "miou_drop", "per_class_iou_delta")


@dataclass
class PairOutputs:
    """What one mode produced for one pair: class map and fused image (float, 3×H×W)."""

    labels: np.ndarray
    fused: np.ndarray


@dataclass
class ModeAccuracy:
    """A mode's figures (``None`` where undefined, the reason in ``reasons`` by figure path)."""

    figures: dict[str, object]
    fusion: dict[str, float]          # mean over pairs of each fusion metric
    fusion_delta: dict[str, float] | None   # this − reference (None: no reference in this run)
    reasons: dict[str, str]
    score: SegmentationScore | None   # None without labels
    outputs: list[PairOutputs]        # every pair's outputs, or the first ``keep``


def _defined(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def network_size(pair: Pair) -> tuple[int, int]:
    """The network input a pair is evaluated at: its size padded to the encoder's stride."""
    padding = padding_for(*pair.size)
    return pair.size[0] + padding.top + padding.bottom, pair.size[1] + padding.left + padding.right


def run_pairs(runner: Runner, pairs: Iterable[Pair],
              tick: Callable[[], None] = lambda: None) -> Iterator[tuple[Pair, PairOutputs]]:
    """Each pair with the runner's prediction for it, at the pair's own resolution.

    A fixed-size model must match every pair (padded to the stride), as the authors evaluate:
    a pair of another size is an error here rather than a silently resized, different score.
    """
    contract = runner.contract
    fixed = None if "height" in (contract.dynamic or {}) else (contract.height, contract.width)
    runner.activate()
    for pair in pairs:
        if fixed is not None and network_size(pair) != fixed:
            raise DatasetError(f"pair {pair.name} is {pair.size[1]}x{pair.size[0]} but the model input is "
                               f"{fixed[1]}x{fixed[0]}: the pairs of one benchmark must share one size")
        labels, fused = predict_labels(runner, pair)
        tick()
        yield pair, PairOutputs(labels, fused)


def score_mode(predictions: Iterable[tuple[Pair, PairOutputs]], class_names: Sequence[str], labelled: bool,
               reference: ModeAccuracy | None = None, keep: int | None = None,
               no_reference: str | None = None) -> ModeAccuracy:
    """Score a mode's predictions against ground truth and ``reference`` (same pairs, same order).

    ``reference`` must have kept every pair's outputs (``keep=None``). Without one the mode *is*
    the reference and is compared with its own outputs, which gives the identities a reader can
    check in the report (agreement 1, mIoU drop 0, deltas 0), unless ``no_reference`` says why
    this run has no reference at all: then the comparison figures are null with that reason and
    only ground truth scores the mode. ``keep`` limits the outputs kept.
    """
    score = SegmentationScore(len(class_names), tuple(class_names)) if labelled else None
    agreement = AgreementScore()
    fusion_sums: dict[str, float] = {}
    kept: list[PairOutputs] = []
    for index, (pair, outputs) in enumerate(predictions):
        ref = reference.outputs[index] if reference is not None else outputs
        if score is not None:
            if pair.label is None:
                raise ValueError(f"pair {pair.name} has no label")
            score.update(pair.label, outputs.labels)
        agreement.update(ref.labels, outputs.labels, ref.fused, outputs.fused)
        for key, value in fusion_metrics(fused_to_uint8(outputs.fused), pair.visible, pair.infrared).items():
            fusion_sums[key] = fusion_sums.get(key, 0.0) + value
        if keep is None or index < keep:
            kept.append(outputs)
    fusion = {key: total / agreement.pairs for key, total in fusion_sums.items()}
    ref_fusion = reference.fusion if reference is not None else fusion
    ref_score = reference.score if reference is not None else score
    figures: dict[str, object] = {"pairs": agreement.pairs, "agreement": agreement.pixel_agreement,
                                  "fused_psnr": agreement.fused_psnr, "fused_ssim": agreement.fused_ssim,
                                  "max_abs_fused": agreement.max_abs_fused}
    reasons: dict[str, str] = {}
    if not math.isfinite(agreement.fused_psnr):
        figures["fused_psnr"] = None
        reasons["accuracy.fused_psnr"] = "fused images identical to the reference's: PSNR is infinite"
    if score is None or ref_score is None:
        for key in ("miou", "pixel_accuracy", "per_class_iou", "miou_drop", "per_class_iou_delta"):
            figures[key] = None
            reasons[f"accuracy.{key}"] = NO_LABELS
    else:
        figures.update(_ground_truth(score, ref_score, reasons))
    fusion_delta: dict[str, float] | None = {key: value - ref_fusion[key] for key, value in fusion.items()}
    if reference is None and no_reference is not None:
        for key in REFERENCE_FIGURES:
            figures[key] = None
            reasons = {path: text for path, text in reasons.items() if not path.startswith(f"accuracy.{key}.")}
            reasons[f"accuracy.{key}"] = no_reference
        fusion_delta = None
        reasons["fusion_delta"] = no_reference
    return ModeAccuracy(figures, fusion, fusion_delta, reasons, score, kept)


def _ground_truth(score: SegmentationScore, ref_score: SegmentationScore, reasons: dict[str, str]) -> dict[str, object]:
    """mIoU, pixel accuracy and per-class IoU, and their change from the reference."""
    per_class: dict[str, float | None] = {}
    per_class_delta: dict[str, float | None] = {}
    for name, iou, ref_iou in zip(score.names(), score.ious, ref_score.ious):
        per_class[name] = float(iou) if _defined(iou) else None
        per_class_delta[name] = float(iou - ref_iou) if _defined(iou) and _defined(ref_iou) else None
        if per_class[name] is None:
            reasons[f"accuracy.per_class_iou.{name}"] = "class absent from both ground truth and prediction"
        if per_class_delta[name] is None:
            reasons[f"accuracy.per_class_iou_delta.{name}"] = "IoU undefined here or in the reference"
    return {"miou": score.miou, "pixel_accuracy": score.accuracy, "miou_drop": ref_score.miou - score.miou,
            "per_class_iou": per_class, "per_class_iou_delta": per_class_delta}
