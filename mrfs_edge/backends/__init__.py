"""Backends behind one :class:`Runner` interface: ONNX Runtime, TensorRT and (reference) PyTorch."""
from .base import Runner

__all__ = ["Runner"]
