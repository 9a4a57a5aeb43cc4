"""The one model I/O adapter: frames to a model's feed and its outputs back to frames.

Everything a model file says about its inputs and outputs is in its
:class:`~mrfs_edge.core.contract.ModelContract` (float or uint8 NHWC I/O, 1- or 3-channel
infrared, logits or labels, static or dynamic batch and size). The runtime, the benchmark's
latency and accuracy, evaluation and the export's parity check all go through
:class:`ModelAdapter`, so a layout one of them handles is handled by all of them.

The runner is a parameter (:class:`ModelRunner`): this layer sits below the backends.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, Protocol, Tuple, runtime_checkable

import numpy as np

from mrfs_edge.core.contract import ModelContract
from mrfs_edge.processing.postprocess import FrameOutput, Upsample, restore_frame
from mrfs_edge.processing.preprocess import (
    FrameFit,
    fit_at_scale,
    fit_to_input,
    model_layout,
    stack_feed,
)

# (visible RGB H×W×3 uint8, infrared grey H×W uint8); typing's Tuple: subscripted at run time on 3.8
FramePair = Tuple[np.ndarray, np.ndarray]
# Network input size: the model's own (pad smaller frames, resize larger: the runtime's policy), or
# the frame's padded to the encoder's stride (evaluation's, for models of any size).
SizePolicy = Literal["model", "frame"]


@runtime_checkable
class ModelRunner(Protocol):
    """What the adapter needs of a backend: its contract and one inference on a feed dict."""

    @property
    def contract(self) -> ModelContract: ...

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class ModelAdapter:
    """Frames → feed (:meth:`feed`) and outputs → :class:`FrameOutput` per frame (:meth:`restore`).

    ``size`` picks the input size (:data:`SizePolicy`); ``scale`` (``size="frame"`` only) runs
    the network on frames resized by it, for a model trained at reduced resolution; ``upsample``
    says what is resized back when the network saw a resized frame (:data:`Upsample`).
    """

    def __init__(self, contract: ModelContract, size: SizePolicy = "model", scale: float = 1.0,
                 upsample: Upsample = "labels") -> None:
        if scale != 1.0 and size != "frame":
            raise ValueError("a scale applies to frame-sized inputs only (size='frame')")
        self.contract, self.size, self.scale, self.upsample = contract, size, scale, upsample

    def fit(self, visible: np.ndarray, infrared: np.ndarray) -> tuple[np.ndarray, np.ndarray, FrameFit]:
        """Float ``1×C×H×W`` inputs of one pair in the model's layout, and how to map outputs back."""
        if self.size == "model":
            vis, ir, fit = fit_to_input(visible, infrared, self.contract.height, self.contract.width)
        else:
            vis, ir, fit = fit_at_scale(visible, infrared, self.scale)
        vis, ir = model_layout(vis, ir, self.contract)
        return vis, ir, fit

    def feed(self, frames: Sequence[FramePair]) -> tuple[dict[str, np.ndarray], list[FrameFit]]:
        """One feed for ``frames`` (a batch; a static batch is filled) and each frame's fit."""
        items, fits = [], []
        for visible, infrared in frames:
            vis, ir, fit = self.fit(visible, infrared)
            items.append((vis, ir))
            fits.append(fit)
        return stack_feed(items, self.contract), fits

    def restore(self, outputs: Mapping[str, np.ndarray], fits: Sequence[FrameFit]) -> list[FrameOutput]:
        """Each frame's class map and fused image at its own size (extra batch items are ignored)."""
        seg, fused = outputs[self.contract.seg_name], outputs["fused"]
        return [restore_frame(seg[i], fused[i], fit, self.contract.uint8_io, self.upsample)
                for i, fit in enumerate(fits)]

    def run(self, runner: ModelRunner, frames: Sequence[FramePair]) -> list[FrameOutput]:
        """Feed, infer and restore ``frames`` in one call (one batch)."""
        feed, fits = self.feed(frames)
        return self.restore(runner.infer(feed), fits)
