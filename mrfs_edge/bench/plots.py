"""The report's figures: accuracy drop against latency, per-class IoU and its change, and an image grid per mode.

Matplotlib with the Agg backend (no display needed). The plots are drawn for a person judging a
precision: accuracy axes show the *change* from the reference on a fixed minimum span, so a
0.2-point drop looks like 0.2 points and not like a cliff; the grids show where a precision
disagrees with the reference, on the pairs where it disagrees most, by day and by night.
Class colours here are the report's own (bright, for tiles drawn over a dimmed camera image),
not the runtime's MFNet palette, whose dark blues and purples vanish on black.
"""
from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mrfs_edge.bench.accuracy import PairOutputs
from mrfs_edge.bench.report import first_latency
from mrfs_edge.core.files import atomic_path
from mrfs_edge.io.pairs import Pair, PairFolder
from mrfs_edge.processing.preprocess import fused_to_uint8

# Bright, mutually distinct colours for MFNet's eight object classes (RGB); class 0 stays clear.
MFNET_REPORT_COLOURS = ((0, 190, 255), (255, 64, 64), (255, 225, 0), (0, 220, 110), (255, 140, 0),
                        (190, 130, 255), (255, 150, 200), (235, 235, 235))
DISAGREEMENT_COLOUR = (255, 0, 255)   # magenta: on a grey image, nothing else in the tile has it
DIM = 0.5                             # brightness of the grey camera image under class colours
MIN_MIOU_SPAN = 1.0                   # points: the accuracy axes show at least ±1 mIoU / IoU point
MIN_DISAGREEMENT_SPAN = 1.0           # percent of pixels, for runs without labels
SMALL_REGION_PIXELS = 150            # differing regions up to this size get a ring in the grid
TILE_INCHES = (3.0, 2.25)             # one 4:3 image tile
TimeOfDay = Literal["day", "night"]


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


# --------------------------------------------------------------------------- colours and maps

def report_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """Class colours that read over a dimmed image: MFNet's set for 9 classes, else spread bright hues."""
    if num_classes == len(MFNET_REPORT_COLOURS) + 1:
        return [(0, 0, 0), *MFNET_REPORT_COLOURS]
    hues = [(0.58 + 0.618034 * i) % 1.0 for i in range(num_classes - 1)]   # golden-ratio steps
    return [(0, 0, 0)] + [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(h, 0.6, 1.0)) for h in hues]


