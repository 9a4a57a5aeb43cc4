"""Preprocessing identical to the authors' evaluation, in numpy (shared by every backend).

Visible RGB and infrared grey divided by 255 (no mean/std), NCHW float32; frames padded with
zeros to a multiple of 32, half the padding before and half after (odd pixel after), and the
outputs cropped back.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from mrfs_edge.core.contract import ModelContract

STRIDE = 32


@dataclass(frozen=True)
class Padding:
    """Zero padding added around a frame; ``crop`` removes it from an output."""

    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0

    def crop(self, array: np.ndarray) -> np.ndarray:
        """Crop the last two axes of ``array`` (``…×H×W``) back to the unpadded frame."""
        h, w = array.shape[-2], array.shape[-1]
        return array[..., self.top:h - self.bottom, self.left:w - self.right]


def padding_for(height: int, width: int, target: tuple[int, int] | None = None, multiple: int = STRIDE) -> Padding:
    """Padding to ``target`` (H, W) or, without one, up to the next multiple of ``multiple``."""
    if target is None:
        target = (-(-height // multiple) * multiple, -(-width // multiple) * multiple)
    extra_h, extra_w = target[0] - height, target[1] - width
    if extra_h < 0 or extra_w < 0:
        raise ValueError(f"frame {width}x{height} is larger than the network input {target[1]}x{target[0]}")
    return Padding(extra_h // 2, extra_h - extra_h // 2, extra_w // 2, extra_w - extra_w // 2)


def pad_chw(array: np.ndarray, padding: Padding) -> np.ndarray:
    """Zero-pad the last two axes."""
    pads = [(0, 0)] * (array.ndim - 2) + [(padding.top, padding.bottom), (padding.left, padding.right)]
    return np.pad(array, pads) if padding != Padding() else array


def infrared_to_unit(infrared: np.ndarray) -> np.ndarray:
    """Infrared grey to float32 in [0, 1]; 16-bit frames must be gain-controlled to 8 bits first."""
    if infrared.dtype != np.uint8:
        raise ValueError(f"infrared must be 8-bit here (got {infrared.dtype}); apply thermal gain control first")
    return infrared.astype(np.float32) / 255.0


def to_network_inputs(visible_rgb: np.ndarray, infrared: np.ndarray,
                      target: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, Padding]:
    """``(visible 1×3×H×W, infrared 1×1×H×W, padding)`` float32 in [0, 1], padded for the encoder."""
    height, width = visible_rgb.shape[:2]
    padding = padding_for(height, width, target)
    visible = visible_rgb.astype(np.float32).transpose(2, 0, 1)[None] / 255.0
    ir = infrared_to_unit(infrared)[None, None]
    return pad_chw(visible, padding), pad_chw(ir, padding), padding


def fused_to_uint8(fused: np.ndarray) -> np.ndarray:
    """Fused ``3×H×W`` (0, 1) output to an RGB ``H×W×3`` uint8 image (rounded, not min-max)."""
    return np.clip(np.rint(fused.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class FrameFit:
    """How a camera frame was fitted to the model input, and how to map outputs back."""

    padding: Padding
    frame_size: tuple[int, int]   # (H, W) of the original frame
    resized: bool

    def restore(self, array: np.ndarray, nearest: bool = False) -> np.ndarray:
        """Crop the padding off ``…×H×W`` outputs and resize them back to the frame size."""
        array = self.padding.crop(array)
        if not self.resized:
            return array
        height, width = self.frame_size
        flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
        if array.ndim == 2:
            return cv2.resize(array, (width, height), interpolation=flags)
        return np.stack([cv2.resize(channel, (width, height), interpolation=flags) for channel in array])


def fit_to_input(visible_rgb: np.ndarray, infrared: np.ndarray, height: int, width: int
                 ) -> tuple[np.ndarray, np.ndarray, FrameFit]:
    """Frames of any size to the model's ``height×width``: the one place this policy lives.

    Frames no larger than the input are zero-padded (centred), exactly as the authors evaluate;
    larger frames are resized to the input size (bilinear). Returns the visible and infrared
    network inputs (1×3×H×W, 1×1×H×W float32) and the :class:`FrameFit` to restore outputs.
    """
    frame_size = (int(visible_rgb.shape[0]), int(visible_rgb.shape[1]))
    resized = frame_size[0] > height or frame_size[1] > width
    if resized:
        visible_rgb = cv2.resize(visible_rgb, (width, height), interpolation=cv2.INTER_LINEAR)
        infrared = cv2.resize(infrared, (width, height), interpolation=cv2.INTER_LINEAR)
    vis, ir, padding = to_network_inputs(visible_rgb, infrared, (height, width))
    return vis, ir, FrameFit(padding, frame_size, resized)


def fit_at_scale(visible_rgb: np.ndarray, infrared: np.ndarray, scale: float = 1.0
                 ) -> tuple[np.ndarray, np.ndarray, FrameFit]:
    """Frames at their own size times ``scale``, padded to the encoder's stride: evaluation's policy.

    The authors evaluate a pair at its own resolution (``scale`` 1: padding only, exactly
    :func:`to_network_inputs`); a model trained at reduced resolution sees the pair resized by
    ``scale`` (bilinear), and its outputs are resized back to the pair's size.
    """
    frame_size = (int(visible_rgb.shape[0]), int(visible_rgb.shape[1]))
    if scale != 1.0:
        size = (round(frame_size[1] * scale), round(frame_size[0] * scale))
        visible_rgb = cv2.resize(visible_rgb, size, interpolation=cv2.INTER_LINEAR)
        infrared = cv2.resize(infrared, size, interpolation=cv2.INTER_LINEAR)
    vis, ir, padding = to_network_inputs(visible_rgb, infrared)
    return vis, ir, FrameFit(padding, frame_size, scale != 1.0)


def model_layout(visible: np.ndarray, infrared: np.ndarray,
                 contract: ModelContract) -> tuple[np.ndarray, np.ndarray]:
    """Float ``N×C×H×W`` network inputs in the layout ``contract`` takes (3-channel infrared, uint8 NHWC)."""
    if contract.ir_channels == 3:
        infrared = np.repeat(infrared, 3, axis=1)
    if contract.uint8_io:     # the graph divides by 255 itself: the same pixels, as uint8 NHWC
        visible, infrared = (np.rint(x * 255.0).astype(np.uint8).transpose(0, 2, 3, 1) for x in (visible, infrared))
    return visible, infrared


def stack_feed(items: Sequence[tuple[np.ndarray, np.ndarray]], contract: ModelContract) -> dict[str, np.ndarray]:
    """One feed of frames already in the model's layout, stacked along the batch axis.

    Fewer frames than a static batch are filled up with copies of the last frame (only the first
    ``len(items)`` outputs mean anything); more are passed as they are, for the runner to take
    (eager PyTorch takes any batch) or refuse, as a dynamic-batch model gets exactly the frames.
    """
    if not items:
        raise ValueError("no frames to feed")
    static = not (contract.dynamic or {}).get("batch")
    filler = [items[-1]] * (contract.batch - len(items) if static else 0)
    vis, ir = (np.concatenate([item[k] for item in [*items, *filler]]) for k in (0, 1))
    return {"visible": np.ascontiguousarray(vis), "infrared": np.ascontiguousarray(ir)}


def fit_to_model(visible: np.ndarray, infrared: np.ndarray,
                 contract: ModelContract) -> tuple[dict[str, np.ndarray], FrameFit]:
    """The model feed for one registered pair (RGB ``H×W×3`` and 8-bit grey ``H×W``).

    Sizing is the toolkit's one policy, :func:`fit_to_input` (pad smaller frames, resize larger
    ones), so at model size the feed is exactly :func:`to_network_inputs`, the preprocessing used
    in evaluation. The model I/O adapter (:mod:`mrfs_edge.processing.adapter`) and the calibration
    sets feed models through these steps, so a model's layout (3-channel infrared, uint8 NHWC,
    static batch) is honoured once.
    """
    vis, ir, fit = fit_to_input(visible, infrared, contract.height, contract.width)
    return stack_feed([model_layout(vis, ir, contract)], contract), fit
