"""One deploy workflow: checkpoint → FP32 ONNX → FP16 / Q/DQ graph → TensorRT engine, each step cached by key.

See :mod:`.steps` for the steps and :mod:`.keys` for what a key covers and where it is stored.
Torch-free at import (a Jetson builds engines from prepared graphs through this package).
"""
from __future__ import annotations

from mrfs_edge.deploy.keys import CacheKey, reuse_or_build, why_rebuild
from mrfs_edge.deploy.steps import EngineBuild, Fp16Graph, Fp32Onnx, QdqGraph, QdqResult

__all__ = ["CacheKey", "EngineBuild", "Fp16Graph", "Fp32Onnx", "QdqGraph", "QdqResult", "reuse_or_build",
           "why_rebuild"]