def dimmed_grey(visible: np.ndarray) -> np.ndarray:
    """The visible image as dim grey RGB (``r == g == b``): a backdrop no class colour is confused with."""
    image = np.asarray(visible, np.float32)
    grey = image @ np.array([0.299, 0.587, 0.114], np.float32) if image.ndim == 3 else image
    grey = np.rint(DIM * grey).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def class_overlay(visible: np.ndarray, labels: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Each labelled pixel in its class colour over the dimmed visible image; class 0 shows the image."""
    image = dimmed_grey(visible)
    table = np.zeros((256, 3), np.uint8)
    table[:len(palette)] = np.asarray(palette, np.uint8)
    labels = np.asarray(labels)
    coloured = labels > 0
    image[coloured] = table[labels[coloured].astype(np.intp)]
    return image


def disagreement_mask(labels: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """True where a mode's class differs from the reference's."""
    if labels.shape != reference.shape:
        raise ValueError(f"class maps differ in shape: {labels.shape} vs the reference's {reference.shape}")
    return np.asarray(labels) != np.asarray(reference)


def disagreement_overlay(visible: np.ndarray, labels: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The dimmed visible image with exactly the pixels whose class differs from the reference in magenta."""
    image = dimmed_grey(visible)
    image[disagreement_mask(labels, reference)] = DISAGREEMENT_COLOUR
    return image


def small_regions(mask: np.ndarray, largest_area: int = SMALL_REGION_PIXELS,
                  limit: int = 40) -> list[tuple[float, float, float]]:
    """``(x, y, radius)`` of rings around the differing regions too small to see in a tile.

    The tile marks the pixels exactly; a region of a few pixels shrinks to nothing at tile size,
    so the grid also circles the ``limit`` largest regions of at most ``largest_area`` pixels.
    """
    import cv2

    count, _, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    regions = [(int(stats[i, cv2.CC_STAT_AREA]), i) for i in range(1, count)
               if stats[i, cv2.CC_STAT_AREA] <= largest_area]
    regions.sort(reverse=True)
    return [(float(centroids[i][0]), float(centroids[i][1]), 10.0 + float(np.sqrt(area)))
            for area, i in regions[:limit]]


def infrared_display(infrared: np.ndarray) -> np.ndarray:
    """An infrared frame as 8-bit grey (16-bit frames stretched over their own range)."""
    image = np.asarray(infrared)
    if image.ndim == 3:
        image = image[..., 0]
    if image.dtype == np.uint8:
        return image
    low, high = float(image.min()), float(image.max())
    return np.rint((image - low) * (255.0 / (high - low or 1.0))).astype(np.uint8)


# --------------------------------------------------------------------------- which pairs a grid shows

def time_of_day(name: str) -> TimeOfDay | None:
    """MFNet's naming: a frame name ending in D was taken by day, in N at night; else unknown."""
    tail = name[-1:].upper()
    return "day" if tail == "D" else "night" if tail == "N" else None


def choose_rows(names: Sequence[str], disagreement: Sequence[float], count: int) -> list[int]:
    """Indices of the pairs a grid shows: the most-disagreeing first, with a day and a night pair.

    ``count`` pairs by disagreement (largest first, ties in order), except that a time of day
    present in the data but absent from them brings its most-disagreeing pair in place of the
    least-disagreeing chosen one; with ``count`` 1 and both times present, the grid has 2 rows.
    """
    order = sorted(range(len(names)), key=lambda i: (-disagreement[i], i))
    chosen = order[:max(count, 1)]
    for kind in ("day", "night"):
        kinds = [time_of_day(names[i]) for i in chosen]
        if kind in kinds:
            continue
        candidates = [i for i in order if time_of_day(names[i]) == kind]
        if not candidates:
            continue
        counts = {k: kinds.count(k) for k in kinds}
        # Replace the least-disagreeing pair whose time of day is not its only representative.
        replaceable = [j for j in range(len(chosen) - 1, 0, -1) if counts[kinds[j]] > 1]
        if replaceable:
            chosen[replaceable[0]] = candidates[0]
        else:
            chosen.append(candidates[0])
    return sorted(chosen, key=lambda i: (-disagreement[i], i))


# --------------------------------------------------------------------------- image grids

@dataclass(frozen=True)
class GridRow:
    pair: Pair
    outputs: PairOutputs
    reference: PairOutputs | None
    disagreement: float


def _legend(figure: Any, names: Sequence[str], palette: Sequence[Sequence[int]], with_disagreement: bool) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=np.asarray(colour) / 255, edgecolor="black", label=name)
               for name, colour in zip(names[1:], palette[1:])]
    handles.insert(0, Patch(facecolor=(DIM * 0.5,) * 3, edgecolor="black", label=f"{names[0]} (image shows through)"))
    if with_disagreement:
        handles.append(Patch(facecolor=np.asarray(DISAGREEMENT_COLOUR) / 255, edgecolor="black",
                             label="class differs from the reference"))
        handles.append(Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markersize=10,
                              markeredgecolor=np.asarray(DISAGREEMENT_COLOUR) / 255,
                              label=f"ring: a differing region of ≤ {SMALL_REGION_PIXELS} px"))
    figure.legend(handles=handles, loc="upper center", ncol=(len(handles) + 1) // 2, fontsize=11, frameon=False,
                  bbox_to_anchor=(0.5, 0.0))


