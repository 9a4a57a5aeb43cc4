"""TensorRT engines: build from ONNX (with a sidecar), check where they may run.

Importing this package never imports TensorRT or CUDA libraries; they load inside the
functions that need them, so machines without a GPU can still read sidecars.
"""
from mrfs_edge.engine.builder import EngineBuildConfig, build_engine

__all__ = ["EngineBuildConfig", "build_engine"]
