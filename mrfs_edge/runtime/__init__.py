"""The lean, torch-free runtime: URI sources → thermal AGC → registration → model → sinks.

``python runtime/run.py --model m.onnx --visible csi://0 --infrared v4l2:///dev/video1`` runs it
from the command line; :class:`Pipeline` is the same loop for programs. Nothing here imports
torch or :mod:`mrfs_edge.model`, so a Jetson needs only numpy, OpenCV, ONNX Runtime or TensorRT.
"""
from mrfs_edge.runtime.pipeline import Pipeline, PipelineOptions

__all__ = ["Pipeline", "PipelineOptions"]