def draw_grid(title: str, rows: Sequence[GridRow], class_names: Sequence[str], path: Path) -> Path:
    """Rows of pairs; columns: visible, infrared, fused, ground truth, reference, this mode, disagreement.

    In the disagreement tile, regions too small to see are also circled (:func:`small_regions`).
    """
    from matplotlib.patches import Circle

    palette = report_palette(len(class_names))
    comparing = rows[0].reference is not None
    labelled = all(r.pair.label is not None for r in rows)
    columns = ["visible", "infrared", "fused (this mode)"] + (["ground truth"] if labelled else [])
    columns += ["reference prediction", "this mode's prediction", "differs from the reference"] if comparing \
        else ["prediction"]
    plt = _pyplot()
    width, height = TILE_INCHES
    figure, axes = plt.subplots(len(rows), len(columns), squeeze=False,
                                figsize=(width * len(columns), height * len(rows) + 0.6))
    for r, row in enumerate(rows):
        pair, out = row.pair, row.outputs
        tiles: list[np.ndarray] = [pair.visible, infrared_display(pair.infrared), fused_to_uint8(out.fused)]
        if labelled:
            tiles.append(class_overlay(pair.visible, pair.label, palette))
        if row.reference is not None:
            tiles += [class_overlay(pair.visible, row.reference.labels, palette),
                      class_overlay(pair.visible, out.labels, palette),
                      disagreement_overlay(pair.visible, out.labels, row.reference.labels)]
        else:
            tiles.append(class_overlay(pair.visible, out.labels, palette))
        for c, image in enumerate(tiles):
            ax = axes[r][c]
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=11)
        if row.reference is not None:
            mask = disagreement_mask(out.labels, row.reference.labels)
            for x, y, radius in small_regions(mask):
                axes[r][len(tiles) - 1].add_patch(Circle((x, y), radius, fill=False, linewidth=0.8,
                                                         edgecolor=np.asarray(DISAGREEMENT_COLOUR) / 255))
        when = time_of_day(pair.name)
        caption = pair.name + (f" · {when}" if when else "")
        if row.reference is not None:
            caption += f"\n{100 * row.disagreement:.2f}% ({int(mask.sum())} px) differ"
        axes[r][0].set_ylabel(caption, fontsize=10)
    figure.suptitle(title, fontsize=13)
    figure.tight_layout()
    _legend(figure, class_names, palette, comparing)   # below the tiles; the tight bounding box takes it in
    return _save(figure, path)


def grid_rows(pairs: Sequence[Pair], outputs: Sequence[PairOutputs], reference: Sequence[PairOutputs] | None,
              count: int) -> list[GridRow]:
    """The chosen pairs of one mode (see :func:`choose_rows`) with their outputs and disagreement."""
    n = min(len(pairs), len(outputs), len(reference) if reference is not None else len(outputs))
    fractions = [float(np.mean(disagreement_mask(outputs[i].labels, reference[i].labels))) if reference is not None
                 else 0.0 for i in range(n)]
    # A PairFolder knows its names without reading the images; only the chosen pairs are read.
    names = list(pairs.names)[:n] if isinstance(pairs, PairFolder) else [pairs[i].name for i in range(n)]
    return [GridRow(pairs[i], outputs[i], reference[i] if reference is not None else None, fractions[i])
            for i in choose_rows(names, fractions, count)]


