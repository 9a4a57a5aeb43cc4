"""The lean, torch-free runtime: URI sources → thermal AGC → registration → model → sinks.

``python runtime/run.py --model m.onnx --visible csi://0 --infrared v4l2:///dev/video1`` runs it
from the command line; :class:`Pipeline` is the same loop for programs. Nothing here imports
torch or :mod:`mrfs_edge.model`, so a Jetson needs only numpy, OpenCV, ONNX Runtime or TensorRT.
"""
from .pipeline import Pipeline, PipelineOptions, fit_to_model, restore_outputs
from .registration import Registration, RegistrationError, estimate_registration, load_registration, save_registration
from .sinks import DisplaySink, ImageFolderSink, Rendered, Sink, SinkError, VideoFileSink, open_sink, open_sinks
from .thermal import ThermalAGC
from .visualize import colorize, composite, fused_to_rgb, overlay

__all__ = ["Pipeline", "PipelineOptions", "fit_to_model", "restore_outputs",
           "Registration", "RegistrationError", "estimate_registration", "load_registration", "save_registration",
           "DisplaySink", "ImageFolderSink", "Rendered", "Sink", "SinkError", "VideoFileSink", "open_sink", "open_sinks",
           "ThermalAGC", "colorize", "composite", "fused_to_rgb", "overlay"]
