"""A frame's whole way from the cameras to the screen, synchronously: :class:`FrameProcessor`.

Gain control, registration, model feed, inference, restored outputs and the composite, in
that order. :meth:`FrameProcessor.process` runs them one after the other on this thread; the
threaded runtime (:mod:`mrfs_edge.runtime.pipeline`) runs the same steps
(:meth:`~FrameProcessor.prepare`, :meth:`~FrameProcessor.infer`, :meth:`~FrameProcessor.restore`,
:meth:`~FrameProcessor.render`) on a thread each, so both give the same pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from mrfs_edge.core.errors import SourceError
from mrfs_edge.processing.adapter import ModelAdapter, ModelRunner
from mrfs_edge.processing.preprocess import FrameFit
from mrfs_edge.processing.registration import Registration
from mrfs_edge.processing.thermal import ThermalAGC
from mrfs_edge.processing.visualize import composite


class PairSizeError(SourceError):
    """Unregistered cameras whose frames differ in size: the network needs aligned pixels."""


@dataclass
class PreparedFrame:
    """A pair on its way to the model: the 8-bit registered infrared it saw, its feed and fit."""

    visible: np.ndarray
    infrared8: np.ndarray
    feed: dict[str, np.ndarray]
    fit: FrameFit


class FrameResult(NamedTuple):
    labels: np.ndarray       # H×W uint8 class indices, at the visible frame's size
    fused: np.ndarray        # RGB H×W×3 uint8
    composite: np.ndarray    # visible | infrared | fused | overlay over a legend, RGB uint8


class FrameProcessor:
    """``process(visible, infrared)`` through ``runner``: camera frames in, what a person sees out.

    ``thermal`` turns 16-bit frames into 8-bit ones (8-bit pass through); ``registration`` warps
    infrared onto the visible frame, without it both must already have one size.
    """

    def __init__(self, runner: ModelRunner, thermal: ThermalAGC | None = None,
                 registration: Registration | None = None, max_width: int = 2560) -> None:
        self.runner = runner
        self.adapter = ModelAdapter(runner.contract)
        self.thermal = thermal or ThermalAGC()
        self.registration, self.max_width = registration, max_width

    def align(self, visible: np.ndarray, infrared: np.ndarray, names: tuple[str, str] = ("", "")) -> np.ndarray:
        """The infrared frame as 8-bit grey on the visible frame's pixel grid.

        ``names`` (visible, infrared) go into the error of a pair whose sizes differ.
        """
        infrared8 = self.thermal(infrared)
        height, width = visible.shape[:2]
        if self.registration is not None:
            return self.registration.warp(infrared8, (width, height))
        if infrared8.shape[:2] != (height, width):
            vis_name, ir_name = (f" {name}" if name else "" for name in names)
            raise PairSizeError(f"infrared frame{ir_name} is {infrared8.shape[1]}x{infrared8.shape[0]} but visible"
                                f"{vis_name} is {width}x{height}; register the cameras (runtime/register.py) "
                                "and pass --registration FILE")
        return infrared8

    def prepare(self, visible: np.ndarray, infrared: np.ndarray, names: tuple[str, str] = ("", "")) -> PreparedFrame:
        """Gain control, registration and the model feed for one pair."""
        infrared8 = self.align(visible, infrared, names)
        feed, (fit,) = self.adapter.feed([(visible, infrared8)])
        return PreparedFrame(visible, infrared8, feed, fit)

    def infer(self, prepared: PreparedFrame) -> dict[str, np.ndarray]:
        return self.runner.infer(prepared.feed)

    def restore(self, outputs: dict[str, np.ndarray], fit: FrameFit) -> tuple[np.ndarray, np.ndarray]:
        """``(labels H×W uint8, fused RGB H×W×3 uint8)`` at the frame's own size."""
        (output,) = self.adapter.restore(outputs, [fit])
        return output.labels, output.fused_rgb()

    def render(self, visible: np.ndarray, infrared8: np.ndarray, labels: np.ndarray, fused_rgb: np.ndarray,
               status: str = "") -> np.ndarray:
        contract = self.adapter.contract
        return composite(visible, infrared8, fused_rgb, labels, contract.class_names, contract.palette, status,
                         self.max_width)

    def process(self, visible: np.ndarray, infrared: np.ndarray, status: str = "") -> FrameResult:
        """One pair (RGB ``H×W×3`` uint8, infrared 8- or 16-bit) through every step on this thread."""
        prepared = self.prepare(visible, infrared)
        labels, fused = self.restore(self.infer(prepared), prepared.fit)
        return FrameResult(labels, fused, self.render(visible, prepared.infrared8, labels, fused, status))

