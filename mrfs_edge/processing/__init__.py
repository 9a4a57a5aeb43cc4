"""Pixels to model inputs and back: padding and normalisation, thermal AGC, IR→visible registration,
and the colour maps and composites a person looks at.

Torch-free: the runtime on a Jetson, the benchmark and calibration share this code.
"""
from mrfs_edge.processing.preprocess import (
                                             FrameFit,
                                             Padding,
                                             fit_to_input,
                                             fit_to_model,
                                             fused_to_uint8,
                                             pad_chw,
                                             padding_for,
                                             to_network_inputs,
)
from mrfs_edge.processing.registration import (
                                             Registration,
                                             RegistrationError,
                                             estimate_registration,
                                             load_registration,
                                             save_registration,
)
from mrfs_edge.processing.thermal import ThermalAGC
from mrfs_edge.processing.visualize import colorize, composite, fused_to_rgb, overlay

__all__ = ["FrameFit", "Padding", "fit_to_input", "fit_to_model", "fused_to_uint8", "pad_chw", "padding_for",
           "to_network_inputs", "Registration", "RegistrationError", "estimate_registration", "load_registration",
           "save_registration", "ThermalAGC", "colorize", "composite", "fused_to_rgb", "overlay"]