def mode_grids(pairs: Sequence[Pair], outputs: Mapping[str, Sequence[PairOutputs]], reference: str | None,
               class_names: Sequence[str], out: Path, count: int = 3,
               titles: Mapping[str, str] | None = None) -> dict[str, tuple[Path | None, str]]:
    """``grid_<mode>.png`` for each mode compared with the reference's outputs ``outputs[reference]``.

    ``pairs`` and each mode's outputs are in the same order (all the scored pairs, so the worst
    can be found; a lazy :class:`~mrfs_edge.io.pairs.PairFolder` reads only the chosen ones).
    The reference gets a grid of its own only when it is the only mode. Returns, per plot name,
    its file or None and why not.
    """
    titles = titles or {}
    ref_outputs = outputs.get(reference) if reference is not None else None
    others = [m for m in outputs if m != reference]
    drawn: dict[str, tuple[Path | None, str]] = {}
    for mode in others or list(outputs):
        compared = ref_outputs if mode != reference else None
        name = f"grid_{mode}"
        if not pairs or not outputs[mode]:
            drawn[name] = (None, "no outputs kept for this mode")
            continue
        rows = grid_rows(pairs, outputs[mode], compared, count)
        label = titles.get(mode, mode)
        title = (f"{label}: where it disagrees with {titles.get(reference, reference)} "
                 f"(pairs: most disagreeing first, with a day and a night pair)") if compared is not None \
            else f"{label} (the reference; no other mode to compare with)" if mode == reference \
            else f"{label} (no reference outputs in this run to compare with)"
        drawn[name] = (draw_grid(title, rows, class_names, out / f"{name}.png"), "")
    return drawn


# --------------------------------------------------------------------------- accuracy plots

@dataclass(frozen=True)
class AccuracyAxis:
    """What the latency plot puts on its vertical axis, and the span that keeps drops to scale."""

    label: str
    values: dict[str, float]          # mode -> plotted value
    limits: tuple[float, float]
    baseline: float | None            # the reference's value on this axis (drawn as a line)
    note: str                         # what the baseline is, in words


def symmetric_limits(values: Sequence[float], minimum: float) -> tuple[float, float]:
    """``(−s, s)`` with ``s`` at least ``minimum`` and a quarter beyond the largest magnitude."""
    span = max([minimum] + [1.25 * abs(v) for v in values])
    return -span, span


def accuracy_axis(rows: Sequence[Mapping[str, Any]], labelled: bool) -> AccuracyAxis | None:
    """The change in mIoU from the reference (points), else disagreement %, else plain mIoU from 0."""
    acc = {r["mode"]: r["accuracy"] or {} for r in rows}
    ref = next((r for r in rows if r.get("reference")), None)
    ref_miou = (ref["accuracy"] or {}).get("miou") if ref else None
    drops = {m: -100 * a["miou_drop"] for m, a in acc.items() if a.get("miou_drop") is not None}
    if labelled and drops:
        note = f"reference mIoU {100 * ref_miou:.2f}%" if ref_miou is not None else "the reference"
        return AccuracyAxis("mIoU change from the reference, points", drops,
                            symmetric_limits(list(drops.values()), MIN_MIOU_SPAN), 0.0, note)
    if labelled:
        mious = {m: 100 * a["miou"] for m, a in acc.items() if a.get("miou") is not None}
        if mious:
            return AccuracyAxis("mIoU % (no reference: absolute)", mious, (0.0, max(100.0, *mious.values())),
                                None, "")
        return None
    disagreement = {m: 100 * (1 - a["agreement"]) for m, a in acc.items() if a.get("agreement") is not None}
    if not disagreement:
        return None
    top = max([MIN_DISAGREEMENT_SPAN] + [1.25 * v for v in disagreement.values()])
    return AccuracyAxis("pixels whose class differs from the reference, %", disagreement, (0.0, top), 0.0,
                        "the reference")


def _signed(value: float) -> str:
    """``+0.22`` / ``-0.22``, and ``0.00`` rather than ``-0.00`` for a change that rounds to nothing."""
    text = f"{value:+.2f}"
    return "0.00" if float(text) == 0 else text


