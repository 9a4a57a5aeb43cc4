"""Class names and colour palettes of the datasets MRFS is trained on (torch-free)."""
from __future__ import annotations

MFNET_CLASSES = ("unlabeled", "car", "person", "bike", "curve", "car_stop", "guardrail", "color_cone", "bump")
FMB_CLASSES = ("background", "Road", "Sidewalk", "Building", "Lamp", "Sign", "Vegetation", "Sky", "Person",
               "Car", "Truck", "Bus", "Motorcycle", "Bicycle", "Pole")
PST900_CLASSES = ("Background", "Hand-Drill", "BackPack", "Fire-Extinguisher", "Survivor")

# MSRS visualize.py palette for MFNet's classes (RGB).
MFNET_PALETTE = ((0, 0, 0), (64, 0, 128), (64, 64, 0), (0, 128, 192), (0, 0, 192), (128, 128, 0),
                 (64, 64, 128), (192, 128, 128), (192, 64, 0))


def class_names_for(num_classes: int) -> tuple[str, ...]:
    """The dataset's class names when the count identifies it, else ``class0..``."""
    for names in (MFNET_CLASSES, FMB_CLASSES, PST900_CLASSES):
        if len(names) == num_classes:
            return names
    return tuple(f"class{i}" for i in range(num_classes))


def palette_for(num_classes: int) -> list[tuple[int, int, int]]:
    """MFNet's palette for 9 classes; otherwise a deterministic, well-spread colour per class."""
    if num_classes == len(MFNET_PALETTE):
        return list(MFNET_PALETTE)
    colours = [(0, 0, 0)]
    for i in range(1, num_classes):
        # Bit-interleaved colours (PASCAL VOC style): distinct and reproducible.
        r = g = b = 0
        c = i
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours.append((r, g, b))
    return colours
