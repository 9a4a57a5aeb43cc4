"""Frames in and results out: image files, paired datasets, camera and video sources, sinks.

Torch-free and model-free: this layer knows pixels and files, not networks.
"""
from mrfs_edge.io.images import read_infrared, read_label, read_visible, write_image
from mrfs_edge.io.pairs import LAYOUTS, Pair, PairFolder, read_split

__all__ = ["LAYOUTS", "Pair", "PairFolder", "read_split", "read_visible", "read_infrared", "read_label",
           "write_image"]
