"""The report's figures: latency against accuracy, per-class IoU, and an image grid per mode.

Matplotlib with the Agg backend (no display needed); segmentation maps are coloured with the
runtime's own palette code, so the grid looks like what the vehicle's screen shows.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrfs_edge.bench.accuracy import PairOutputs
from mrfs_edge.bench.report import first_latency
from mrfs_edge.core.files import atomic_path
from mrfs_edge.io.pairs import Pair
from mrfs_edge.processing.preprocess import fused_to_uint8
from mrfs_edge.processing.visualize import colorize


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(figure)
    return path


def latency_vs_accuracy(rows: Sequence[Mapping[str, Any]], path: Path, labelled: bool) -> Path | None:
    """p50 model-only latency (log scale) against mIoU, or against agreement with the reference without labels."""
    key, axis = ("miou", "mIoU %") if labelled else ("agreement", "pixel agreement with the reference %")
    points = [(r, first_latency(r), (r["accuracy"] or {}).get(key)) for r in rows]
    points = [(r, lat, value) for r, lat, value in points if lat is not None and value is not None]
    if not points:
        return None
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(7, 4.5))
    for row, lat, value in points:
        marker = "s" if row["emulated"] else "o"
        ax.scatter(lat["p50_ms"], 100 * value, s=60, marker=marker, label=f"{row['label']} ({row['device']})")
        ax.annotate(row["mode"], (lat["p50_ms"], 100 * value), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(f"p50 model-only latency, ms (batch {points[0][1]['batch']}, log scale)")
    ax.set_ylabel(axis)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title("Latency vs accuracy per mode")
    return _save(figure, path)


def per_class_iou(rows: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """Grouped bars: one group per class, one bar per mode (absent classes drawn as gaps)."""
    scored = [r for r in rows if (r["accuracy"] or {}).get("per_class_iou")]
    if not scored:
        return None
    classes = list(scored[0]["accuracy"]["per_class_iou"])
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(max(8, 1.1 * len(classes)), 4.5))
    width = 0.8 / len(scored)
    x = np.arange(len(classes))
    for i, row in enumerate(scored):
        values = [row["accuracy"]["per_class_iou"][c] for c in classes]
        ax.bar(x + i * width - 0.4 + width / 2, [100 * v if v is not None else np.nan for v in values], width,
               label=row["label"])
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set_ylabel("IoU %")
    ax.set_ylim(0, 100)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Per-class IoU per mode")
    return _save(figure, path)


def image_grid(pairs: Sequence[Pair], outputs: Mapping[str, Sequence[PairOutputs]],
               palette: Sequence[Sequence[int]], path: Path) -> Path | None:
    """One row per pair: visible, infrared, then each mode's fused image and coloured segmentation."""
    modes = [m for m, outs in outputs.items() if len(outs) >= len(pairs)]
    if not pairs or not modes:
        return None
    plt = _pyplot()
    columns = 2 + 2 * len(modes)
    figure, axes = plt.subplots(len(pairs), columns, figsize=(1.9 * columns, 1.6 * len(pairs) + 0.4), squeeze=False)
    for r, pair in enumerate(pairs):
        panels: list[tuple[str, np.ndarray, str | None]] = [("visible", pair.visible, None),
                                                            ("infrared", pair.infrared, "gray")]
        for mode in modes:
            out = outputs[mode][r]
            panels += [(f"{mode}\nfused", fused_to_uint8(out.fused), None),
                       (f"{mode}\nsegmentation", colorize(out.labels, palette), None)]
        for c, (title, image, cmap) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(image, cmap=cmap)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=6)
        axes[r][0].set_ylabel(pair.name, fontsize=7)
    figure.tight_layout()
    return _save(figure, path)
