"""What a person watching the vehicle sees: class overlay, fused image and a side-by-side strip.

Colours and class names come from the model's contract, so a model trained on FMB shows FMB's
classes without a flag. Everything here is RGB uint8; sinks convert to BGR at the edge.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from mrfs_edge.processing.preprocess import fused_to_uint8

FONT = cv2.FONT_HERSHEY_SIMPLEX
LEGEND_ROW = 22
SWATCH = 14


def fused_to_rgb(fused: np.ndarray) -> np.ndarray:
    """A fused ``3×H×W`` output of either contract layout to an RGB ``H×W×3`` uint8 image.

    Float in (0, 1) is rounded as in evaluation; a uint8-I/O model's output is already pixels.
    """
    if fused.dtype == np.uint8:
        return fused.transpose(1, 2, 0)
    return fused_to_uint8(fused)


def colorize(labels: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Class-index map ``H×W`` to its palette colours ``H×W×3`` (indices beyond the palette: black).

    A lookup table through OpenCV: drawn for every frame, and several times cheaper than
    numpy fancy indexing, which matters on a board whose CPU the model also needs.
    """
    table = np.zeros((256, 1, 3), np.uint8)
    table[:len(palette), 0] = np.asarray(palette, np.uint8)
    return cv2.LUT(cv2.cvtColor(labels.astype(np.uint8, copy=False), cv2.COLOR_GRAY2RGB), table)


def overlay(image: np.ndarray, labels: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5) -> np.ndarray:
    """Blend class colours over ``image``; class 0 (unlabeled/background) is left clear."""
    labels = labels.astype(np.uint8, copy=False)
    blended = cv2.addWeighted(image, 1.0 - alpha, colorize(labels, palette), alpha, 0.0)
    result = image.copy()
    cv2.copyTo(blended, labels, result)        # where the label is non-zero
    return result


def _legend_items(class_names: Sequence[str], palette: Sequence[Sequence[int]], present: set[int]) -> list[tuple[str, tuple]]:
    """Classes shown in this frame (all but background when none are), with their colours."""
    shown = sorted(present - {0}) or list(range(1, len(class_names)))
    return [(class_names[i], tuple(int(c) for c in palette[i])) for i in shown if i < len(palette)]


def legend(width: int, class_names: Sequence[str], palette: Sequence[Sequence[int]], present: set[int],
           status: str = "") -> np.ndarray:
    """A strip of colour swatches and class names (wrapped to ``width``), status on the first row."""
    rows: list[list[tuple[int, str, tuple]]] = [[]]
    x = 8 + (cv2.getTextSize(status, FONT, 0.45, 1)[0][0] + 24 if status else 0)
    for name, colour in _legend_items(class_names, palette, present):
        step = SWATCH + 6 + cv2.getTextSize(name, FONT, 0.45, 1)[0][0] + 16
        if x + step > width and rows[-1]:
            rows.append([])
            x = 8
        rows[-1].append((x, name, colour))
        x += step
    strip = np.full((LEGEND_ROW * len(rows), width, 3), 32, np.uint8)
    if status:
        cv2.putText(strip, status, (8, 16), FONT, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    for r, row in enumerate(rows):
        top = r * LEGEND_ROW + 4
        for x, name, colour in row:
            cv2.rectangle(strip, (x, top), (x + SWATCH, top + SWATCH), colour, -1)
            cv2.rectangle(strip, (x, top), (x + SWATCH, top + SWATCH), (200, 200, 200), 1)
            cv2.putText(strip, name, (x + SWATCH + 6, top + 12), FONT, 0.45, (230, 230, 230), 1, cv2.LINE_AA)
    return strip


def composite(visible: np.ndarray, infrared: np.ndarray, fused: np.ndarray, labels: np.ndarray,
              class_names: Sequence[str], palette: Sequence[Sequence[int]], status: str = "",
              max_width: int = 2560) -> np.ndarray:
    """``visible | infrared | fused | overlay`` side by side over a legend, RGB uint8.

    ``infrared`` is the 8-bit, registered frame the network saw. The strip is scaled down
    to ``max_width`` so four 1080p panels still fit a screen or a sane video size.
    """
    height, width = visible.shape[:2]
    panels = [visible, cv2.cvtColor(infrared, cv2.COLOR_GRAY2RGB), fused, overlay(visible, labels, palette)]
    strip = np.hstack([p if p.shape[:2] == (height, width) else cv2.resize(p, (width, height)) for p in panels])
    if strip.shape[1] > max_width:
        scale = max_width / strip.shape[1]
        strip = cv2.resize(strip, (max_width, round(strip.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    present = set(np.flatnonzero(np.bincount(labels.ravel(), minlength=1)).tolist())
    return np.vstack([strip, legend(strip.shape[1], class_names, palette, present, status)])