def latency_vs_accuracy(rows: Sequence[Mapping[str, Any]], path: Path, labelled: bool) -> Path | None:
    """p50 model-only latency (log scale) against the accuracy change from the reference (see :func:`accuracy_axis`)."""
    axis = accuracy_axis(rows, labelled)
    if axis is None:
        return None
    points = [(r, first_latency(r), axis.values.get(r["mode"])) for r in rows]
    points = [(r, lat, value) for r, lat, value in points if lat is not None and value is not None]
    if not points:
        return None
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(8, 5))
    if axis.baseline is not None:
        ax.axhline(axis.baseline, color="grey", linewidth=1, linestyle="--", label=f"0 = {axis.note}")
    for i, (row, lat, value) in enumerate(points):
        marker = "s" if row["emulated"] else "o"
        ax.scatter(lat["p50_ms"], value, s=60, marker=marker, label=f"{row['label']} ({row['device']})", zorder=3)
        miou = (row["accuracy"] or {}).get("miou")
        text = row["mode"] + (f" {100 * miou:.2f}%" if miou is not None and axis.baseline is not None and labelled
                              else "") + ("" if axis.baseline is None else f" ({_signed(value)})")
        # Alternate above/below: modes with equal accuracy sit on one line and their labels would overlap.
        ax.annotate(text, (lat["p50_ms"], value), textcoords="offset points", xytext=(6, 6 if i % 2 == 0 else -13),
                    fontsize=8)
    ax.set_xscale("log")
    ax.set_ylim(*axis.limits)
    ax.set_xlabel(f"p50 model-only latency, ms (batch {points[0][1]['batch']}, log scale)")
    ax.set_ylabel(axis.label)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("Latency vs accuracy change per mode")
    return _save(figure, path)


def per_class_iou(rows: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """IoU per class and mode (top) and each mode's change from the reference in points (bottom)."""
    scored = [r for r in rows if (r["accuracy"] or {}).get("per_class_iou")]
    if not scored:
        return None
    classes = list(scored[0]["accuracy"]["per_class_iou"])
    compared = [r for r in scored if not r.get("reference") and r["accuracy"].get("per_class_iou_delta")]
    plt = _pyplot()
    panels = 2 if compared else 1
    figure, axes = plt.subplots(panels, 1, figsize=(max(9, 1.2 * len(classes)), 4.2 * panels), squeeze=False)
    x = np.arange(len(classes))
    top = axes[0][0]
    width = 0.8 / len(scored)
    for i, row in enumerate(scored):
        values = [row["accuracy"]["per_class_iou"][c] for c in classes]
        top.bar(x + i * width - 0.4 + width / 2, [100 * v if v is not None else np.nan for v in values], width,
                label=row["label"])
    top.set_xticks(x, classes, rotation=30, ha="right")
    top.set_ylabel("IoU %")
    top.set_ylim(0, 100)
    top.grid(True, axis="y", alpha=0.3)
    top.legend(fontsize=7)
    top.set_title("Per-class IoU per mode")
    if compared:
        bottom = axes[1][0]
        width = 0.8 / len(compared)
        deltas_all: list[float] = []
        colours = {r["mode"]: f"C{i}" for i, r in enumerate(scored)}
        for i, row in enumerate(compared):
            delta = row["accuracy"]["per_class_iou_delta"]
            values = [100 * delta[c] if delta.get(c) is not None else np.nan for c in classes]
            deltas_all += [v for v in values if not np.isnan(v)]
            xs = x + i * width - 0.4 + width / 2
            bottom.bar(xs, values, width, label=row["label"], color=colours[row["mode"]])
            for xv, v in zip(xs, values):
                if not np.isnan(v) and abs(v) >= 0.25:
                    bottom.annotate(_signed(v), (xv, v), textcoords="offset points", xytext=(0, 3 if v > 0 else -10),
                                    ha="center", fontsize=7)
        bottom.axhline(0, color="black", linewidth=0.8)
        bottom.set_ylim(*symmetric_limits(deltas_all, MIN_MIOU_SPAN))
        bottom.set_xticks(x, classes, rotation=30, ha="right")
        bottom.set_ylabel("IoU change from the reference, points")
        bottom.grid(True, axis="y", alpha=0.3)
        bottom.legend(fontsize=7)
        bottom.set_title("Per-class IoU change from the reference (negative: worse)")
    figure.tight_layout()
    return _save(figure, path)
