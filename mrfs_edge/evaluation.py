"""Segmentation evaluation of any backend over a labelled pair folder (authors' mIoU).

A backend is a runner (its contract and ``infer(feed)``), or a function
``infer(visible, infrared) -> (seg, fused)`` on numpy NCHW float inputs (PyTorch during
training). Both go through the model I/O adapter (:mod:`mrfs_edge.processing.adapter`) that
the runtime uses, so PyTorch, ONNX Runtime and TensorRT, float or uint8 I/O, logits or labels,
are scored by one implementation and a model the runtime runs is one evaluation can score.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Callable, Tuple, Union  # run-time aliases subscript on 3.8

import numpy as np

from mrfs_edge.core.contract import ModelContract
from mrfs_edge.io.pairs import Pair
from mrfs_edge.metrics.segmentation import SegmentationScore
from mrfs_edge.processing.adapter import ModelAdapter, ModelRunner

# typing's generics: a run-time alias must subscript on Python 3.8 (JetPack 5)
InferFn = Callable[[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]
Model = Union[ModelRunner, InferFn]


class FunctionRunner:
    """An :data:`InferFn` as a runner: float NCHW inputs (1-channel infrared), logits or labels out.

    Its contract has no size: an evaluation adapter sizes each input from its pair.
    """

    def __init__(self, infer: InferFn, num_classes: int = 0) -> None:
        self.function = infer
        self.contract = ModelContract("function", num_classes, 0, 0, 0)

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        seg, fused = self.function(feed["visible"], feed["infrared"])
        return {self.contract.seg_name: seg, "fused": fused}


def as_runner(model: Model, num_classes: int = 0) -> ModelRunner:
    return model if isinstance(model, ModelRunner) else FunctionRunner(model, num_classes)


def evaluation_adapter(runner: ModelRunner, scale: float = 1.0) -> ModelAdapter:
    """Each pair at its own size (times ``scale``), padded to the stride; logits resized back, then argmax.

    This is the authors' evaluation; a fixed-size model must be given pairs of its size.
    """
    return ModelAdapter(runner.contract, size="frame", scale=scale, upsample="logits")


def predict_labels(model: Model, pair: Pair, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Class map ``H×W`` (uint8) and fused ``3×H×W`` (float32 in [0, 1]) for one pair at its own resolution.

    ``scale`` < 1 runs the network on a downscaled pair and resizes logits back (bilinear),
    for models trained at reduced resolution.
    """
    runner = as_runner(model)
    (output,) = evaluation_adapter(runner, scale).run(runner, [(pair.visible, pair.infrared)])
    return output.labels, output.fused_unit()


def evaluate_segmentation(model: Model, pairs: Iterable[Pair], num_classes: int,
                          class_names: tuple[str, ...] | None = None, scale: float = 1.0,
                          progress: Callable[[Iterable[Pair]], Iterable[Pair]] | None = None) -> SegmentationScore:
    """Accumulate the authors' confusion matrix over ``pairs`` (each must have a label)."""
    score = SegmentationScore(num_classes, class_names)
    runner = as_runner(model, num_classes)
    adapter = evaluation_adapter(runner, scale)
    for pair in progress(pairs) if progress else pairs:
        if pair.label is None:
            raise ValueError(f"pair {pair.name} has no label")
        (output,) = adapter.run(runner, [(pair.visible, pair.infrared)])
        score.update(pair.label, output.labels)
    return score
