"""Pixels to model inputs and back: one model I/O adapter, the synchronous frame processor, thermal
AGC, IR→visible registration, and the colour maps and composites a person looks at.

Torch-free and backend-free: a runner comes in as anything with ``contract`` and ``infer(feed)``
(:class:`ModelRunner`), so the runtime on a Jetson, the benchmark, evaluation, calibration and the
export's parity check share this code.
"""
from mrfs_edge.processing.adapter import ModelAdapter, ModelRunner
from mrfs_edge.processing.frame import FrameProcessor, FrameResult, PairSizeError, PreparedFrame
from mrfs_edge.processing.postprocess import FrameOutput, argmax_classes
from mrfs_edge.processing.preprocess import FrameFit, Padding, fit_to_model, fused_to_uint8, padding_for
from mrfs_edge.processing.registration import (Registration, RegistrationError, estimate_registration,
                                               load_registration, save_registration)
from mrfs_edge.processing.thermal import ThermalAGC
from mrfs_edge.processing.visualize import colorize, composite, fused_to_rgb, overlay

__all__ = ["ModelAdapter", "ModelRunner", "FrameProcessor", "FrameResult", "PairSizeError", "PreparedFrame",
           "FrameOutput", "argmax_classes", "FrameFit", "Padding", "fit_to_model", "fused_to_uint8", "padding_for",
           "Registration", "RegistrationError", "estimate_registration", "load_registration", "save_registration",
           "ThermalAGC", "colorize", "composite", "fused_to_rgb", "overlay"]
