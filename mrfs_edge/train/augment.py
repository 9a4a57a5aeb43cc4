"""Training-time augmentation of registered pairs: random scale, crop and mirror (numpy).

The same geometric transform is applied to visible, infrared and label so the pair stays
registered; padded pixels get label 255 (ignored by the loss) and mask 0 (ignored by the
fusion loss), as in the authors' training.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mrfs_edge.io.pairs import Pair

IGNORE_LABEL = 255


@dataclass(frozen=True)
class AugmentConfig:
    crop: tuple[int, int] = (240, 320)
    scales: tuple[float, ...] = (0.5, 0.625, 0.75, 0.875, 1.0)
    mirror: bool = True


@dataclass
class Sample:
    """One augmented training sample, arrays in network layout."""

    visible: np.ndarray   # 3×H×W float32 in [0, 1]
    infrared: np.ndarray  # 1×H×W float32 in [0, 1]
    label: np.ndarray     # H×W int64, 255 = ignore
    mask: np.ndarray      # 1×H×W float32, 1 inside the image, 0 in padding


def _resize(image: np.ndarray, scale: float, interpolation: int) -> np.ndarray:
    if scale == 1.0:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=interpolation)


def augment(pair: Pair, rng: np.random.Generator, config: AugmentConfig) -> Sample:
    if pair.label is None:
        raise ValueError(f"pair {pair.name} has no label; training needs labels")
    scale = float(rng.choice(config.scales))
    visible = _resize(pair.visible, scale, cv2.INTER_LINEAR)
    infrared = _resize(pair.infrared, scale, cv2.INTER_LINEAR)
    label = _resize(pair.label, scale, cv2.INTER_NEAREST)
    if config.mirror and rng.random() < 0.5:
        visible, infrared, label = visible[:, ::-1], infrared[:, ::-1], label[:, ::-1]
    crop_h, crop_w = config.crop
    height, width = label.shape
    out_vis = np.zeros((crop_h, crop_w, 3), np.uint8)
    out_ir = np.zeros((crop_h, crop_w), np.uint8)
    out_label = np.full((crop_h, crop_w), IGNORE_LABEL, np.uint8)
    out_mask = np.zeros((crop_h, crop_w), np.float32)
    # Crop offset in the image (when larger) and paste offset in the output (when smaller).
    y0 = int(rng.integers(0, height - crop_h + 1)) if height > crop_h else 0
    x0 = int(rng.integers(0, width - crop_w + 1)) if width > crop_w else 0
    py = int(rng.integers(0, crop_h - height + 1)) if height < crop_h else 0
    px = int(rng.integers(0, crop_w - width + 1)) if width < crop_w else 0
    h, w = min(crop_h, height), min(crop_w, width)
    out_vis[py:py + h, px:px + w] = visible[y0:y0 + h, x0:x0 + w]
    out_ir[py:py + h, px:px + w] = infrared[y0:y0 + h, x0:x0 + w]
    out_label[py:py + h, px:px + w] = label[y0:y0 + h, x0:x0 + w]
    out_mask[py:py + h, px:px + w] = 1.0
    return Sample(out_vis.transpose(2, 0, 1).astype(np.float32) / 255.0,
                  out_ir[None].astype(np.float32) / 255.0,
                  out_label.astype(np.int64), out_mask[None])
