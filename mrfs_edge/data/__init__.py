"""Paired infrared/visible data: folder readers, preprocessing and (runtime) frame sources."""
from .images import read_infrared, read_label, read_visible, write_image
from .pairs import LAYOUTS, Pair, PairFolder, read_split
from .preprocess import (FrameFit, Padding, fit_to_input, fit_to_model, fused_to_uint8, pad_chw, padding_for,
                         to_network_inputs)

__all__ = ["LAYOUTS", "Pair", "PairFolder", "Padding", "read_split", "read_visible", "read_infrared",
           "read_label", "write_image", "to_network_inputs", "pad_chw", "padding_for", "fused_to_uint8",
           "fit_to_input", "fit_to_model", "FrameFit"]
